"""The man pages in man/ are generated from the click app by scripts/gen_man.py: they must be current
(a CLI change without regenerating them fails here), cover every command, and render without warnings.
No daemon needed."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
MAN_DIR = ROOT / "man"
REGENERATE = "run: python scripts/gen_man.py"


def _load_generator() -> ModuleType:
    """scripts/ is not a package: load gen_man.py by path (registered first, as dataclasses need)."""
    spec = importlib.util.spec_from_file_location("gen_man", ROOT / "scripts" / "gen_man.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_man"] = module
    spec.loader.exec_module(module)
    return module


gen_man = _load_generator()
CHECKED_IN = sorted(p.name for p in MAN_DIR.glob("*.1"))


@pytest.fixture(scope="module")
def expected() -> dict[str, str]:
    return gen_man.pages()


@functools.cache
def _leaf_pages() -> frozenset[str]:
    paths = gen_man.command_paths()
    return frozenset("-".join(p) + ".1" for p in paths if not any(len(q) > len(p) and q[: len(p)] == p for q in paths))


# -- current and complete ----------------------------------------------------------------------
def test_man_pages_are_current(expected: dict[str, str]) -> None:
    stale, missing, extra = gen_man.diff(expected, MAN_DIR)
    problems = [f"{what}: {', '.join(names)}" for what, names in
                (("stale", stale), ("missing", missing), ("extra", extra)) if names]
    assert not problems, f"man/ is out of date ({'; '.join(problems)}); {REGENERATE}"
    assert sorted(expected) == CHECKED_IN, REGENERATE


def test_every_command_has_a_page() -> None:
    paths = gen_man.command_paths()
    assert ("sage-ops",) in paths and any(len(p) == 3 for p in paths), paths  # the walk reaches subgroups
    wanted = {"-".join(p) + ".1" for p in paths}
    have = set(CHECKED_IN)
    assert wanted <= have, f"no page for {sorted(wanted - have)}; {REGENERATE}"
    assert have <= wanted, f"pages of commands that no longer exist: {sorted(have - wanted)}; {REGENERATE}"


def test_check_mode_and_regeneration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check names what differs; a plain run fixes it, including removing pages of vanished commands."""
    assert gen_man.main(["--dir", str(tmp_path)]) == 0
    assert gen_man.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "sage-ops.1").write_text("stale\n")
    (tmp_path / "sage-ops-gone.1").write_text("old\n")
    (tmp_path / "sage-ops-submit.1").unlink()
    capsys.readouterr()
    assert gen_man.main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "stale: sage-ops.1" in err and "missing: sage-ops-submit.1" in err and "extra: sage-ops-gone.1" in err
    assert REGENERATE in err and len(err.strip().splitlines()) == 1
    assert gen_man.main(["--dir", str(tmp_path)]) == 0
    assert not (tmp_path / "sage-ops-gone.1").exists()
    assert gen_man.main(["--check", "--dir", str(tmp_path)]) == 0


# -- the generator itself, on a small app --------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--address", metavar="ADDR", help="Where.")
def _app() -> None:
    """Top: a test app."""


@_app.command("do-it")
@click.argument("thing")
@click.option("--count", type=int, default=3, show_default=True, help="How many.")
@click.option("--secret", hidden=True, help="Never shown.")
@click.option("--flag/--no-flag", default=False, help="A switch.")
def _do_it(thing: str, count: int, secret: str | None, flag: bool) -> None:
    """Do it to THING.

    .starts with a dot, and a back\\slash.

    \b
      app do-it --count 2 'x'
    .dotted raw line
    """


@_app.command("ghost", hidden=True)
def _ghost() -> None:
    """Hidden."""


def test_generator_walks_escapes_and_skips_hidden() -> None:
    out = gen_man.pages(_app, "9.9")
    assert sorted(out) == ["sage-ops-do-it.1", "sage-ops.1"]  # hidden command skipped
    page = out["sage-ops-do-it.1"]
    assert '.TH "SAGE\\-OPS\\-DO\\-IT" "1" "" "sage\\-ops 9.9"' in page
    assert "\\fB\\-\\-count\\fR \\fIINTEGER\\fR\nHow many.  [default: 3]" in page
    assert "\\fB\\-\\-flag\\fR / \\fB\\-\\-no\\-flag\\fR" in page
    assert "secret" not in page  # hidden option skipped
    assert "\\&.starts with a dot, and a back\\eslash." in page
    assert ".nf\n  app do\\-it \\-\\-count 2 \\(aqx\\(aq\n\\&.dotted raw line\n.fi" in page
    assert "\\fBsage\\-ops do\\-it\\fR [OPTIONS] THING" in page
    for line in page.splitlines():
        assert not line.startswith("'"), line
    assert "\\fBdo\\-it\\fR" in out["sage-ops.1"] and "ghost" not in out["sage-ops.1"]


# -- they render -----------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("name", CHECKED_IN)
def test_page_renders_without_groff_warnings(name: str) -> None:
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN_DIR / name)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", f"{name}: {proc.stderr}"


@pytest.mark.skipif(shutil.which("man") is None, reason="man (man-db) is not installed")
@pytest.mark.parametrize("name", CHECKED_IN)
def test_page_renders_with_man(name: str) -> None:
    env = {**os.environ, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    env.pop("MAN_KEEP_FORMATTING", None)
    proc = subprocess.run(["man", "-l", "--warnings=w", str(MAN_DIR / name)],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, f"{name}: man exited {proc.returncode}: {proc.stderr}"
    assert "warning" not in proc.stderr.lower(), f"{name}: {proc.stderr}"
    text = re.sub(r".\x08|\x1b\[[0-9;]*m", "", proc.stdout)  # overstrike / SGR, should a man-db keep them
    page = name.removesuffix(".1")
    assert page in text and "NAME" in text and "SYNOPSIS" in text, text[:500]
    if name in _leaf_pages():
        assert "OPTIONS" in text, text[:500]
