"""What keeps a path from being read as a file, in words for the error messages that name it."""

from __future__ import annotations

from pathlib import Path


def file_problem(path: str | Path) -> str:
    """``""`` when ``path`` is a file (or a link to one), else why not: ``"does not exist"``, ``"is not a file"``, or
    ``"cannot be opened (REASON)"`` with the system's reason (a name too long, a directory that cannot be searched)."""
    path = Path(path)
    try:
        return "" if path.is_file() else "is not a file" if path.exists() else "does not exist"
    except OSError as error:  # Path.is_file answers False only for a missing file
        return f"cannot be opened ({error.strerror or error})"
