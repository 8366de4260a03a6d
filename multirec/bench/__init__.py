"""Benchmarks behind `make bench`; each writes JSON under outputs/bench/."""
