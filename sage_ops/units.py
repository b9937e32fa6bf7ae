"""Numbers with units, one rule for every place a user types one (the CLI's options, batch files,
the Python client, the TUI's form) and for how they are shown. Standard library only: the CLI's
common commands import it. (Shown: plaintext.size.)

Durations: `90`, `90s`, `15m`, `1h`, `2d`, `1w` (a bare number is seconds). Memory: `512MiB`,
`8GB`, `1G`, `1.5GiB`; a bare number is MiB, as Slurm's `--mem` (whose M is 1024² bytes).
Moments (`--begin`), as Slurm's: `now+1h` or `+1h`, `14:30` (its next occurrence), `tomorrow
02:00`, `midnight`, `noon`, `2026-12-06T02:00` (local time unless it carries a zone).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

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


WARN_SECONDS = 60.0  # Slurm's --signal default: the warning comes 60 s before the end


def parse_signal(text: str) -> tuple[str, float]:
    """`USR1@60`, `SIGUSR1`, `TERM@5` (Slurm's --signal) -> ("USR1", seconds before the end). The
    name is one a job may be sent to warn it; KILL and STOP cannot be caught, so they warn nothing."""
    name, _, when = str(text).strip().partition("@")
    name = name.upper().removeprefix("SIG")
    if name not in WARN_SIGNALS:
        raise ValueError(f"bad signal {text!r}: use one of {', '.join(sorted(WARN_SIGNALS))}, e.g. USR1@60")
    seconds = parse_duration(when, zero=True) if when else WARN_SECONDS
    if seconds > 3600:
        raise ValueError(f"bad signal {text!r}: warn at most 1h (3600 s) ahead")
    return name, seconds


WARN_SIGNALS = frozenset({"USR1", "USR2", "TERM", "INT", "HUP", "QUIT", "ALRM", "CONT", "URG", "WINCH"})


def parse_duration(text: str, zero: bool = False) -> float:
    """'90s', '15m', '1h', '2d', '1w' or plain seconds -> seconds (`zero`: 0 is allowed too).
    A ValueError of one line; the CLI makes a usage error of it."""
    match = _SECONDS_RE.fullmatch(str(text))
    if not match or (float(match.group(1)) <= 0 and not (zero and float(match.group(1)) == 0)):
        least = "a number of seconds" if zero else "a positive number of seconds"
        raise ValueError(f"bad duration {text!r}: use {least} or one like 90s, 15m, 1h, 2d, 1w")
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


_CLOCK_RE = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_NAMED = {"midnight": (0, 0), "noon": (12, 0), "teatime": (16, 0)}


def parse_moment(text: str, now: datetime | None = None) -> float:
    """A moment as a user types it (see the module's docstring) -> epoch seconds. A time of day
    alone is its next occurrence. A ValueError of one line; the CLI makes a usage error of it."""
    now = (now or datetime.now()).astimezone()
    raw = " ".join(str(text).split()).lower()
    if raw == "now":
        return now.timestamp()
    if raw.startswith(("now+", "+")):
        return now.timestamp() + parse_duration(raw.split("+", 1)[1])
    day, clock = ("tomorrow", raw[8:].strip() or "00:00") if raw.startswith("tomorrow") else ("", raw)
    if clock in _NAMED or (m := _CLOCK_RE.fullmatch(clock)):
        h, mi, sec = (*_NAMED[clock], 0) if clock in _NAMED else (int(m.group(1)), int(m.group(2)),
                                                                   int(m.group(3) or 0))
        if h > 23 or mi > 59 or sec > 59:
            raise ValueError(f"bad time {text!r}: hours 0-23, minutes and seconds 0-59")
        at = now.replace(hour=h, minute=mi, second=sec, microsecond=0)
        if day == "tomorrow" or at <= now:
            at += timedelta(days=1)
        return at.timestamp()
    try:
        at = datetime.fromisoformat(raw.upper().replace("Z", "+00:00") if raw.endswith("z") else raw)
    except ValueError:
        raise ValueError(f"bad time {text!r}: use one like now+1h, 14:30, tomorrow 02:00, midnight or "
                         "2026-12-06T02:00") from None
    return (at if at.tzinfo else at.astimezone()).timestamp()


def moment_text(t: float) -> str:
    """An epoch moment as the daemon's reasons and audit lines show it: ISO-8601 UTC, to the second."""
    return f"{datetime.fromtimestamp(t, timezone.utc):%Y-%m-%dT%H:%M:%SZ}"


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

