"""Housekeeping of ``/dev/shm`` for backends and applications: files a program created that no process maps.

Shared-memory files (named POSIX semaphores, the regions a server's model processes share with it) are mapped by
every process using them; a process killed without clean-up leaves its files behind. A program that knows the
names it created removes those that no live process maps any more.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: Where Linux keeps POSIX shared memory and named semaphores.
SHM = Path("/dev/shm")


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (of any user) in this PID namespace; False for pid ≤ 0."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def names(pattern: str, shm: Path = SHM) -> set[str]:
    """The names of the files in ``shm`` matching ``pattern`` (a glob); none where ``shm`` cannot be read."""
    try:
        return {path.name for path in shm.glob(pattern)}
    except OSError:
        return set()


def remove_unmapped(created: Iterable[str], shm: Path = SHM) -> list[str]:
    """Remove the files ``created`` (names in ``shm`` this program made) that no process maps; the names removed,
    sorted.  Processes whose memory map cannot be read (another user's, a sandbox's init) are passed over: they
    cannot have opened this program's files, which are private to its user."""
    left = {name for name in created if (shm / name).exists()}
    for maps in Path("/proc").glob("[0-9]*/maps"):
        if not left:
            break
        try:
            text = maps.read_text()
        except OSError:  # ended meanwhile, or not ours to read
            continue
        left = {name for name in left if f"{shm}/{name}" not in text}
    for name in left:
        (shm / name).unlink(missing_ok=True)
    return sorted(left)
