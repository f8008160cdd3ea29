"""The package version (a leaf module: the compiled-core loader reads it without importing
the package's API)."""

__version__ = "0.1.0"
