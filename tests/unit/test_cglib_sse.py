"""cglib.sse: the one SSE framer and splitter (the proxy's relay and Anthropic adapter, the mock)."""

from __future__ import annotations

import pytest

from cglib import sse


def test_frame_writes_one_event():
    assert sse.frame('{"a": 1}') == b'data: {"a": 1}\n\n'
    assert sse.frame(b"x", event="ping") == b"event: ping\ndata: x\n\n"
    assert sse.frame("two\nlines") == b"data: two\ndata: lines\n\n"
    assert sse.DONE == b"data: [DONE]\n\n" and sse.end(b"data: x") == b"data: x\n\n"


@pytest.mark.parametrize("split", [1, 2, 3, 5, 1000])
def test_the_splitter_gives_whole_events_whatever_the_reads(split):
    stream = b"event: a\r\ndata: 1\r\n\r\n: keep-alive\n\ndata: 2\n\ndata: tail"
    splitter = sse.Splitter()
    events = [e for i in range(0, len(stream), split) for e in splitter.feed(stream[i : i + split])]
    assert events == [b"event: a\ndata: 1", b": keep-alive", b"data: 2"]
    assert splitter.rest() == b"data: tail" and splitter.rest() == b""


def test_data_and_name_of_an_event():
    assert sse.data(b"event: a\ndata: 1\ndata:2") == b"1\n2"
    assert sse.data(b": comment") is None
    assert (sse.name(b"event: message_stop\ndata: {}"), sse.name(b"data: {}")) == ("message_stop", "")
    for payload in (b'{"x": 1}', b"[DONE]", b"multi\nline"):
        assert sse.data(sse.frame(payload).removesuffix(b"\n\n")) == payload
