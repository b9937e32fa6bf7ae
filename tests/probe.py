"""A job that tries, as an attacker would, to reach files and processes it should not: used by the
tests of the OS boundary (run-as users, the single-user sandbox)."""

from __future__ import annotations

from typing import Any

from sage_ops.client import JobManagerClient

# Each NAME=PATH is read (a file: OPEN if a byte comes out), listed (a directory: OPEN if anything
# shows) or found (a socket); each NAME=kill:PID is signalled (signal 0: the kernel's permission
# check without harm).
# One line per try: `probe NAME OPEN|denied`.
PROBE = r"""
for t in "$@"; do
  name=${t%%=*}; what=${t#*=}
  case $what in
    kill:*) if kill -0 "${what#kill:}" 2>/dev/null; then r=OPEN; else r=denied; fi ;;
    *) if [ -S "$what" ]; then r=OPEN;
       elif [ -d "$what" ]; then [ -n "$(ls -A "$what" 2>/dev/null)" ] && r=OPEN || r=denied;
       elif [ "$(head -c 1 "$what" 2>/dev/null | wc -c)" -eq 1 ]; then r=OPEN; else r=denied; fi ;;
  esac
  echo "probe $name $r"
done
"""


def lines(client: JobManagerClient, job_id: str) -> list[str]:
    return [e.message for e in client.get_job_logs(job_id)]


def run_probe(client: JobManagerClient, targets: dict[str, str], **spec: Any) -> dict[str, str]:
    """What a job of `client` (`spec`: more of its spec) could reach of `targets`: NAME -> OPEN | denied."""
    view = client.submit_job({**spec, "command": ["sh", "-c", PROBE, "sh", *(f"{k}={v}" for k, v in targets.items())]})
    assert client.wait(view.id, timeout=120).status == "COMPLETED"
    found = {}
    for line in lines(client, view.id):
        if line.startswith("probe "):
            _, name, verdict = line.split()
            found[name] = verdict
    return found
