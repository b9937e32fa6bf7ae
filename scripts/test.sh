#!/usr/bin/env bash
# The whole test suite, from nothing: a fresh virtual environment on every run (pip's download
# cache may be reused), the project and its test extra installed there as a user would (a wheel,
# not the source tree), then the dependency check, lint, import contracts and pytest, all from that
# environment. A package installed by hand anywhere else on this machine cannot make it pass.
# Real parts only: a local Ray head, real daemons, real SQLite and PostgreSQL, a real sshd.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV="${SAGE_OPS_TEST_VENV:-$ROOT/.venv-test}"
PY="${PYTHON:-python3}"

# system services the tests drive (Debian packages), installed when missing
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v tmux >/dev/null || need+=(tmux)
command -v bwrap >/dev/null || need+=(bubblewrap)
[ -f /usr/share/bash-completion/bash_completion ] || need+=(bash-completion)
command -v man >/dev/null || need+=(man-db)
command -v chromium >/dev/null || need+=(chromium)  # the dashboard's browser tests (Playwright drives it)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null) \
      || echo "warning: could not install ${need[*]}; the tests that need them will be skipped" >&2
  else
    echo "warning: missing ${need[*]}; the tests that need them will be skipped" >&2
  fi
fi

# a clean interpreter: nothing from the caller's environment or user site may leak in
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYTHONSTARTUP
export PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q ".[test]"
export PATH="$VENV/bin:$PATH"
hash -r
echo "test environment: $VENV ($("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])'))"

deptry . >/dev/null 2>&1 || deptry .
ruff check sage_ops tests benchmarks
lint-imports --no-cache >/dev/null || lint-imports --no-cache
mypy --cache-dir=/dev/null
# `pytest`, not `python -m pytest`: the installed package is tested, not the source tree
pytest -q -p no:cacheprovider --durations=30 "$@"
