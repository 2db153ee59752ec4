"""Evaluation: the benchmarks' metrics, protocol runners and reports."""
