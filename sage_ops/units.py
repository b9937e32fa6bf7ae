"""Numbers with units, one rule for every place a user types one (the CLI's options, batch files,
the Python client, the TUI's form) and for how they are shown. Standard library only: the CLI's
common commands import it. (Shown: plaintext.size.)

Durations: `90`, `90s`, `15m`, `1h`, `2d`, `1w` (a bare number is seconds). Memory: `512MiB`,
`8GB`, `1G`, `1.5GiB`; a bare number is MiB, as Slurm's `--mem` (whose M is 1024² bytes).
"""

from __future__ import annotations

import math
import re

MIB = 2**20
MAX_MEMORY = 2**60  # bytes: an exabyte is no one's job; beyond, a typo (or an overflow)

_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SECONDS_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*", re.IGNORECASE)

_UNITS = {
    "": MIB, "B": 1,
    "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3, "T": 1000**4, "TB": 1000**4,
    "KI": 1024, "KIB": 1024, "MI": 1024**2, "MIB": 1024**2, "GI": 1024**3, "GIB": 1024**3,
    "TI": 1024**4, "TIB": 1024**4,
}
_MEM_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_duration(text: str, zero: bool = False) -> float:
    """'90s', '15m', '1h', '2d', '1w' or plain seconds -> seconds (`zero`: 0 is allowed too).
    A ValueError of one line; the CLI makes a usage error of it."""
    match = _SECONDS_RE.fullmatch(str(text))
    if not match or (float(match.group(1)) <= 0 and not (zero and float(match.group(1)) == 0)):
        least = "a number of seconds" if zero else "a positive number of seconds"
        raise ValueError(f"bad duration {text!r}: use {least} or one like 90s, 15m, 1h, 2d, 1w")
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


def parse_memory(value: str | int | float) -> int:
    """A size -> bytes. Text: '8GB', '512MiB', '1.5G', or a bare number of MiB ('512', as Slurm's
    --mem). A JSON number is already bytes: it is the API's (and the stored spec's) own form."""
    if isinstance(value, bool):
        raise ValueError("memory must be a size such as 512MiB or 8GB")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("memory must not be negative")
        return _bytes(value)
    match = _MEM_RE.match(str(value))
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"bad memory size {value!r}: use MiB (a bare number, as Slurm's --mem) or a number "
                         "with B, KB, MB, GB, KiB, MiB, GiB")
    return _bytes(float(match.group(1)) * _UNITS[unit])


def _bytes(value: float) -> int:
    if value > MAX_MEMORY or (isinstance(value, float) and not math.isfinite(value)):  # int: no float overflow
        raise ValueError(f"memory must be at most {MAX_MEMORY} bytes")
    return int(value)

