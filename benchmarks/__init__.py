"""The benchmark suite: `python -m benchmarks all` (see __main__.py)."""
