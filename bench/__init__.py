"""Benchmarks: each prints its figures, its targets and PASS or FAIL per target (`make bench`).

Run one inside the environment, e.g. `./dev python bench/demo_bench.py` (`./dev` puts the
repository on the path, so benches import the project as a package).
"""
