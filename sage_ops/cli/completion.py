"""Shell integration: `sage-ops completion bash|zsh|fish [--install]` (click's own completion
scripts; the same text is checked in under completions/, written by scripts/gen_completions.py)
and `sage-ops man [COMMAND] [--install]` (the pages of man/, written by scripts/gen_man.py).

`--install` puts them where the shell and `man` look without any setting: bash-completion's user
directory, fish's, and for man pages the `share/man` beside the `sage-ops` on PATH (man-db adds
`BIN/../share/man` for each BIN on PATH: a venv, ~/.local for pipx, /usr/local)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click
from click.shell_completion import get_completion_class

from . import cli

SHELLS = ("bash", "zsh", "fish")
PROG, VAR = "sage-ops", "_SAGE_OPS_COMPLETE"
FILES = {"bash": "sage-ops.bash", "zsh": "_sage-ops", "fish": "sage-ops.fish"}
BASH_COMPLETION = ("/usr/share/bash-completion/bash_completion", "/etc/bash_completion",
                   "/usr/local/share/bash-completion/bash_completion", "/opt/homebrew/etc/profile.d/bash_completion.sh")


def script(shell: str) -> str:
    """The completion script click generates for `shell` (it calls `sage-ops` back on each TAB)."""
    cls = get_completion_class(shell)
    assert cls is not None
    return cls(cli, {}, PROG, VAR).source().rstrip("\n") + "\n"


def _home(var: str, default: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / default)


def completion_file(shell: str) -> Path:
    """Where each shell's own loader finds a user's completion for `sage-ops`, unconfigured."""
    if shell == "bash":  # bash-completion loads it on the first TAB after `sage-ops`
        user_dir = os.environ.get("BASH_COMPLETION_USER_DIR")
        return (Path(user_dir) if user_dir else _home("XDG_DATA_HOME", ".local/share") / "bash-completion") \
            / "completions" / PROG
    if shell == "zsh":
        return _home("XDG_DATA_HOME", ".local/share") / "zsh" / "site-functions" / "_sage-ops"
    return _home("XDG_CONFIG_HOME", ".config") / "fish" / "completions" / "sage-ops.fish"


def _caveat(shell: str, path: Path) -> str | None:
    """What the user still has to do for `shell` to read `path`, if anything."""
    if shell == "bash" and not any(Path(p).is_file() for p in BASH_COMPLETION):
        return (f"bash loads it through the bash-completion package, which is not installed here: install it "
                f"(apt install bash-completion), or add to ~/.bashrc: source {path}")
    if shell == "zsh":
        return f"zsh reads it if its directory is on $fpath: add to ~/.zshrc, before compinit: " \
               f"fpath=({path.parent} $fpath)"
    return None


@cli.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.option("--install", is_flag=True, help="Write it where SHELL finds it by itself (printed) instead of to stdout.")
def completion(shell: str, install: bool) -> None:
    """Print (or --install) the shell completion script.

    \b
      sage-ops completion bash --install     # ~/.local/share/bash-completion/completions/sage-ops
      sage-ops completion zsh > "${fpath[1]}/_sage-ops"
      sage-ops completion fish --install     # ~/.config/fish/completions/sage-ops.fish
    Job ids, node names and tenants are completed from the daemon (running jobs for `logs`);
    `submit`'s script, and the files a command takes, by the shell.
    """
    if not install:
        click.echo(script(shell), nl=False)
        return
    path = completion_file(shell)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script(shell))
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None
    click.echo(f"installed {shell} completion: {path} (new shells use it)")
    if caveat := _caveat(shell, path):
        click.echo(f"note: {caveat}", err=True)


def man_pages() -> Path | None:
    """The directory holding this sage-ops's pages: a checkout's man/ (an editable install), or the
    install's share/man/man1."""
    for where in (Path(__file__).resolve().parents[2] / "man", Path(sys.prefix) / "share" / "man" / "man1"):
        if (where / f"{PROG}.1").is_file():
            return where
    return None


def man_target() -> Path:
    """share/man/man1 beside the `sage-ops` on PATH (what man-db searches for it), else ~/.local's."""
    exe = shutil.which(PROG)
    if exe is None:
        return _home("XDG_DATA_HOME", ".local/share") / "man" / "man1"
    return Path(exe).parent.parent / "share" / "man" / "man1"


@cli.command("man")
@click.argument("command", nargs=-1)
@click.option("--install", is_flag=True, help="Copy every page where `man` finds it (printed) instead of showing one.")
@click.option("--dir", "target", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="With --install: this man1 directory instead.")
def man_command(command: tuple[str, ...], install: bool, target: Path | None) -> None:
    """Show the man page of sage-ops or of COMMAND (`sage-ops man nodes add`), or --install them all."""
    source = man_pages()
    if source is None:
        raise click.ClickException("this sage-ops has no man pages (from a clone: python scripts/gen_man.py)")
    if install:
        _install_pages(source, target or man_target())
        return
    page = source / f"{'-'.join((PROG, *command))}.1"
    if not page.is_file():
        raise click.BadParameter(f"no page for {' '.join(command)!r}", param_hint="COMMAND")
    if shutil.which("man") is None:
        raise click.ClickException(f"`man` is not installed; the page is {page}")
    os.execvp("man", ["man", "-l", str(page)])


def _install_pages(source: Path, target: Path) -> None:
    """Copy the pages (and drop pages of commands that are gone), then say how `man` finds them."""
    pages = sorted(source.glob(f"{PROG}*.1"))
    if target.resolve() != source.resolve():
        try:
            target.mkdir(parents=True, exist_ok=True)
            for old in set(target.glob(f"{PROG}*.1")) - {target / p.name for p in pages}:
                old.unlink()
            for page in pages:
                shutil.copyfile(page, target / page.name)
        except OSError as exc:
            raise click.ClickException(f"cannot write to {target}: {exc.strerror}") from None
    click.echo(f"installed {len(pages)} man pages in {target}: man sage-ops ; man sage-ops-submit")
    if shutil.which(PROG) is None or target != man_target():
        click.echo(f"note: man looks there when {target.parents[2] / 'bin'} is on PATH; else: "
                   f"export MANPATH={target.parent}:", err=True)
