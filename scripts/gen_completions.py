"""Write completions/ from the click app: `python scripts/gen_completions.py [--check]`.

--check exits 1 naming the stale files (the test suite runs it), so the checked-in scripts
always match `sage-ops completion SHELL`."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sage_ops.cli.completion import FILES, script  # noqa: E402

OUT = ROOT / "completions"


def files() -> dict[str, str]:
    return {name: script(shell) for shell, name in FILES.items()}


def main() -> int:
    want = files()
    if "--check" in sys.argv[1:]:
        stale = [n for n, text in want.items() if not (OUT / n).is_file() or (OUT / n).read_text() != text]
        if stale:
            print(f"stale completions: {', '.join(stale)}; run: python scripts/gen_completions.py")
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for name, text in want.items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
