"""Elastic node pools: machines made Ray nodes when jobs need them and let go when idle."""
