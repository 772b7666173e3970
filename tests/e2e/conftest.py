"""End-to-end fixtures: the whole stack as real processes on free loopback ports."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from cg_devstack import Stack, StackConfig
from cg_devstack.seed import Seeder
from support.stacks import shared_stack


@contextlib.contextmanager
def running_stack(var: Path, keys_db: str = "", ledger_db: str = "", env=None) -> Iterator[Stack]:
    stack = Stack(StackConfig(var_dir=var, keys_db=keys_db, ledger_db=ledger_db, env=env or {}))
    with stack:
        yield stack


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request) -> Stack:
    """The whole stack, shared by the modules that use this fixture (support.stacks.shared_stack):
    their tests make their own partners and keys. A module that needs a fresh one defines its own."""
    return shared_stack(request)


@pytest.fixture(scope="module")
def seeder(stack: Stack) -> Iterator[Seeder]:
    s = Seeder(stack.keys_addr, stack.ledger_addr)
    yield s
    s.close()
