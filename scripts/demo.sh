#!/usr/bin/env bash
# Install sage-ops, start the daemon on its embedded defaults (SQLite + a local Ray head,
# Unix socket 0600) and run a small tour. The daemon keeps running afterwards; stop it with
# `sage-ops daemon stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --disable-pip-version-check -e .
set -x
sage-ops daemon start
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
sleep 1
sage-ops jobs
sage-ops stats
