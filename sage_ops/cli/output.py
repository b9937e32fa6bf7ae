"""`-o json|yaml|wide|name|table` of every read command: one option, one printer.

Machine formats print the API's own schemas (the pydantic models), times as ISO-8601 UTC, on
stdout only; tables are for people (relative ages, colour on a terminal unless NO_COLOR)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import click
from pydantic import BaseModel

FORMATS = ("table", "wide", "json", "yaml", "name")
MACHINE = ("json", "yaml", "name")


def _plain(obj: Any) -> Any:
    """JSON-ready data of a model, a list of models or plain data: times in ISO-8601 UTC, enums as
    their values (the same field names and values as the API's JSON)."""
    if isinstance(obj, BaseModel):
        return _plain(obj.model_dump(mode="python"))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(o) for o in obj]
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
    data = _plain(obj)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False)
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    if fmt == "name":
        items = obj if isinstance(obj, (list, tuple)) else [obj]
        return "\n".join(name_of(i) for i in items)
    raise ValueError(f"not a machine format: {fmt}")


@dataclass(frozen=True)
class Output:
    format: str = "table"

    @property
    def machine(self) -> bool:
        return self.format in MACHINE

    @property
    def wide(self) -> bool:
        return self.format == "wide"

    def emit(self, obj: Any, table: Callable[[], Any] | None = None) -> None:
        """Print `obj` in the machine format, or call `table` (the human form)."""
        if self.machine or table is None:
            text = dumps(obj, self.format if self.machine else "json")
            if text:
                click.echo(text)
        else:
            table()

    def line(self, obj: Any) -> None:
        """One object per line, for streams (logs -f): JSON lines, or YAML documents."""
        if self.format == "yaml":
            click.echo("---\n" + dumps(obj, "yaml"))
        elif self.format == "name":
            click.echo(name_of(obj))
        else:
            click.echo(json.dumps(_plain(obj), ensure_ascii=False))


def output_option(quiet: bool = True, formats: Sequence[str] = FORMATS) -> Callable[[Any], Any]:
    """Add `-o/--output`, `--json` (= -o json) and, if `quiet`, `-q/--quiet` (= -o name: ids only);
    the command receives `out: Output`."""

    def decorate(f: Callable[..., Any]) -> Any:
        @functools.wraps(f)
        def wrapper(*args: Any, output: str | None = None, as_json: bool = False, quiet_ids: bool = False,
                    **kwargs: Any) -> Any:
            chosen = [c for c in (output, "json" if as_json else None, "name" if quiet_ids else None) if c]
            if len(set(chosen)) > 1:
                raise click.UsageError(f"choose one output format (got {', '.join(chosen)})")
            return f(*args, out=Output(chosen[0] if chosen else "table"), **kwargs)

        opts = [click.option("-o", "--output", type=click.Choice(list(formats)), metavar="FORMAT",
                             help=f"Output format: {', '.join(formats)} [default: table]."),
                click.option("--json", "as_json", is_flag=True, help="Same as -o json.")]
        if quiet:
            opts.append(click.option("-q", "--quiet", "quiet_ids", is_flag=True, help="Print only the ids."))
        for opt in reversed(opts):
            wrapper = opt(wrapper)
        return wrapper

    return decorate
