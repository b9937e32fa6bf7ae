"""HTTP routes of shipped working directories (sage_ops/workdir.py packs them): a client asks
whether the daemon has a package (`GET /v1/packages/SHA`: its size, or 404) and uploads only what
it lacks (`PUT`, the tar.gz as the body). The daemon checks the hash and the size and stores it once
in its blob store (storage.url), under `packages/TENANT/SHA.tar.gz` (the caller's tenant: a
tenant sees and uses only its own), where every daemon of the database finds it. The bytes are
never served back: a job gets them on its node (backend/ray_backend.py).

`refuse_missing` is the submit's check: a spec that names a package the store lacks is refused
(422), in one line, before it is queued; one it has is marked used (retention keeps it)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Path, Request

from ...errors import Invalid, NotFound, TooLarge
from ...schemas import JobSpec
from ...workdir import MAX_PACKAGE_BYTES, package_key
from ..access.auth import Principal
from ..storage.package_use import mark_used

if TYPE_CHECKING:
    from ..storage.blobs import BlobStore

SHA = Path(pattern=r"^[0-9a-f]{64}$")


async def refuse_missing(blobs: BlobStore | None, specs: Sequence[JobSpec], batch: bool) -> None:
    """Invalid if a spec names a package its tenant does not have (each package asked once)."""
    wanted: dict[tuple[str, str | None], int] = {}
    for i, spec in enumerate(specs):
        if spec.package is not None:
            wanted.setdefault((spec.package.sha256, spec.tenant), i)
    for (sha, tenant), i in wanted.items():
        if blobs is not None and await asyncio.to_thread(blobs.exists, package_key(sha, tenant)):
            await asyncio.to_thread(mark_used, blobs, sha, tenant)  # retention keeps what is used
        else:
            where = f"jobs[{i}] ({specs[i].display_name()}): " if batch else ""
            raise Invalid(f"{where}package {sha[:12]} is not on the daemon: upload it first "
                          f"(PUT /v1/packages/{sha}; sage-ops and the Python client do)")


def package_routes(blobs: BlobStore, caller: Callable[[Request], Principal]) -> APIRouter:
    router = APIRouter()
    who_dep = Depends(caller)

    @router.get("/v1/packages/{sha256}")
    async def get_package(sha256: str = SHA, who: Principal = who_dep) -> dict[str, Any]:
        if not await asyncio.to_thread(blobs.exists, package_key(sha256, who.tenant)):
            raise NotFound(f"no such package: {sha256}")
        return {"sha256": sha256}

    @router.put("/v1/packages/{sha256}", status_code=201)
    async def put_package(request: Request, sha256: str = SHA, who: Principal = who_dep) -> dict[str, Any]:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_PACKAGE_BYTES:
                raise TooLarge(f"package over {MAX_PACKAGE_BYTES} bytes")
        body = bytes(data)
        if hashlib.sha256(body).hexdigest() != sha256:
            raise Invalid("package: the body's sha256 is not the one in the path")
        key = package_key(sha256, who.tenant)
        if not await asyncio.to_thread(blobs.exists, key):  # content-addressed: the same bytes, stored once
            await asyncio.to_thread(blobs.put, key, body)
        return {"sha256": sha256, "size": len(body)}

    return router
