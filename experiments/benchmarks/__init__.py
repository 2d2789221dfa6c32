"""Benchmark suites: each module has ``run(...) -> dict`` and ``format_table(dict) -> str``."""
