"""The daemon gives back what a request of many jobs freed (allocator.GiveBack), once at a time."""

from __future__ import annotations

import asyncio
import threading

from sage_ops.server.allocator import BIG, GiveBack


async def test_a_big_request_gives_memory_back_and_a_small_one_does_not() -> None:
    calls: list[int] = []
    give_back = GiveBack(trim=calls.append)
    give_back.after(BIG - 1)
    assert calls == []
    give_back.after(BIG)
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
