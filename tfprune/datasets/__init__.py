"""Data sets for the tutorials and benchmarks: ``mnist``, read from local files or downloaded."""

from tfprune.datasets import mnist

__all__ = ["mnist"]
