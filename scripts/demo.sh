#!/usr/bin/env bash
# Install sage-ops into a virtual environment of its own (.venv, made if missing: Debian's and
# Ubuntu's own Python refuse a pip install into the system interpreter), start the daemon on its
# embedded defaults (SQLite + a local Ray head, Unix socket 0600) and run a small tour. The daemon
# keeps running afterwards; the last lines say how to use it and how to stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SAGE_OPS_VENV:-$PWD/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV" || { echo "demo: cannot create $VENV (on Debian/Ubuntu: apt install python3-venv)" >&2; exit 1; }
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check .
# TAB completion for your login shell (bash-completion's, or fish's, user directory); the man pages
# came with the install, in $VENV/share/man, where `man` looks once $VENV/bin is on PATH
LOGIN_SHELL="${SHELL:-bash}"
case "${LOGIN_SHELL##*/}" in zsh|fish) COMPLETION_SHELL="${LOGIN_SHELL##*/}" ;; *) COMPLETION_SHELL=bash ;; esac
"$VENV/bin/sage-ops" completion "$COMPLETION_SHELL" --install || echo "demo: no TAB completion (see above); the demo goes on" >&2
export PATH="$VENV/bin:$PATH"
hash -r
set -x
sage-ops daemon status >/dev/null 2>&1 || sage-ops daemon start
sage-ops health
A=$(sage-ops submit -q --name analysis examples/analysis.py -- --rows 5)
sage-ops submit --wait --name hello -- python -c 'print("hello from a Ray worker")'
sage-ops wait "$A"
sage-ops logs "$A"
sage-ops result "$A"
B=$(sage-ops submit -q --name sleeper -- sh -c 'sleep 300 & sleep 300')
sage-ops cancel "$B"
sage-ops submit --name broken -- sh -c 'echo failing on purpose >&2; exit 3' || true
sage-ops submit --gpu 8 --name impossible -- true || true
# a small DAG: prep -> (train, lint) -> report, with a flaky step that succeeds on its 2nd attempt
P=$(sage-ops submit -q --name prep -- sh -c 'echo preparing; sleep 1')
T=$(sage-ops submit -q --name train --after "$P" --retries 2 --retry-delay 1 --retry-backoff 2 \
    -- sh -c 'echo "attempt $SAGE_OPS_ATTEMPT"; test "$SAGE_OPS_ATTEMPT" -ge 2')
L=$(sage-ops submit -q --name lint --after "$P" -- true)
R=$(sage-ops submit -q --name report --after "$T,$L" --priority 10 -- echo done)
sage-ops wait "$R"
sage-ops graph "$R"
sage-ops history "$T"
# a pipeline job: word count on Ray actors (map x2 -> chained filter/flatmap/map -> keyed reduce -> file)
W=$(python examples/wordcount.py | tail -n 1)
sage-ops graph "$W"
sleep 1
sage-ops jobs
sage-ops stats
{ set +x; } 2>/dev/null
cat <<EOF

The daemon is still running, with its Ray head. To use sage-ops from your shell:

    export PATH="$VENV/bin:\$PATH"      # or: source $VENV/bin/activate
    sage-ops jobs ; sage-ops tui
    sage-ops <TAB> ; man sage-ops          # in a new shell: completion and man pages are installed

To stop everything (the daemon, its Ray head and all of Ray's processes):

    $VENV/bin/sage-ops daemon stop --ray

To install sage-ops for everyday use instead: pipx install .   (or: uv tool install .)
EOF
