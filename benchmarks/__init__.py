"""Benchmarks for irn: run with ``python -m benchmarks [--quick] [names...]``."""
