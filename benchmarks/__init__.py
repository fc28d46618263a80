"""Benchmarks (``make bench``): JSON lines, each a ratio against a baseline of the same run."""
