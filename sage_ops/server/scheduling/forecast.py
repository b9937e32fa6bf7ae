"""When resources free up, from the running jobs' time limits (as Slurm's `squeue --start`): the
earliest a job could start, the reservation EASY backfill keeps for the job at the head of the
queue, and whether a job behind it may start now without delaying it. Pure functions of the
queue's state, so the rules are tested on plain values."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .capacity import PREFETCH, Need

EPS = 1e-9
Release = tuple[float, str, Need]  # (when, node, what it frees)


def fits(need: Need, free: Mapping[str, float]) -> bool:
    return all(free.get(k, 0.0) + EPS >= v for k, v in need.items())


def take(free: dict[str, float], need: Need, sign: float = 1.0) -> None:
    for k, v in need.items():
        free[k] = free.get(k, 0.0) - sign * v


@dataclass
class Cluster:
    """What each open node has free now, and when running jobs free more (their time limits)."""

    free: dict[str, dict[str, float]]
    releases: list[Release] = field(default_factory=list)  # sorted by time

    @classmethod
    def now(cls, totals: Iterable[tuple[str, Mapping[str, float]]], used: Mapping[str, Need],
            running: Iterable[tuple[str, float, Need]]) -> Cluster:
        """`running`: (node, expected end, need) of each job holding resources."""
        free = {}
        for node, total in totals:
            spent = used.get(node, {})
            free[node] = {k: v - spent.get(k, 0.0) for k, v in total.items()}
        releases = sorted(((end, node, need) for node, end, need in running if node in free and node != PREFETCH),
                          key=lambda r: (r[0], r[1]))
        return cls(free, releases)

    def earliest(self, need: Need, now: float) -> tuple[float, str | None]:
        """When and where `need` could start at the soonest, if nothing else started first:
        (inf, None) if no open node will ever hold it."""
        if (node := self.fitting(need)) is not None:
            return now, node
        free = {n: dict(f) for n, f in self.free.items()}
        for end, node, freed in self.releases:
            take(free[node], freed, -1.0)
            if fits(need, free[node]):
                return max(end, now), node
        return math.inf, None

    def fitting(self, need: Need, nodes: Iterable[str] | None = None) -> str | None:
        return next((n for n in (self.free if nodes is None else nodes) if fits(need, self.free[n])), None)

    def totals(self) -> dict[str, dict[str, float]]:
        """Each node's free resources once every running job has ended."""
        return {n: self.free_at(n, math.inf) for n in self.free}

    def free_at(self, node: str, at: float) -> dict[str, float]:
        """What `node` will have free at `at`, counting only the running jobs' ends."""
        free = dict(self.free[node])
        for end, n, freed in self.releases:
            if end > at:
                break
            if n == node:
                take(free, freed, -1.0)
        return free


@dataclass
class Reservation:
    """The head of the queue could not start: it is promised `node` at `at`. Another job may start
    now only if it cannot delay that (EASY backfill): it ends by `at` (its time limit), or it fits
    in what `node` will have beyond the head's need at `at` (`spare`), or it runs elsewhere."""

    job_id: str
    at: float
    node: str | None
    spare: dict[str, float]

    @classmethod
    def of(cls, job_id: str, need: Need, cluster: Cluster, now: float) -> Reservation:
        at, node = cluster.earliest(need, now)
        spare = {}
        if node is not None:
            spare = cluster.free_at(node, at)
            take(spare, need)
        return cls(job_id, at, node, spare)

    def admits(self, node: str, need: Need, ends: float) -> bool:
        """May a job ending by `ends` start on `node` now? (The caller charges it if so.)"""
        if node != self.node or ends <= self.at + EPS:
            return True
        if fits(need, self.spare):
            take(self.spare, need)
            return True
        return False


def starts(order: Iterable[tuple[str, Need, float]], cluster: Cluster, now: float,
           limit: int = 1000) -> dict[str, float]:
    """The estimated start of each job of `order` (id, need, time limit), in that order and none
    before the one ahead of it (no backfill counted, so an estimate is late rather than early):
    at most `limit` jobs; inf for a job no open node will hold."""
    free = {n: dict(f) for n, f in cluster.free.items()}
    tick = itertools.count()  # ties go by order, never by comparing dicts
    events = [(end, next(tick), node, need) for end, node, need in cluster.releases]
    heapq.heapify(events)
    out: dict[str, float] = {}
    t = now
    totals = cluster.totals()
    for i, (job_id, need, runtime) in enumerate(order):
        if i >= limit:
            break
        if not any(fits(need, total) for total in totals.values()):
            out[job_id] = math.inf
            continue
        while (node := next((n for n in free if fits(need, free[n])), None)) is None and events:
            end, _, n, freed = heapq.heappop(events)
            take(free[n], freed, -1.0)
            t = max(t, end)
        if node is None:  # only if the jobs ahead of it were started larger than their nodes
            out[job_id] = math.inf
            continue
        out[job_id] = t
        take(free[node], need)
        heapq.heappush(events, (t + runtime, next(tick), node, need))
    return out
