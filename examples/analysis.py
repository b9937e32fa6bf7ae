"""A small script job: its content is shipped to whichever node runs it."""

import argparse
import random

from sage_ops.job import set_result

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, default=3)
args = parser.parse_args()
values = [random.random() for _ in range(args.rows)]
for i, v in enumerate(values):
    print(f"row {i}: {v:.3f}")
set_result({"rows": args.rows, "mean": sum(values) / len(values)})
