"""Thin experiment modules: `python -m experiments.NAME --out DIR [--quick]`."""
