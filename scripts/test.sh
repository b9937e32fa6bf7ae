#!/usr/bin/env bash
# Install everything the test suite needs and run it: lint, import contracts, pytest.
# Real parts only: a local Ray head, real daemons, real SQLite and PostgreSQL, real sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
# PostgreSQL server binaries for the HA tests (initdb/pg_ctl run as the `postgres` user)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    || echo "warning: could not install PostgreSQL; its tests will be skipped" >&2
fi
# OpenSSH's sshd for the node-bootstrap tests (a real sshd on a loopback port)
if ! command -v sshd >/dev/null && ! [ -x /usr/sbin/sshd ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null) \
    || echo "warning: could not install openssh-server; the SSH tests will be skipped" >&2
fi
python -m pip install -q --disable-pip-version-check -e '.[test]'
python -m ruff check sage_ops tests benchmarks
lint-imports --no-cache >/dev/null || lint-imports --no-cache
python -m pytest -q -p no:cacheprovider "$@"
