"""Shipped working directories on their way to the nodes: the daemon reads a package from its blob
store once, puts it in Ray's object store, and hands each attempt the reference; the runner fetches
it from whichever node holds it (attempt.py) and unpacks it (shipped.py). The last few references
are kept, so a batch of jobs with one working directory reads and sends it once.

The daemon owns the object (Ray 2.56 removed `ray.put(_owner=...)`): an attempt that has not
fetched it when its daemon stops fails, saying so, and its retry gets it from the next daemon."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ...workdir import package_key
from .protocol import AttemptOptions

if TYPE_CHECKING:
    from ..storage.blobs import BlobStore

KEPT = 16  # references held by the daemon (Ray frees an object once no one holds it)


class Packages:
    def __init__(self, blobs: BlobStore | None) -> None:
        self.blobs = blobs
        self.refs: OrderedDict[str, Any] = OrderedDict()

    async def options(self, sha256: str, tenant: str | None) -> AttemptOptions:
        """What the attempt's options carry of its package (its tenant's): the reference, or why
        there is none (the attempt then fails, saying so, and is retried by its policy)."""
        key = package_key(sha256, tenant)
        ref = self.refs.get(key)
        if ref is None:
            if self.blobs is None:
                return {"package_error": "this daemon has no storage for shipped working directories"}
            try:
                data = await asyncio.to_thread(self.blobs.get, key)
            except FileNotFoundError:
                return {"package_error": f"package {sha256[:12]} is gone from the daemon's storage (deleted?)"}
            except Exception as exc:  # noqa: BLE001 - a store's own errors (network, permissions)
                return {"package_error": f"package {sha256[:12]}: cannot read it: {str(exc).splitlines()[0][:200]}"}
            import ray

            try:
                ref = ray.put(data)
            except Exception as exc:  # noqa: BLE001 - the object store is full, or Ray is going away
                return {"package_error": f"package {sha256[:12]}: {type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0][:200]}"}
            self.refs[key] = ref
            while len(self.refs) > KEPT:
                self.refs.popitem(last=False)
        self.refs.move_to_end(key)
        return {"package": ref}
