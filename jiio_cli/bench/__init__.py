"""Benchmarks that ``jiio bench`` runs: engine overhead and JIIO against the naive method."""
