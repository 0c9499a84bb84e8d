"""Magnitude pruning internals; the public names are exported by ``tfprune``."""
