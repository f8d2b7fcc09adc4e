"""Benchmarks for bluegreen's data plane (run ``python -m bench.proxy``; see bench/README.md)."""
