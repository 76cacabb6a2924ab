"""One exception type for every user-facing error, with a helper that suggests valid names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooError(ValueError):
    """A bad input: the message says which file/argument and what to do."""


class ExportError(ZooError):
    """Export or verification failed, or an exported file cannot be run; nothing was left at the final path."""


def suggest(name: str, valid: Iterable[str], what: str = "valid names") -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"{hint}{what}: {', '.join(valid)}"
