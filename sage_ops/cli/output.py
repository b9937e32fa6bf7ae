"""`-o json|yaml|wide|name|table` of every read command: one option, one printer.

Machine formats print the API's own schemas (the pydantic models), times as ISO-8601 UTC, on
stdout only; tables are for people (relative ages, colour on a terminal unless NO_COLOR)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..formats import dumps, name_of, plain

FORMATS = ("table", "wide", "json", "yaml", "name")
MACHINE = ("json", "yaml", "name")


class Output:
    """The chosen format (a plain class: dataclasses costs the CLI's start-up a millisecond)."""

    def __init__(self, format: str = "table") -> None:
        self.format = format

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
            click.echo(json.dumps(plain(obj), ensure_ascii=False))


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
