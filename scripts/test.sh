#!/usr/bin/env bash
# Install everything the test suite needs and run it: lint, import contracts, pytest.
# Real parts only: a local Ray head, real daemons, real SQLite and sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check -e '.[test]'
python -m ruff check sage_ops tests benchmarks
lint-imports --no-cache >/dev/null || lint-imports --no-cache
python -m pytest -q -p no:cacheprovider "$@"
