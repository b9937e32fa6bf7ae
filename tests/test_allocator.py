"""The daemon gives back what a request of many jobs or a long stream freed (allocator.GiveBack), once at a time;
its collector frees reference cycles soon (allocator.tune_gc)."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from sage_ops.server.allocator import BIG, BIG_STREAM, YOUNG, GiveBack, tune_gc


class Cycle:
    """An object that refers to itself: only a collection frees it."""

    __slots__ = ("__weakref__", "me")

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def daemon_gc() -> Iterator[None]:
    before = gc.get_threshold()
    tune_gc()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_the_daemon_frees_dropped_reference_cycles_within_its_young_threshold(daemon_gc: None) -> None:
    """100,000 cycles, each dropped at once: at no point do more than YOUNG of them wait for a
    collection (at the old threshold of 100,000, about 50,000 did)."""
    freed = [0]

    def count(_: object) -> None:
        freed[0] += 1

    refs, most = [], 0
    for made in range(1, 100_001):
        refs.append(weakref.ref(Cycle(), count))
        most = max(most, made - freed[0])
    assert most <= YOUNG


@pytest.mark.parametrize(("what", "big"), [("after", BIG), ("after_stream", BIG_STREAM)],
                         ids=["a request of many jobs", "a long stream"])
async def test_something_big_gives_memory_back_and_something_small_does_not(what: str, big: int) -> None:
    calls: list[int] = []
    give_back = GiveBack(trim=calls.append)
    getattr(give_back, what)(big - 1)
    assert calls == []
    getattr(give_back, what)(big)
    assert give_back._running is not None
    await give_back._running
    assert calls == [0]


async def test_a_second_big_request_while_memory_is_given_back_starts_no_second_trim() -> None:
    release = threading.Event()
    calls: list[int] = []

    def trim(pad: int) -> None:
        calls.append(pad)
        release.wait(10)

    give_back = GiveBack(trim=trim)
    give_back.after(BIG)
    first = give_back._running
    await asyncio.sleep(0.05)  # the thread is in trim
    give_back.after(BIG)
    assert give_back._running is first
    release.set()
    assert first is not None
    await first
    assert calls == [0]


def test_glibc_trim_is_found_here() -> None:
    """This machine is glibc's: the real malloc_trim is what runs."""
    assert GiveBack()._trim is not None
