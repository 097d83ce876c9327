"""The benchmark suite (pytest-benchmark): `pytest bench --benchmark-only` on a GPU; see bench/cases.py."""
