"""Machine formats (-o json|yaml|name, --json) of models and of plain data alike, with no heavy
import: the CLI's common commands print the daemon's JSON as it came, other commands print
pydantic models; both come out the same (the API's field names, ISO-8601 UTC times)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from enum import Enum
from typing import Any


def plain(obj: Any) -> Any:
    """JSON-ready data of a model, a list of models or plain data: times in ISO-8601 UTC, enums as
    their values (the same field names and values as the API's JSON)."""
    dump = getattr(obj, "model_dump", None)
    if dump is not None and not isinstance(obj, type):  # a pydantic model (not imported: it is heavy)
        return plain(dump(mode="python"))
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(o) for o in obj]
    if isinstance(obj, datetime):
        moment = obj if obj.tzinfo else obj.astimezone()  # a naive time is local
        return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(obj, Enum):
        return obj.value
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)  # paths, UUIDs, decimals: as the API's JSON prints them


def name_of(item: Any) -> str:
    """What `-o name` prints of an object: its id, else its name."""
    for key in ("id", "name", "check"):
        value = item.get(key) if isinstance(item, dict) else getattr(item, key, None)
        if value is not None:
            return str(value)
    return str(item)


def dumps(obj: Any, fmt: str) -> str:
    """The text of `obj` in a machine format (no trailing newline)."""
    if fmt == "name":
        items = obj if isinstance(obj, (list, tuple)) else [obj]
        return "\n".join(name_of(i) for i in items)
    data = plain(obj)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    raise ValueError(f"not a machine format: {fmt}")


def print_json(obj: Any) -> None:
    sys.stdout.write(dumps(obj, "json") + "\n")
