"""Readers (and writers) of the benchmarks' official on-disk layouts."""
