"""The dispatcher actor's executors (executor.py): which one takes a job, how long a job may wait
behind another, and what happens when one dies or idles. Runs inside the dispatcher actor's event
loop; the actor (actor.py) keeps the attempts' events and hands this pool the jobs the daemon
marked for an executor.

The rules:
- A job charged to a node (the daemon counted it as running there now) goes to an idle executor
  there, else a new one while the node has fewer executors than such jobs (at most PER_NODE: a
  node running four 0.5-CPU jobs has four), else it queues behind the least busy one there. A
  prefetched job (charged to no node) queues behind the least busy executor anywhere.
- A job never waits behind another for more than STALL seconds: an executor whose running job
  has held its queue that long gives the queue back, and those jobs run as Ray tasks of their own
  (or on an idle executor). Jobs go to executors only while recent jobs ran short, so this is rare.
- An executor that dies (its node, an OOM kill, a cancel it could not honour) ends its attempts,
  saying so; one idle for IDLE seconds is stopped (a Ray worker holds ~100 MB).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, cast

import ray

from .executor import Executor
from .protocol import AttemptOutcome, SubmittedAttempt, key_hash, said

__all__ = ["IDLE", "PER_NODE", "STALL", "ExecutorPool"]

PER_NODE = 16  # executors at most on one node
IDLE = 60.0  # seconds an executor with nothing to run is kept
STALL = 0.5  # seconds a queued job may wait behind another before it is given back
TICK = 0.1  # how often the waits are checked


class Slot:
    """One executor: its node, the attempts it holds (queued or running) and when one of them
    last started or ended (a queue that has not moved since is stalled)."""

    def __init__(self, node: str, handle: Any) -> None:
        self.node, self.handle = node, handle
        self.jobs: dict[str, int] = {}  # job id -> attempt
        self.moved = time.monotonic()


class ExecutorPool:
    def __init__(self, end: Callable[[str, int, AttemptOutcome], None], run_task: Callable[[SubmittedAttempt], None],
                 attempt_of: Callable[[str], int | None]) -> None:
        """`end`: report an attempt over; `run_task`: run a job as a Ray task of its own;
        `attempt_of`: the attempt of a job in flight (None: none)."""
        self.end, self.run_task, self.attempt_of = end, run_task, attempt_of
        self.key = os.urandom(32)  # opens the executors' calls: only this actor has it
        self.groups: dict[str, list[Slot]] = {}  # by Ray node id
        self.of: dict[str, Slot] = {}  # job id -> its executor
        self.charged: dict[str, str] = {}  # job id -> the node the daemon charged it to, while an executor holds it
        self.cancelling: set[str] = set()
        self.ticking: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups.values())

    async def place(self, owner: tuple[str, str, str], jobs: list[SubmittedAttempt]) -> None:
        """Each job onto an executor (as the rules say), or as a task when none can take it."""
        takes: dict[Slot, list[SubmittedAttempt]] = {}
        for job in jobs:
            node = job.get("node", "")
            slot = self._slot(owner, node)
            if slot is None:
                self.run_task(job)
                continue
            self._hold(slot, job)
            if node:
                self.charged[job["id"]] = node
            takes.setdefault(slot, []).append(job)
        if self.ticking is None and takes:
            self.ticking = asyncio.get_running_loop().create_task(self._tick())
        await self._send(takes)

    async def _send(self, takes: dict[Slot, list[SubmittedAttempt]]) -> None:
        # a call that fails is the executor's death: _watch ends its attempts
        await asyncio.gather(*(slot.handle.take.remote(self.key, batch) for slot, batch in takes.items()),
                             return_exceptions=True)

    def _hold(self, slot: Slot, job: SubmittedAttempt) -> None:
        if not slot.jobs:
            slot.moved = time.monotonic()
        slot.jobs[job["id"]] = job["attempt"]
        self.of[job["id"]] = slot

    def _slot(self, owner: tuple[str, str, str], node: str) -> Slot | None:
        if not node:
            slots = [slot for group in self.groups.values() for slot in group]
            return min(slots, key=lambda slot: len(slot.jobs)) if slots else None
        group = self.groups.setdefault(node, [])
        idle = next((slot for slot in group if not slot.jobs), None)
        if idle is not None:
            return idle
        running = 1 + sum(1 for n in self.charged.values() if n == node)  # this job and those it joins
        if len(group) < min(PER_NODE, running):
            return self._start(owner, node)
        return min(group, key=lambda slot: len(slot.jobs)) if group else None

    def _start(self, owner: tuple[str, str, str], node: str) -> Slot:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        pinned = NodeAffinitySchedulingStrategy(node, soft=False)
        handle = cast(Any, Executor).options(scheduling_strategy=pinned).remote(key_hash(self.key), owner)
        slot = Slot(node, handle)
        self.groups[node].append(slot)
        asyncio.get_running_loop().create_task(self._watch(slot, handle.serve.remote()))
        return slot

    async def _watch(self, slot: Slot, serving: Any) -> None:
        """`serve` returns only when the executor died: the attempts it held end, saying so."""
        try:
            await serving
            why = "it stopped"
        except Exception as exc:  # noqa: BLE001 - ActorDiedError, node death
            why = said(exc, 200)
        self._forget(slot)
        for job_id, attempt in list(slot.jobs.items()):
            if self.attempt_of(job_id) == attempt:
                self.end(job_id, attempt, {"exit_code": None, "reason": f"its executor died: {why}"})

    def _forget(self, slot: Slot) -> None:
        group = self.groups.get(slot.node, [])
        if slot in group:
            group.remove(slot)

    def moved(self, job_id: str) -> None:
        """The attempt started or ended: its executor's queue moves."""
        slot = self.of.get(job_id)
        if slot is not None:
            slot.moved = time.monotonic()

    def ended(self, job_id: str) -> None:
        self.charged.pop(job_id, None)
        slot = self.of.pop(job_id, None)
        if slot is not None:
            slot.jobs.pop(job_id, None)
            slot.moved = time.monotonic()

    def queued(self) -> bool:
        """Whether jobs wait behind others on executors (the cluster is loaded)."""
        return len(self.of) > len(self)

    def holds(self, job_id: str) -> bool:
        return job_id in self.of

    async def cancel(self, job_id: str, attempt: int, grace: float, preempt: bool) -> None:
        """Ask its executor to stop the attempt; stop the executor if the attempt has not ended
        in time (its other attempts end too, saying their executor died)."""
        slot = self.of[job_id]
        self.cancelling.add(job_id)
        try:
            try:
                await slot.handle.cancel.remote(self.key, job_id, attempt, preempt)
            except Exception:  # noqa: BLE001 - the executor is dead: its watcher ends the attempt
                return
            deadline = time.monotonic() + grace + 5
            while self.attempt_of(job_id) == attempt and self.of.get(job_id) is slot and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if self.attempt_of(job_id) == attempt and self.of.get(job_id) is slot:
                self._forget(slot)
                ray.kill(slot.handle)
        finally:
            self.cancelling.discard(job_id)

    async def _tick(self) -> None:
        """Every TICK while executors live: stop the idle ones, unstall the stalled queues. Ends
        with the last executor (a dispatcher whose daemon is gone costs nothing), and `place`
        starts it again."""
        while any(self.groups.values()):
            await asyncio.sleep(TICK)
            now = time.monotonic()
            for group in list(self.groups.values()):
                for slot in list(group):
                    if not slot.jobs and now - slot.moved > IDLE:
                        group.remove(slot)
                        ray.kill(slot.handle)
                    elif len(slot.jobs) > 1 and now - slot.moved > STALL:
                        slot.moved = now
                        asyncio.get_running_loop().create_task(self._unstall(slot))
        self.ticking = None

    async def _unstall(self, slot: Slot) -> None:
        """Take back the jobs queued behind a job that runs long: each runs on an idle executor
        of its node, or as a task (a cancel that came meanwhile ends it)."""
        try:
            jobs: list[SubmittedAttempt] = await slot.handle.release.remote(self.key)
        except Exception:  # noqa: BLE001 - it died: its watcher ends them
            return
        takes: dict[Slot, list[SubmittedAttempt]] = {}
        for job in jobs:
            job_id, attempt = job["id"], job["attempt"]
            if self.of.get(job_id) is not slot or self.attempt_of(job_id) != attempt:
                continue
            self.of.pop(job_id)
            slot.jobs.pop(job_id, None)
            if job_id in self.cancelling:
                self.end(job_id, attempt, {"exit_code": None, "reason": "cancelled", "cancelled": True})
                continue
            idle = next((s for s in self.groups.get(slot.node, []) if not s.jobs and s is not slot), None)
            if idle is None:
                self.charged.pop(job_id, None)  # a task of its own: no executor to count it for
                self.run_task(job)
                continue
            self._hold(idle, job)
            takes.setdefault(idle, []).append(job)
        await self._send(takes)
