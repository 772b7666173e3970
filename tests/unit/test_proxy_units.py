"""The proxy's pure parts: bounds, usage parsing, the SSE relay, and the error shape."""

import asyncio

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cg_proxy import errors
from cg_proxy.auth import bearer_token
from cg_proxy.ledger_client import SettleBatcher
from cg_proxy.relay import StreamRelay
from cg_proxy.token_usage import estimate, max_output_tokens, usage_from
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2

OK, CLIENT_DISCONNECTED = events_pb2.USAGE_OUTCOME_OK, events_pb2.USAGE_OUTCOME_CLIENT_DISCONNECTED
PROVIDER, ESTIMATED = ledger_pb2.USAGE_SOURCE_PROVIDER, ledger_pb2.USAGE_SOURCE_ESTIMATED

ROUTE = keys_pb2.ModelRoute(id="m", max_output_tokens=1000)


def test_max_output_tokens_prefers_request_and_caps_at_model():
    assert max_output_tokens({}, ROUTE) == 1000
    assert max_output_tokens({"max_tokens": 10}, ROUTE) == 10
    assert max_output_tokens({"max_completion_tokens": 20, "max_tokens": 10}, ROUTE) == 20
    assert max_output_tokens({"max_tokens": 10**9}, ROUTE) == 1000


def test_a_model_without_a_known_cap_holds_what_the_request_asks_for():
    uncapped = keys_pb2.ModelRoute(id="m")
    assert max_output_tokens({"max_tokens": 50_000}, uncapped) == 50_000  # not cut to a default: under-held
    assert max_output_tokens({}, uncapped) == 4096


@pytest.mark.parametrize("bad", [0, -1, "5", 1.5, True])
def test_max_tokens_must_be_positive_int(bad):
    with pytest.raises(errors.APIError) as e:
        max_output_tokens({"max_tokens": bad}, ROUTE)
    assert e.value.status == 400 and e.value.param == "max_tokens"


def test_usage_parsing():
    u = usage_from({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    assert (u.input_tokens, u.output_tokens, u.source) == (3, 4, ledger_pb2.USAGE_SOURCE_PROVIDER)
    assert usage_from({"usage": None}) is None
    assert usage_from({"usage": {"prompt_tokens": -1, "completion_tokens": 4}}) is None
    assert usage_from(None) is None
    assert usage_from([{"usage": {"prompt_tokens": 3, "completion_tokens": 4}}]) is None  # a JSON array
    e = estimate(100, 9)
    assert (e.input_tokens, e.output_tokens, e.source) == (100, 3, ESTIMATED)


def test_bearer_token():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for bad in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(errors.APIError) as e:
            bearer_token(bad)
        assert e.value.status == 401


class FakeContent:
    def __init__(self, pieces):
        self.pieces = pieces

    async def iter_any(self):
        for p in self.pieces:
            await asyncio.sleep(0)
            yield p


class FakeResp:
    def __init__(self, pieces):
        self.content = FakeContent(pieces)
        self.released = False

    def release(self):
        self.released = True


SSE = (
    b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)


async def _run(relay, consume_all=True, take=None):
    pump = asyncio.create_task(relay.pump())
    got = []
    body = relay.body()
    async for item in body:
        got.append(item)
        if take is not None and len(got) >= take:
            await body.aclose()  # the client went away
            break
    await pump
    return got


def _events(writes: list[bytes]) -> list[bytes]:
    """The SSE events in what the client was sent (one write carries a read's events)."""
    return [e + b"\n\n" for e in b"".join(writes).split(b"\n\n") if e]


@pytest.mark.parametrize("split", [1, 7, 1000])
async def test_relay_finds_usage_and_hides_it_when_not_asked(split):
    done = []
    pieces = [SSE[i : i + split] for i in range(0, len(SSE), split)]
    relay = StreamRelay(FakeResp(pieces), False, 50, lambda u, s: done.append((u, s)))
    got = _events(await _run(relay))
    assert b"usage" not in b"".join(got) and got[-1] == b"data: [DONE]\n\n" and len(got) == 3
    ((usage, outcome),) = done
    assert (usage.input_tokens, usage.output_tokens, usage.source, outcome) == (5, 2, PROVIDER, OK)
    assert relay.resp.released


async def test_relay_passes_usage_when_asked():
    relay = StreamRelay(FakeResp([SSE]), True, 50, lambda u, s: None)
    got = _events(await _run(relay))
    assert any(b'"usage"' in g for g in got) and len(got) == 4


async def test_relay_keeps_reading_after_client_disconnect():
    done = []
    relay = StreamRelay(FakeResp([SSE[:60], SSE[60:120], SSE[120:]]), False, 50, lambda u, s: done.append((u, s)))
    await _run(relay, take=1)
    ((usage, outcome),) = done
    assert (usage.input_tokens, usage.output_tokens, outcome) == (5, 2, CLIENT_DISCONNECTED)


async def test_relay_estimates_without_usage():
    done = []
    sse = b'data: {"choices":[{"index":0,"delta":{"content":"abcdefgh"}}]}\n\ndata: [DONE]\n\n'
    relay = StreamRelay(FakeResp([sse]), False, 40, lambda u, s: done.append((u, s)))
    await _run(relay)
    ((usage, outcome),) = done
    assert (usage.input_tokens, usage.output_tokens, usage.source, outcome) == (40, 2, ESTIMATED, OK)


def test_error_shape_for_every_failure_kind():
    app = FastAPI()
    errors.install_handlers(app)

    @app.get("/quota")
    async def quota():
        raise errors.insufficient_quota()

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret detail")

    @app.post("/typed")
    async def typed(n: int):
        return {}

    client = TestClient(app, raise_server_exceptions=False)
    for path, method, status in (
        ("/quota", "get", 429),
        ("/boom", "get", 500),
        ("/nope", "get", 404),
        ("/quota", "post", 405),
        ("/typed?n=x", "post", 400),
    ):
        resp = getattr(client, method)(path)
        assert resp.status_code == status, path
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert "secret detail" not in resp.text and "Traceback" not in resp.text


@pytest.mark.parametrize(
    "headers, allowed",
    [
        ({"origin": "https://app.example.com"}, True),
        ({"origin": "https://APP.example.com:8443"}, True),
        ({"origin": "https://a.b.shop.example.org"}, True),
        ({"referer": "https://app.example.com/page?x=1"}, True),
        ({"origin": "https://shop.example.org"}, False),  # the wildcard is for subdomains only
        ({"origin": "https://evil-example.com"}, False),
        ({"origin": "https://app.example.com.evil.io"}, False),
        ({"origin": "null"}, False),
        ({}, False),
    ],
)
def test_allowed_domains(headers, allowed):
    from cg_proxy.policy import check_domain

    patterns = ["app.example.com", "*.shop.example.org"]
    if allowed:
        check_domain(patterns, headers)
    else:
        with pytest.raises(errors.APIError) as e:
            check_domain(patterns, headers)
        assert (e.value.status, e.value.code) == (403, "domain_not_allowed")
    check_domain([], headers)  # no domains listed: anything goes


class _SlowLedger:
    """SettleBatch that answers only when told to, recording each batch's request ids."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()

    async def SettleBatch(self, request, timeout):
        self.batches.append([s.request_id for s in request.settlements])
        await self.release.wait()
        return ledger_pb2.SettleBatchResponse(
            outcomes=[
                ledger_pb2.SettleOutcome(settled=ledger_pb2.SettleResponse(request_id=s.request_id))
                for s in request.settlements
            ]
        )


async def test_settlements_queued_while_a_batch_is_in_flight_are_sent_too():
    ledger = _SlowLedger()
    batcher = SettleBatcher(ledger, timeout_s=5, linger_s=0.001)
    first = asyncio.create_task(batcher.settle(ledger_pb2.SettleRequest(request_id="a")))
    await asyncio.sleep(0.02)
    assert ledger.batches == [["a"]]  # in flight
    second = asyncio.create_task(batcher.settle(ledger_pb2.SettleRequest(request_id="b")))
    await asyncio.sleep(0.02)
    ledger.release.set()
    done = await asyncio.wait_for(asyncio.gather(first, second), timeout=2)
    assert [d.request_id for d in done] == ["a", "b"] and ledger.batches == [["a"], ["b"]]
