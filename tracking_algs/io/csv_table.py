"""Strict reading and exact writing of CSV tables with named, typed columns; ``.gz`` files are read as gzip."""

from __future__ import annotations

import csv
import gzip
import io
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tracking_algs.errors import EventFormatError


def read_table(path: Path, columns: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    """The named ``columns`` of a CSV file with a header line, each as an array of its dtype.

    A file whose name ends in ``.gz`` is decompressed (gzip) while it is read. Extra columns are ignored.
    Raises :class:`EventFormatError` naming the file, and the row (1-based data row, its line number) and
    column, for an unreadable file, a missing header or column, a row with the wrong number of fields, an
    unparsable value, a value with a fraction in an integer column, or a NaN/infinite float.
    """
    text = _read_text(path)
    header = text.partition("\n")[0]
    names = [name.strip() for name in header.strip().split(",")] if header.strip() else []
    if not names:
        raise EventFormatError(f"{path}: empty file, expected a header with columns {', '.join(columns)}")
    missing = [name for name in columns if name not in names]
    if missing:
        raise EventFormatError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}, found {', '.join(names)}"
        )
    usecols = [names.index(name) for name in columns]
    dtype = np.dtype([(name, np.dtype(kind)) for name, kind in columns.items()])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            # numpy parses "7.5" in an integer column as 7 with a DeprecationWarning: make that a parse error
            warnings.simplefilter("error", DeprecationWarning)
            data = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, usecols=usecols, dtype=dtype, ndmin=1)
    except ValueError as error:
        _locate_parse_error(path, text, names, columns)
        raise EventFormatError(f"{path}: {error}") from None
    _check_field_counts(path, text, len(names))
    table = {name: np.ascontiguousarray(data[name]) for name in columns}
    for name, values in table.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0]) + 1
            raise EventFormatError(f"{path}: row {row} (line {row + 1}), column {name!r}: {values[row - 1]} "
                                   "is not a finite number")  # fmt: skip
    return table


def _read_text(path: Path) -> str:
    """The whole text of a CSV file, gunzipped when its name ends in ``.gz``."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as stream:
                return stream.read()
        return path.read_text(encoding="utf-8")
    except gzip.BadGzipFile as error:
        raise EventFormatError(f"{path}: not a gzip file ({error})") from None
    except (EOFError, UnicodeDecodeError) as error:
        what = "truncated gzip file" if isinstance(error, EOFError) else "not a text (UTF-8) file"
        raise EventFormatError(f"{path}: cannot read: {what}") from None
    except OSError as error:
        raise EventFormatError(f"{path}: cannot read: {error.strerror or error}") from None


def write_table(path: Path, table: Mapping[str, np.ndarray]) -> None:
    """Write columns (in the mapping's order) with a header line: integers as integers, floats as Python's
    shortest repr, which reads back to exactly the same float64."""
    text_columns = [list(map(repr, np.asarray(values).tolist())) for values in table.values()]
    with path.open("w", newline="") as stream:
        stream.write(",".join(table) + "\n")
        stream.writelines(line + "\n" for line in map(",".join, zip(*text_columns, strict=True)))


def _locate_parse_error(path: Path, text: str, names: list[str], columns: Mapping[str, np.dtype]) -> None:
    """Find the first bad field of a file np.loadtxt rejected and raise an error naming its row and column."""
    wanted = {names.index(name): (name, np.dtype(kind)) for name, kind in columns.items()}
    reader = csv.reader(io.StringIO(text))
    next(reader)
    for row, fields in enumerate(reader, start=1):
        _check_fields(path, row, len(names), len(fields))
        for index, (name, kind) in wanted.items():
            field = fields[index].strip()
            try:
                int(field) if kind.kind == "i" else float(field)
            except ValueError:
                what = "an integer" if kind.kind == "i" else "a number"
                raise EventFormatError(
                    f"{path}: row {row} (line {row + 1}), column {name!r}: {field!r} is not a valid {kind.name} "
                    f"(expected {what})"
                ) from None


def _check_field_counts(path: Path, text: str, n_names: int) -> None:
    """np.loadtxt with ``usecols`` accepts rows with extra or missing unused fields; check every row."""
    lines = text.splitlines()[1:]
    counts = np.fromiter((line.count(",") for line in lines), dtype=np.int64, count=len(lines))
    bad = np.flatnonzero(counts != n_names - 1)
    if bad.size:
        row = int(bad[0]) + 1
        _check_fields(path, row, n_names, int(counts[bad[0]]) + 1)


def _check_fields(path: Path, row: int, expected: int, found: int) -> None:
    if found != expected:
        what = "truncated row" if found < expected else "too many fields"
        raise EventFormatError(f"{path}: row {row} (line {row + 1}): {what}, expected {expected} fields, found {found}")
