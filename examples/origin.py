"""The SAGE JobManager document's examples, called as written there (only the import path and the
address differ), against a running daemon:

    SAGE_OPS_RAY__NUM_CPUS=4 sage-ops daemon start --tcp 127.0.0.1:19001   # the first job asks for 4
    python examples/origin.py                     # or: python examples/origin.py ADDRESS

TCP needs a token: the daemon's owner already has one (the client reads ~/.config/sage-ops/token);
for anyone else the owner runs `sage-ops token create --name notebook --role admin` (or `--tenant
NAME`) and hands it over: `export SAGE_OPS_TOKEN=...`.

It works in a fresh directory, where it writes the small inputs the examples name (data.csv,
my_analysis.py, input.csv, ...): jobs run in the directory they are submitted from, so that is
where result.json, output.json and steps.txt appear. The document's server example serves until
it is stopped, so it is not run here:

    from sage_ops import JobManagerServer
    JobManagerServer(host="0.0.0.0", port=19001, ray_address="auto").start()
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from sage_ops import FileSink, FileSource, JobManagerClient, MapFunction, RemoteEnvironment
from sage_ops.errors import SageOpsError

ANALYSIS = """\
import argparse, csv, json
from sage_ops.job import set_result

p = argparse.ArgumentParser()
p.add_argument("--input")
p.add_argument("--output")
a = p.parse_args()
rows = list(csv.reader(open(a.input)))
result = {"rows": len(rows), "total": sum(int(r[1]) for r in rows)}
print(f"read {len(rows)} rows from {a.input}")
print(f"total {result['total']}")
json.dump(result, open(a.output, "w"))
set_result(result)
"""
STEP = 'import os, sys\nopen("steps.txt", "a").write(os.path.basename(sys.argv[0]) + "\\n")\n'
INPUTS = {
    "data.csv": "a,1\nb,2\nc,3\n",
    "input.csv": "x,1\ny,2\nz,3\n",
    "my_analysis.py": ANALYSIS,
    "preprocess.py": STEP,
    "train_model.py": STEP,
    "evaluate.py": STEP,
    "heavy_computation.py": 'print("a lot of work")\n',
    # fails its first attempt, so the retry policy has something to do
    "fault_tolerant.py": 'import os, sys\nsys.exit(1 if os.environ["SAGE_OPS_ATTEMPT"] == "1" else 0)\n',
}


def write_inputs(where: Path) -> None:
    """The files the document's examples name, with small contents of our own."""
    for name, text in INPUTS.items():
        (where / name).write_text(text)


class ProcessFunction(MapFunction):
    """The document's ProcessFunction: one output record per input line."""

    def map(self, line: str) -> dict[str, object]:
        key, value = line.split(",")
        return {"key": key, "value": int(value) * 10}


# Each function is one section of the document, its code as written there; the lines marked
# "not in the document" only wait for what the document leaves running, or hand values back.
def submit_watch_and_get_the_result(address: str) -> str:
    client = JobManagerClient(address)

    job_id = client.submit_script(
        script_path="my_analysis.py",
        args=["--input", "data.csv", "--output", "result.json"],
        resources={"cpu": 4, "memory": "8GB"}
    )
    client.wait(job_id)  # not in the document, which asks at once: a job takes a moment

    status = client.get_job_status(job_id)
    print(f"Job {job_id} status: {status}")

    if status == "COMPLETED":
        result = client.get_job_result(job_id)
        print(f"Job result: {result}")
    return job_id


def a_pipeline_job(address: str) -> str:
    env = RemoteEnvironment(
        "data_pipeline",
        jobmanager_address=address
    )
    source_stream = env.source(FileSource, path="input.csv")
    processed_stream = source_stream.map(ProcessFunction)
    processed_stream.sink(FileSink, path="output.json")

    job_id = env.submit()
    env.wait_for_completion(job_id)
    return job_id


def dependencies(client: JobManagerClient) -> list[str]:
    job1 = client.submit_script("preprocess.py")
    job2 = client.submit_script("train_model.py", dependencies=[job1])
    job3 = client.submit_script("evaluate.py", dependencies=[job2])
    # the JobManager runs them in dependency order
    client.wait(job3)  # not in the document
    return [job1, job2, job3]


def resources(client: JobManagerClient) -> str:
    job_id = client.submit_script(
        "heavy_computation.py",
        resources={
            "cpu": 16,
            "memory": "32GB",
            "gpu": 2,
            "custom_resources": {"TPU": 1}
        }
    )
    return job_id


def retries(client: JobManagerClient) -> str:
    job_id = client.submit_script(
        "fault_tolerant.py",
        retry_policy={
            "max_retries": 3,
            "retry_delay": 60,  # seconds
            "retry_exponential_base": 2
        }
    )
    return job_id


def client_configuration(address: str) -> JobManagerClient:
    client_config = {
        "timeout": 30,
        "retry_attempts": 3,
        "connection_pool_size": 10,
        "heartbeat_interval": 60
    }
    client = JobManagerClient(address, config=client_config)
    return client


def health_and_statistics(client: JobManagerClient) -> None:
    health = client.health_check()
    print(f"JobManager health: {health}")

    stats = client.get_statistics()
    print(f"Active jobs: {stats['active_jobs']}")
    print(f"Total jobs: {stats['total_jobs']}")


def logs(client: JobManagerClient, job_id: str) -> None:
    logs = client.get_job_logs(job_id)
    for log_entry in logs:
        print(f"[{log_entry.timestamp}] {log_entry.message}")

    for log_entry in client.stream_job_logs(job_id):
        print(f"[{log_entry.timestamp}] {log_entry.message}")


def main(address: str) -> int:
    os.chdir(tempfile.mkdtemp(prefix="sage-ops-origin-"))
    write_inputs(Path.cwd())
    print(f"working in {Path.cwd()}")
    job_id = submit_watch_and_get_the_result(address)
    client = client_configuration(address)
    if client.get_job_status(job_id) != "COMPLETED":  # e.g. REJECTED: fewer than 4 CPUs in the cluster
        print(f"  {client.get_job(job_id).reason}")
    pipeline_id = a_pipeline_job(address)
    print(f"Pipeline {pipeline_id} wrote output.json: {Path('output.json').read_text().splitlines()}")
    dependencies(client)
    print(f"Ran in order: {Path('steps.txt').read_text().split()}")
    heavy_id = resources(client)  # more than a small cluster has: rejected at once, with the reason
    print(f"Job {heavy_id}: {client.get_job_status(heavy_id)} ({client.get_job(heavy_id).reason})")
    retry_id = retries(client)  # the first attempt fails; the second starts 60 s later
    print(f"Job {retry_id}: {client.get_job_status(retry_id)}")
    health_and_statistics(client)
    logs(client, job_id)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "localhost:19001"))
    except SageOpsError as exc:  # the daemon unreachable, no token, ...: one line
        sys.exit(f"origin.py: {exc.message}")
