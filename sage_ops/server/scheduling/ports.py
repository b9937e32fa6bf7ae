"""What the scheduling layer needs from the cluster, as a Protocol: the Ray backend provides it
in the daemon, tests/fake_backend.py in the fast tests of the rules. Nothing here imports Ray; the
messages are typed in backend/protocol.py (standard library only)."""

from __future__ import annotations

from typing import Protocol

from ..backend.protocol import AttemptItem, PollReply


class Backend(Protocol):
    connected: bool
    detail: str | None

    def node_totals(self, open_only: bool = False) -> list[tuple[str, dict[str, float]]]:
        """Each live node's resources (open: not draining)."""
        ...

    def refresh_nodes(self) -> None: ...

    def head_refuses(self) -> bool:
        """The head's address refuses connections: it is gone, not slow (a timeout says neither)."""
        ...

    async def submit(self, jobs: list[AttemptItem]) -> None:
        """Hand attempts to the dispatcher actor (one item per attempt)."""
        ...

    async def cancel(self, job_id: str, grace: float, preempt: bool = False) -> bool:
        """Stop an attempt within `grace` seconds; `preempt`: warned by its --signal first."""
        ...

    async def poll(self, epoch: str, ack: int, after: int, timeout: float) -> PollReply:
        """The actor's events after `after` (and what is in flight); `ack`: what it may forget."""
        ...
