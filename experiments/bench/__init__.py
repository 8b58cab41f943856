"""Benchmarks: each script prints ratios measured side by side in one run; BENCHMARKS.md has the figures.

Run one as ``.venv/bin/python -m experiments.bench.<name> --help``.
"""
