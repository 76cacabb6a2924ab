"""The version of zoo: one definition, read by the package, the artifacts it writes and (kept equal by a test)
pyproject.toml."""

__version__ = "0.1.0"
