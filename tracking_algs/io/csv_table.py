"""Strict reading and exact writing of CSV tables with named, typed columns, through pyarrow's CSV reader and
writer; a file whose name ends in ``.gz`` is read (and written) as gzip.

Floats are written as the shortest decimal that reads back to the same float64 (pyarrow's writer), so what
:func:`write_table` writes, :func:`read_table` reads back bit for bit.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NoReturn

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv

from tracking_algs.errors import EventFormatError

#: What pyarrow parses as an int64 / a float64 (the error path names the first field that is not one).
_INTEGER = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE)
_INT64 = np.iinfo(np.int64)
#: a blank line is a row with one empty field (an error), so that row n is always line n + 1 in messages
_PARSE_OPTIONS = pa_csv.ParseOptions(ignore_empty_lines=False)
#: how much of a file's start :func:`_check_header` reads for its header line
_HEADER_BYTES = 1 << 16
_WRITE_OPTIONS = pa_csv.WriteOptions(include_header=False)  # the header is written as plain names, unquoted


def read_table(path: Path, columns: Mapping[str, npt.DTypeLike]) -> dict[str, np.ndarray]:
    """The named ``columns`` of a CSV file with a header line, each as an array of its dtype (int64 or float64).

    A file whose name ends in ``.gz`` is decompressed (gzip) while it is read. Extra columns are ignored.
    Raises :class:`EventFormatError` naming the file, and the row (1-based data row, its line number) and
    column, for an unreadable file, a missing header or column, a row with the wrong number of fields, an
    unparsable value, a value with a fraction in an integer column, a NaN/infinite float, or a column named twice.
    """
    path = Path(path)
    dtypes = {name: np.dtype(kind) for name, kind in columns.items()}
    convert = pa_csv.ConvertOptions(
        column_types={name: pa.from_numpy_dtype(dtype) for name, dtype in dtypes.items()},
        include_columns=list(dtypes),
        null_values=[],  # no "NA"/"nan"/"" as a missing value: an empty field is an error, "nan" a float NaN
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            data = pa_csv.read_csv(stream, parse_options=_PARSE_OPTIONS, convert_options=convert)
    except (pa.ArrowException, OSError) as error:  # pyarrow names neither row nor column name: find them
        _diagnose(path, dtypes, error)
    _check_header(path, dtypes)
    table = {name: np.array(data.column(name).to_numpy(), dtype=dtype) for name, dtype in dtypes.items()}
    for name, values in table.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0]) + 1
            raise EventFormatError(f"{path}: row {row} (line {row + 1}), column {name!r}: {values[row - 1]} "
                                   "is not a finite number")  # fmt: skip
    return table


def check_rows(
    path: Path, table: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray], expected: str | Mapping[str, str]
) -> None:
    """Raise :class:`EventFormatError` for the first row of ``table`` (read from ``path`` by :func:`read_table`)
    that holds an invalid value, naming the file, the row, its first such column, the value and what was expected.

    ``valid`` maps columns of ``table`` to each row's validity (boolean arrays); ``expected`` says what the values
    must be (e.g. "a positive number"), for all of them or per column.
    """
    bad = [(int(np.argmin(ok)), index, name) for index, (name, ok) in enumerate(valid.items()) if not np.all(ok)]
    if bad:
        row, _, name = min(bad)
        what = expected if isinstance(expected, str) else expected[name]
        raise EventFormatError(f"{path}: row {row + 1} (line {row + 2}), column {name!r}: {table[name][row]} is not "
                               f"{what}")  # fmt: skip


def write_table(path: Path, table: Mapping[str, np.ndarray]) -> None:
    """Write columns (in the mapping's order) with a header line: integers as integers, floats as the shortest
    decimal that reads back to exactly the same float64. A ``.gz`` name writes gzip."""
    with TableWriter(path, {name: np.asarray(values).dtype for name, values in table.items()}) as writer:
        writer.write(table)


class TableWriter:
    """A CSV file written in chunks of rows: the header line first, then each :meth:`write`'s columns, formatted as
    by :func:`write_table`. Integer columns are written as int64, float columns as float64."""

    def __init__(self, path: Path, columns: Mapping[str, npt.DTypeLike]) -> None:
        #: each column's dtype as written: int64 for integer (and boolean) columns, float64 for the others
        self.dtypes = {name: np.dtype(np.int64 if np.dtype(kind).kind in "iub" else np.float64)
                       for name, kind in columns.items()}  # fmt: skip
        self.schema = pa.schema([(name, pa.from_numpy_dtype(dtype)) for name, dtype in self.dtypes.items()])
        self._stream = pa.output_stream(str(path), compression="detect")
        try:
            self._stream.write((",".join(self.dtypes) + "\n").encode())
            self._writer = pa_csv.CSVWriter(self._stream, self.schema, write_options=_WRITE_OPTIONS)
        except BaseException:
            self._stream.close()
            raise

    def write(self, table: Mapping[str, np.ndarray | Iterable[float]]) -> None:
        """Append rows: one array per column of the header, all of one length."""
        arrays = [pa.array(np.asarray(table[name], dtype=dtype)) for name, dtype in self.dtypes.items()]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        """Finish the file."""
        try:
            self._writer.close()
        finally:
            self._stream.close()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_header(path: Path, columns: Mapping[str, np.dtype]) -> None:
    """Each of ``columns`` must appear once in the header line (pyarrow would silently read the first of two)."""
    with pa.input_stream(str(path), compression="detect") as stream:
        header = stream.read(_HEADER_BYTES).decode("utf-8", errors="replace").partition("\n")[0]
    names = [name.strip() for name in header.split(",")]
    repeated = [name for name in columns if names.count(name) > 1]
    if repeated:
        raise EventFormatError(f"{path}: the header names column(s) {', '.join(repeated)} more than once; expected "
                               "each column once")  # fmt: skip


def _diagnose(path: Path, columns: Mapping[str, np.dtype], error: Exception) -> NoReturn:
    """Raise the :class:`EventFormatError` for a file pyarrow rejected: read it again as text (only on this error
    path) and name the first problem, its row and column; pyarrow's own message when no field is to blame."""
    text = _read_text(path)
    lines = text.splitlines()
    header = lines[0].strip() if lines else ""
    names = [name.strip() for name in header.split(",")] if header else []
    if not names:
        raise EventFormatError(f"{path}: empty file, expected a header with columns {', '.join(columns)}")
    missing = [name for name in columns if name not in names]
    if missing:
        raise EventFormatError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}, found {', '.join(names)}"
        )
    wanted = {names.index(name): (name, dtype) for name, dtype in columns.items()}
    for row, fields in enumerate(csv.reader(lines[1:]), start=1):
        fields = fields or [""]  # a blank line: one empty field
        line = row + 1
        if len(fields) != len(names):
            what = "truncated row" if len(fields) < len(names) else "too many fields"
            raise EventFormatError(
                f"{path}: row {row} (line {line}): {what}, expected {len(names)} fields, found {len(fields)}"
            )
        for index, (name, dtype) in wanted.items():
            field = fields[index].strip()
            if not _parses(field, dtype):
                what = "an integer" if dtype.kind == "i" else "a number"
                raise EventFormatError(f"{path}: row {row} (line {line}), column {name!r}: {field!r} is not a valid "
                                       f"{dtype.name} (expected {what})")  # fmt: skip
    raise EventFormatError(f"{path}: {error}")


def _parses(field: str, dtype: np.dtype) -> bool:
    """Whether pyarrow reads ``field`` as a value of ``dtype`` (int64: digits without a fraction or exponent)."""
    if dtype.kind != "i":
        return _FLOAT.fullmatch(field) is not None
    return _INTEGER.fullmatch(field) is not None and _INT64.min <= int(field) <= _INT64.max


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
    except zlib.error as error:  # a gzip header, then a body that does not decompress
        raise EventFormatError(f"{path}: cannot read: damaged gzip file ({error})") from None
    except OSError as error:
        raise EventFormatError(f"{path}: cannot read: {error.strerror or error}") from None
