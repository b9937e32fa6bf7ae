"""Word count as a sage-ops pipeline job: `python examples/wordcount.py [--local]`.

Generates a small text, counts its words on Ray through the daemon (or in this process with
--local), checks the answer against a plain Python count and prints the most common words.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import tempfile
from pathlib import Path

from sage_ops import LocalEnvironment, RemoteEnvironment
from sage_ops.pipeline import FileSink, FileSource, MapFunction


class Tokenize(MapFunction):
    def map(self, line: str) -> list[str]:
        return line.lower().split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--local", action="store_true", help="run in this process instead of as a job")
    ap.add_argument("--lines", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sage-ops-wordcount-") as tmp:
        job_id = run(Path(tmp), args)
    print(job_id)


def run(work: Path, args: argparse.Namespace) -> str:
    """Count the words of a generated text in `work`; check the answer; return the job's id."""
    words = ["the", "a", "ray", "job", "queue", "actor", "batch", "stream", "shuffle", "key", "reduce", "sink",
             "source", "operator"]
    rnd = random.Random(7)
    text = work / "input.txt"
    text.write_text("".join(" ".join(rnd.choices(words, k=rnd.randint(1, 9))) + "\n" for _ in range(args.lines)))
    out = work / "counts.jsonl"

    env = LocalEnvironment("wordcount") if args.local else RemoteEnvironment("wordcount")
    (env.source(FileSource, path=str(text))
        .map(Tokenize, parallelism=2)
        .filter(lambda t: t)
        .flatmap(lambda t: t)
        .map(lambda w: (w, 1))
        .key_by(lambda kv: kv[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))  # a running count per word
        .sink(FileSink, path=str(out)))            # one JSON value per line
    job_id = env.submit()
    env.wait_for_completion(job_id)                # raises with the job's error if it failed

    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        word, n = json.loads(line)
        counts[word] = n                           # the last running value is the total
    plain = collections.Counter(w for line in text.read_text().splitlines() for w in line.split())
    assert counts == dict(plain), "the pipeline and a plain count disagree"
    top = ", ".join(f"{w} {n}" for w, n in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
    print(f"pipeline {job_id}: {sum(counts.values())} words, {len(counts)} distinct, same as a plain count; "
          f"top: {top}")
    return job_id


if __name__ == "__main__":
    main()
