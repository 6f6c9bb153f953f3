"""Benchmarks: the shared results schema, host runners and device drivers."""
