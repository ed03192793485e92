"""Throughput benchmark of scep-gateway: `python -m benchmarks.run` (or `make bench`).

See docs/performance.md for what it measures and the numbers of one run.
"""
