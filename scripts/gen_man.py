"""Generate the roff man pages in man/ from the click app, so the pages never drift from `--help`.

    python scripts/gen_man.py           # (re)write man/*.1, removing pages of commands that are gone
    python scripts/gen_man.py --check   # exit 1 if man/ is stale (what CI and tests/test_man.py run)

The click tree is walked generically (Group.list_commands / get_command), so new commands get a
page without touching this file. The output is deterministic (no date in .TH) so that a
staleness check is a plain comparison. Roff is written by hand: no new dependency.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
MAN_DIR = ROOT / "man"
PROG = "sage-ops"
SECTION = "1"
MANUAL = "sage-ops manual"
# .TH's date field: fixed (empty) on purpose; a per-run date would make every page stale every day.
DATE = ""

EXIT_STATUS = [
    ("0", "Success."),
    ("1", "A job or operation failed (e.g. a job that did not complete, a rejected submission, "
          "a degraded health check)."),
    ("2", "Usage error: bad options or arguments, or a request the daemon refused as invalid."),
    ("3", "The daemon could not be reached."),
    ("N", "submit --wait and wait: the job's own exit code (a job killed by signal S: 128+S), as srun and "
          "docker run pass theirs on; wait on several jobs: the first, in the order given, that did not complete."),
    ("124", "wait --timeout: the time ran out before the job ended (it runs on), as GNU timeout."),
    ("125", "submit --wait and wait: the job ended without an exit code of its own (rejected, could not be "
            "placed, its node lost)."),
    ("130", "Interrupted (Ctrl-C); a job being followed or waited for runs on."),
    ("143", "submit --wait and wait: the job was cancelled (128+SIGTERM, as docker run after docker stop)."),
]
ENVIRONMENT = [
    ("SAGE_OPS_ADDRESS", "Daemon address when --address is not given (unix:///path.sock, HOST:PORT or "
                         "tcp://HOST:PORT; comma-separated for failover)."),
    ("SAGE_OPS_TOKEN", "Bearer token when --token is not given."),
    ("SAGE_OPS_CA", "CA certificate (PEM) that signed the daemon's TLS certificate, when --ca is not given; "
                    "TCP then uses TLS."),
    ("SAGE_OPS_CONFIG", "YAML config file when --config is not given."),
    ("SAGE_OPS_<SECTION>__<KEY>", "Overrides one setting of the config file, e.g. SAGE_OPS_RAY__ADDRESS "
                                  "for ray.address (two underscores between section and key)."),
    ("NO_COLOR", "If set (to anything non-empty), output has no colour."),
]
FILES = [
    ("~/.config/sage-ops/config.yaml", "The config file, read if present ($XDG_CONFIG_HOME/sage-ops/config.yaml "
                                       "when XDG_CONFIG_HOME is set). --config and $SAGE_OPS_CONFIG name "
                                       "another one."),
]


def _load_cli() -> tuple[click.Command, str]:
    """Import the app from this checkout (not whatever an editable install points at)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from sage_ops import __version__
    from sage_ops.cli import cli

    return cli, __version__


# -- the click tree ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """One visible command: its path from the root, its click context and its visible children."""

    path: tuple[str, ...]
    command: click.Command
    ctx: click.Context
    children: tuple[str, ...]

    @property
    def page(self) -> str:
        return "-".join(self.path)

    @property
    def filename(self) -> str:
        return f"{self.page}.{SECTION}"

    @property
    def parent(self) -> tuple[str, ...] | None:
        return self.path[:-1] or None


def walk(command: click.Command, path: tuple[str, ...] = (PROG,),
         parent: click.Context | None = None) -> Iterator[Node]:
    """Depth-first over visible commands; contexts carry context_settings (e.g. -h/--help) like a real run."""
    ctx = click.Context(command, info_name=path[-1], parent=parent, **(command.context_settings or {}))
    subs: list[tuple[str, click.Command]] = []
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                subs.append((name, sub))
    yield Node(path, command, ctx, tuple(name for name, _ in subs))
    for name, sub in subs:
        yield from walk(sub, (*path, name), ctx)


# -- roff --------------------------------------------------------------------------------------
def esc(text: str) -> str:
    """Escape text for roff: backslash, hyphen (as minus, so options copy-paste), quotes, leading dot."""
    text = (text.replace("\\", "\\e").replace("-", "\\-")
            .replace("'", "\\(aq").replace("`", "\\(ga"))
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def ital(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def ref(page: str) -> str:
    return f"{bold(page)}({SECTION})"


def paragraphs(text: str) -> list[str]:
    """Help text as roff paragraphs: blank lines split them, prose is re-filled, and click's `\\b`
    (no-rewrap) paragraphs become .nf/.fi blocks with their lines and indentation kept."""
    text = inspect.cleandoc(text).partition("\f")[0]
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    out = []
    for block in blocks:
        if not block:
            continue
        if block[0].strip() == "\b":
            raw = block[1:]
            if raw:
                out.append(".nf\n" + esc("\n".join(raw)) + "\n.fi")
        else:
            out.append(esc(" ".join(line.strip() for line in block)))
    return out


def short_help(command: click.Command) -> str:
    return command.get_short_help_str(limit=300).strip()


def _metavar(param: click.Parameter, ctx: click.Context) -> str:
    try:
        return param.make_metavar(ctx)  # click >= 8.2
    except TypeError:
        return param.make_metavar()  # type: ignore[call-arg]  # click 8.1


def option_tag(opt: click.Option, ctx: click.Context) -> str:
    """`-q, --quiet`, `--limit INTEGER`, `--timestamps / --no-timestamps`: bold names, italic metavar.

    Names are sorted (short first): click builds the help option's names from a set, whose order
    changes from run to run with string hashing, and the output must be deterministic."""
    tag = ", ".join(bold(o) for o in _sorted_opts(opt.opts))
    if opt.secondary_opts:
        tag += " / " + ", ".join(bold(o) for o in _sorted_opts(opt.secondary_opts))
    if not opt.is_flag and not opt.count:
        tag += " " + ital(_metavar(opt, ctx))
    return tag


def _sorted_opts(opts: list[str]) -> list[str]:
    return sorted(opts, key=lambda o: (len(o) - len(o.lstrip(o[:1])), o))


def visible_options(node: Node) -> list[tuple[click.Option, str]]:
    """Options `--help` shows, with click's own help text (it adds [default: ...], ranges, [required])."""
    out = []
    for param in node.command.get_params(node.ctx):
        if not isinstance(param, click.Option) or param.hidden:
            continue
        record = param.get_help_record(node.ctx)
        if record is not None:
            out.append((param, record[1]))
    return out


def render(node: Node, nodes: dict[tuple[str, ...], Node], version: str) -> str:
    cmd, ctx = node.command, node.ctx
    name = " ".join(node.path)
    summary = short_help(cmd) or f"the {name} command"
    out = [
        '.\\" Generated by scripts/gen_man.py from the click app: do not edit; run python scripts/gen_man.py.',
        f'.TH "{esc(node.page.upper())}" "{SECTION}" "{DATE}" "{esc(PROG)} {esc(version)}" "{esc(MANUAL)}"',
        ".nh",
        ".ad l",
        ".SH NAME",
        f"{esc(node.page)} \\- {esc(summary)}",
        ".SH SYNOPSIS",
        bold(name) + " " + esc(" ".join(cmd.collect_usage_pieces(ctx))),
        ".SH DESCRIPTION",
    ]
    body = paragraphs(cmd.help) if cmd.help else [esc(f"The {name} command.")]
    if cmd.deprecated:
        body.insert(0, bold("Deprecated."))
    if cmd.epilog:
        body += paragraphs(cmd.epilog)
    out += _join_paras(body)

    if node.children:
        out.append(".SH COMMANDS")
        for child in node.children:
            sub = nodes[(*node.path, child)]
            out += [".TP", bold(child), esc(short_help(sub.command) or f"The {name} {child} command.")
                    + f" See {ref(sub.page)}."]

    options = visible_options(node)
    if options or node.parent:
        out.append(".SH OPTIONS")
    for opt, text in options:
        out += [".TP", option_tag(opt, ctx)]
        out += _join_paras(paragraphs(text)) if text.strip() else []
    if node.parent:
        root = nodes[node.path[:1]]
        globals_ = ", ".join(bold(o) for opt, _ in visible_options(root) if not opt.is_eager
                             for o in _sorted_opts(opt.opts) if o.startswith("--"))
        out += [".PP", f"The global options of {ref(root.page)} ({globals_}) go before the command name."]

    if not node.parent:
        out += _root_sections()

    out.append(".SH SEE ALSO")
    see = []
    if node.parent:
        parent = nodes[node.parent]
        see.append(parent.page)
        see += [nodes[(*parent.path, s)].page for s in parent.children if s != node.path[-1]]
    see += [nodes[(*node.path, c)].page for c in node.children]
    out.append(", ".join(ref(p) for p in see))
    return "\n".join(out) + "\n"


def _join_paras(paras: list[str]) -> list[str]:
    out: list[str] = []
    for i, para in enumerate(paras):
        if i:
            out.append(".PP")
        out.append(para)
    return out


def _root_sections() -> list[str]:
    out = [".SH EXIT STATUS"]
    for code, text in EXIT_STATUS:
        out += [".TP", bold(code), esc(text)]
    out.append(".SH ENVIRONMENT")
    for var, text in ENVIRONMENT:
        out += [".TP", bold(var), esc(text)]
    out.append(".SH FILES")
    for path, text in FILES:
        out += [".TP", ital(path), esc(text)]
    return out


# -- entry points ------------------------------------------------------------------------------
def command_paths(command: click.Command | None = None) -> list[tuple[str, ...]]:
    """Every visible command's path, e.g. ("sage-ops", "nodes", "add"); for the test's coverage check."""
    return [node.path for node in walk(command or _load_cli()[0])]


def pages(command: click.Command | None = None, version: str | None = None) -> dict[str, str]:
    """Filename -> roff text of every page, exactly as `python scripts/gen_man.py` writes them.

    Defaults to the sage-ops app; another click app can be given (the tests use a small one)."""
    if command is None:
        command, default_version = _load_cli()
        version = version or default_version
    nodes = {node.path: node for node in walk(command)}
    return {node.filename: render(node, nodes, version or "") for node in nodes.values()}


def diff(expected: dict[str, str], man_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """(stale, missing, extra) file names of man_dir compared with `expected`."""
    present = {p.name: p for p in man_dir.glob(f"*.{SECTION}")} if man_dir.is_dir() else {}
    stale = sorted(n for n in expected if n in present and present[n].read_text(encoding="utf-8") != expected[n])
    missing = sorted(n for n in expected if n not in present)
    extra = sorted(n for n in present if n not in expected)
    return stale, missing, extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if man/ is not what would be generated")
    parser.add_argument("--dir", type=Path, default=MAN_DIR, help="where the pages go (default: man/)")
    args = parser.parse_args(argv)
    man_dir: Path = args.dir
    expected = pages()
    stale, missing, extra = diff(expected, man_dir)
    if args.check:
        if stale or missing or extra:
            parts = [f"{what}: {', '.join(names)}" for what, names in
                     (("stale", stale), ("missing", missing), ("extra", extra)) if names]
            print(f"man pages out of date ({'; '.join(parts)}); run: python scripts/gen_man.py", file=sys.stderr)
            return 1
        print(f"man pages are current ({len(expected)} pages)")
        return 0
    man_dir.mkdir(parents=True, exist_ok=True)
    for name in extra:
        (man_dir / name).unlink()
    for name in (*stale, *missing):
        (man_dir / name).write_text(expected[name], encoding="utf-8")
    changed = len(stale) + len(missing) + len(extra)
    print(f"man/: {len(expected)} pages, {len(stale)} updated, {len(missing)} added, {len(extra)} removed"
          if changed else f"man/: {len(expected)} pages, all current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
