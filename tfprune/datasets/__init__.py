"""Data sets for the tutorials and benchmarks, read from local files or downloaded.

``mnist``: the four original idx files. ``imdb``: the Large Movie Review
Dataset, from its directory or its .tar.gz.
"""

from tfprune.datasets import imdb, mnist

__all__ = ["imdb", "mnist"]
