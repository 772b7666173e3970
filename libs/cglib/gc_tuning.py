"""Python's cyclic garbage collector, set for a long-running service once it has started.

Start-up builds a large heap that lives as long as the process (modules, protobuf
descriptors, pydantic and SQLAlchemy models, tokenizer tables). By default every
collection of the oldest generation walks all of it again, and a collection of the
youngest runs every 700 allocations. ``after_startup`` collects once, then freezes what
is left (``gc.freeze``: never examined again) and lets the young generation grow to
``GEN0_THRESHOLD`` objects before a collection: a request's garbage is still found, in
fewer, cheaper passes. Under the 50 ms upstream at c=32 this took the proxy's user CPU per
request from 0.77 to 0.68 ms (docs/benchmarks.md, "Figures behind design choices").
Reference counting, which frees almost everything, is untouched; only cycles wait a
little longer.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000
# collections of a younger generation between two of the next one (Python's default: 10)
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 20


def after_startup() -> None:
    """Called once the service is built and about to serve (idempotent)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
