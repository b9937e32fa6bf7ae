"""`sage-ops completion bash|zsh|fish`: click's own completion scripts. The same text is checked
in under completions/ (scripts/gen_completions.py writes it; a test fails when it is stale)."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from . import cli

SHELLS = ("bash", "zsh", "fish")
PROG, VAR = "sage-ops", "_SAGE_OPS_COMPLETE"
FILES = {"bash": "sage-ops.bash", "zsh": "_sage-ops", "fish": "sage-ops.fish"}


def script(shell: str) -> str:
    """The completion script click generates for `shell` (it calls `sage-ops` back on each TAB)."""
    cls = get_completion_class(shell)
    assert cls is not None
    return cls(cli, {}, PROG, VAR).source().rstrip("\n") + "\n"


@cli.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script.

    \b
      sage-ops completion bash > ~/.local/share/bash-completion/completions/sage-ops
      sage-ops completion zsh > "${fpath[1]}/_sage-ops"
      sage-ops completion fish > ~/.config/fish/completions/sage-ops.fish
    Job ids, node names and tenants are completed from the daemon (running jobs for `logs`).
    """
    click.echo(script(shell), nl=False)
