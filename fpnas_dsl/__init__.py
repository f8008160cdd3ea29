"""fpnas: a compiler and search engine for neural architecture search (FP-NAS)."""

__version__ = "0.1.0"
