"""`-o json|yaml|csv|wide|name|table` of every read command: one option, one printer.

Machine formats print the API's own schemas (the pydantic models), times as ISO-8601 UTC, on
stdout only; tables are for people (relative ages, colour on a terminal unless NO_COLOR). CSV is
one row per object under a header row: its scalar fields (nested ones are left out unless the
command flattens them), quoted by the csv module, times as in JSON, null as an empty cell."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..formats import dumps, name_of, plain

FORMATS = ("table", "wide", "json", "yaml", "csv", "name")
MACHINE = ("json", "yaml", "csv", "name")


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

    def emit(self, obj: Any, table: Callable[[], Any] | None = None,
             flat: Callable[[dict[str, Any]], dict[str, Any]] | None = None, header: Sequence[str] = ()) -> None:
        """Print `obj` in the machine format, or call `table` (the human form); `flat` makes a
        CSV row of one object (by default its scalar fields), `header` its first columns (the
        header of an empty list)."""
        if self.format == "csv":
            click.echo(csv_text(obj, flat, header), nl=False)
        elif self.machine or table is None:
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


def csv_text(obj: Any, flat: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
             header: Sequence[str] = ()) -> str:
    """`obj` (an object or a list of them) as CSV: a header row, then one row per object; the
    columns are `header`, then the rows' other keys in the order they first appear."""
    import csv  # only when asked for: every command imports this module

    data = plain(obj)
    rows = [flat(r) if flat else scalars(r) for r in (data if isinstance(data, list) else [data])]
    columns = list(dict.fromkeys([*header, *(k for r in rows for k in r)]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(r.get(c)) for c in columns] for r in rows)
    return buf.getvalue()


def scalars(row: Any) -> dict[str, Any]:
    """The fields of `row` that fit in a cell (nested objects and lists left out)."""
    if not isinstance(row, dict):
        return {"value": row}
    return {k: v for k, v in row.items() if not isinstance(v, (dict, list))}


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A cell a spreadsheet shows as text: job names and reasons are other users' text, and one
    starting like a formula (=HYPERLINK(...)) would run in whoever opens the export (OWASP's
    CSV-injection rule: a leading apostrophe)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


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


def list_command(group: click.Group, fetch: Callable[[Any], Sequence[Any]], show: Callable[[Sequence[Any]], None],
                 doc: str) -> click.Command:
    """`GROUP list` (-o table|json|yaml|name): what `fetch(ctx)` answers, shown by `show` as a
    table; `GROUP` alone runs it when the group is made with `invoke_without_command`."""
    from . import pass_ctx  # the package imports this module first

    @group.command("list", help=doc)
    @output_option(formats=("table", "json", "yaml", "name"))
    @pass_ctx
    def listing(ctx: Any, out: Output) -> None:
        views = fetch(ctx)
        out.emit(views, lambda: show(views))

    return listing
