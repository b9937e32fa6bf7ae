"""Which downstream instance gets a record: forward, round-robin, hash by key, broadcast.

Keys are hashed with a hash that is the same in every process. Python's own `hash()` of a string
changes from process to process (PYTHONHASHSEED), so two upstream instances would send one key
to different places, and the same pipeline would partition differently in LocalEnvironment.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from .shapes import Partitioning

Buffers = list[list[Any]]


def stable_hash(key: Any) -> int:
    """A non-negative hash of a key that every process computes alike."""
    if type(key) is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if type(key) is int:
        return key & 0xFFFFFFFFFFFF
    if isinstance(key, bytes):
        return zlib.crc32(key)
    if isinstance(key, tuple):
        h = 0x345678
        for part in key:
            h = (h * 1000003 ^ stable_hash(part)) & 0xFFFFFFFFFFFF
        return h
    if key is None:
        return 0  # hash(None) is its address before Python 3.12: different in every process
    if isinstance(key, (bool, float, int)):
        return hash(key) & 0xFFFFFFFFFFFF  # numbers hash alike in every process
    return zlib.crc32(repr(key).encode("utf-8", "surrogatepass"))


def spread(partitioning: Partitioning, key: Callable[[Any], Any] | None, batch: list[Any], buffers: Buffers,
           rotation: int) -> int:
    """Add a batch to the per-channel buffers; returns the round-robin position to go on from."""
    n = len(buffers)
    if n == 1:
        buffers[0].extend(batch)
        return rotation
    if partitioning is Partitioning.BROADCAST:
        for buf in buffers:
            buf.extend(batch)
    elif partitioning is Partitioning.HASH:
        assert key is not None
        h = stable_hash
        for x in batch:
            buffers[h(key(x)) % n].append(x)
    else:  # round-robin record by record, continuing where the last batch stopped
        for j in range(n):
            buffers[(rotation + j) % n].extend(batch[j::n])
        rotation = (rotation + len(batch)) % n
    return rotation
