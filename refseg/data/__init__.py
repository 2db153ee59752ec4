"""Datasets: on-disk formats of the benchmarks, and the SynthRef generator."""
