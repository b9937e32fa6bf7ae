"""The pools' actions in the daemon: the provisioner's own SSH bootstrap, drain and removal (what
`nodes add/drain/remove` do), seen through its node list, so a pool's node is an ordinary node
that `sage-ops nodes` shows and an operator may also drain."""

from __future__ import annotations

from typing import Any

from ...cluster import NodeAdd
from ...config import PoolConfig, PoolHost
from .policy import PoolNodeState

#: a node's state as `nodes` shows it -> as the pool's rules see it
STATES = {"JOINING": PoolNodeState.JOINING, "UP": PoolNodeState.UP, "DOWN": PoolNodeState.DOWN,
          "FAILED": PoolNodeState.FAILED, "DRAINING": PoolNodeState.DRAINING, "DRAINED": PoolNodeState.DRAINED}


class ProvisionedActions:
    def __init__(self, provisioner: Any) -> None:
        self.provisioner = provisioner
        self.seen: dict[str, tuple[PoolNodeState, int]] = {}

    async def refresh(self) -> None:
        self.seen = {v.name: (self._state(v.name, v.state), v.running_jobs) for v in await self.provisioner.nodes()
                     if v.managed and v.state in STATES}

    def _state(self, name: str, state: str) -> PoolNodeState:
        """DRAINING with no drain under way: the drain failed (its machine died before Ray noticed,
        say) and will go no further, so the node is as good as drained: removed, its host free."""
        op = self.provisioner.ops.get(name)
        if state == "DRAINING" and (op is None or op.done):
            return PoolNodeState.DRAINED
        return STATES[state]

    def observe(self, name: str) -> tuple[PoolNodeState, int] | None:
        return self.seen.get(name)

    async def add(self, name: str, host: str, pool: PoolConfig) -> None:
        await self.provisioner.add(join_request(name, PoolHost.parse(host), pool))

    async def drain(self, name: str) -> None:
        await self.provisioner.drain(name, False)

    async def stop(self, name: str) -> None:
        await self.provisioner.remove(name, True)  # drained (or its drain failed): nothing runs there


def join_request(name: str, host: PoolHost, pool: PoolConfig) -> NodeAdd:
    """What `nodes add` would be asked for the pool's host: its CPUs and GPUs as the pool declares
    them (else as the machine has), its other resources as custom ones. An unknown host key is
    refused, as a changed one is: a pool's hosts are known to the daemon's known_hosts."""
    res = dict(pool.resources)
    cpus, gpus = res.pop("CPU", None), res.pop("GPU", None)
    res.pop("memory", None)
    return NodeAdd.model_validate({
        "host": host.host, "user": host.user, "port": host.port, "name": name, "resources": res,
        "key_file": str(pool.key.expanduser()) if pool.key else None,
        "wheel_dir": str(pool.wheel_dir.expanduser()) if pool.wheel_dir else None,
        "num_cpus": int(cpus) if cpus is not None else None, "num_gpus": int(gpus) if gpus is not None else None})
