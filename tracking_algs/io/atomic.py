"""Files written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, content: bytes) -> None:
    """Write ``path`` whole or not at all: to a temporary name beside it (``NAME.tmp``), then renamed; the temporary
    file is removed when the write fails or is interrupted (a full disk, Ctrl-C), and ``path`` stays as it was."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_bytes(content)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
