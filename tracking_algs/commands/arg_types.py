"""Argument types of the ``trkx`` commands: each checks one value while the command line is parsed.

A bad value becomes argparse's one-line error ``trkx COMMAND: error: argument --OPTION: expected ...``
(exit status 2) before the command does any work.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from tracking_algs.job.dask_setup import scheduler_address


def _integer(text: str, minimum: int, words: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {words}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer ≥ 1 (a count: events, worker processes, instances)."""
    return _integer(text, 1, "an integer ≥ 1")


def non_negative_int(text: str) -> int:
    """An integer ≥ 0 (a seed, or a thread count where 0 means automatic)."""
    return _integer(text, 0, "an integer ≥ 0")


def _real(text: str, accept: Callable[[float], bool], words: str, in_range: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
    if not accept(value):  # NaN is accepted by none
        raise argparse.ArgumentTypeError(f"expected {in_range}, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number ≥ 0 (a mean pile-up)."""
    return _real(text, lambda value: 0 <= value < math.inf, "a number ≥ 0", "a finite number ≥ 0")


def positive_float(text: str) -> float:
    """A finite number > 0 (a time limit in seconds)."""
    return _real(text, lambda value: 0 < value < math.inf, "a number > 0", "a finite number > 0")


def unit_interval(text: str) -> float:
    """A number from 0 to 1 (a cut on a score, a p-value)."""
    return _real(text, lambda value: 0 <= value <= 1, "a number from 0 to 1", "a number from 0 to 1")


def dask_scheduler(text: str) -> str:
    """A Dask scheduler address, ``tcp://HOST:PORT``."""
    try:
        return scheduler_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _existing(what: str, is_kind: Callable[[Path], bool], kind: str) -> Callable[[str], Path]:
    """An argument type for the path of an existing ``kind`` (``is_kind`` tells it); ``what`` names it."""

    def check(text: str) -> Path:
        path = Path(text)
        if not path.exists():
            raise argparse.ArgumentTypeError(f"{what} {text!r} does not exist")
        if not is_kind(path):
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not a {kind}")
        return path

    check.__name__ = what
    return check


def existing_file(what: str) -> Callable[[str], Path]:
    """An argument type for the path of an existing file; ``what`` names the file in the message."""
    return _existing(what, Path.is_file, "file")


def existing_directory(what: str) -> Callable[[str], Path]:
    """An argument type for the path of an existing directory (data, models); ``what`` names it in the message."""
    return _existing(what, Path.is_dir, "directory")


def output_directory(text: str) -> Path:
    """A directory to write into: it may be absent (it is created), but must be named, must not be an existing file,
    and the nearest existing directory on its path must be one this process can write into and enter."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; expected a directory to write into")
    path = Path(text)
    try:
        if path.exists() and not path.is_dir():
            raise argparse.ArgumentTypeError(
                f"{text!r} exists and is not a directory; expected a directory to write into"
            )
        existing = next(parent for parent in (path, *path.absolute().parents) if parent.exists())
    except OSError as error:  # a parent that cannot be entered
        raise argparse.ArgumentTypeError(f"{text!r} cannot be reached ({error.strerror or error})") from None
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {str(existing)!r} is a file, not a directory; it cannot hold one")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: {str(existing)!r} is not a directory this user can write into")
    return path


def file_to_write(text: str) -> Path:
    """A file to write (or append to): named, not a directory, in a directory as :func:`output_directory` takes."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; expected a file to write")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; expected a file to write")
    output_directory(str(path.parent))  # where it goes: a directory that is or can be made, and written into
    return path


def npz_file(text: str) -> Path:
    """A file to write a ``.npz`` archive into, named with that suffix (numpy adds it to a name without it, so the
    name given is the name written), as :func:`file_to_write` takes it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; expected a .npz file to write")
    path = Path(text)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{str(path)!r} is a directory; expected a .npz file to write")
    return file_to_write(str(path))
