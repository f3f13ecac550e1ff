"""Job options: TOML files, ``--set dotted.key=value`` overrides, and strict structuring into attrs classes.

Unknown keys are errors that list the valid choices; values are converted and validated by cattrs.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import numbers
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli (a dependency there)
    import tomli as tomllib

from inference_iface.errors import ConfigError

T = TypeVar("T")

#: How many differing options :func:`describe_differences` names.
SHOWN_DIFFERENCES = 3
_ABSENT = object()

_converter = cattrs.Converter(forbid_extra_keys=True)


def _attrs_or_instance(cls: type) -> Any:
    """Structure attrs classes from mappings, and let ready-made instances through unchanged."""
    from_mapping: Any = _converter.gen_structure_attrs_fromdict(cls)

    def structure_value(value: Any, _type: type) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):  # cattrs would say "'list' object has no attribute 'keys'"
            raise _WrongKind(f"expected a table of options, got {value!r}")
        return from_mapping(value, _type)

    return structure_value


_converter.register_structure_hook_factory(attrs.has, _attrs_or_instance)


class _WrongKind(ValueError):
    """A value of the wrong kind for its key (its message says what was expected and what came)."""


def _strict_bool(value: Any, _type: type) -> bool:
    """Only true and false are booleans (cattrs would take ``bool(value)``: the word ``False`` would be true)."""
    if isinstance(value, bool):
        return value
    raise _WrongKind(f"expected true or false, got {value!r}")


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer (Python's or numpy's), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _strict_int(value: Any, _type: type) -> int:
    """Integers, and floats that are whole numbers (cattrs would cut ``3.7`` to 3 and take ``true`` as 1)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _WrongKind(f"expected an integer, got {value!r}")


def _strict_float(value: Any, _type: type) -> float:
    """Finite numbers (cattrs would take ``true`` as 1.0 and parse a string; TOML's ``nan`` and ``inf`` are no cut,
    radius, timeout or rate: a NaN passes no comparison, so it would slip through a range check written as
    ``if value < 0``, and an infinite cut or timeout hangs or fails far from the option)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise _WrongKind(f"expected a finite number, got {value!r}")
        return number
    raise _WrongKind(f"expected a number, got {value!r}")


def _strict_str(value: Any, _type: type) -> str:
    """Text only (cattrs would take ``str(value)``: ``None`` would be the path ``'None'``, 8001 a URL)."""
    if isinstance(value, str):
        return value
    raise _WrongKind(f"expected a string, got {value!r}")


def _is_sequence_type(cls: Any) -> bool:
    """``list[X]`` and ``tuple[X, ...]``: the fields that take a list."""
    args = get_args(cls)
    return get_origin(cls) is list or (get_origin(cls) is tuple and len(args) == 2 and args[1] is Ellipsis)


def _no_text_for_sequences(cls: Any) -> Callable[[Any, type], Any]:
    """A list field takes a list, never one string (cattrs would split the string into its characters)."""
    factory = list_structure_factory if get_origin(cls) is list else homogenous_tuple_structure_factory
    structure_items = factory(cls, _converter)

    def structure_value(value: Any, _type: type) -> Any:
        if isinstance(value, (str, bytes)):
            raise _WrongKind(f"expected a list, got {value!r}")
        return structure_items(value, _type)

    return structure_value


_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook_factory(_is_sequence_type, _no_text_for_sequences)


# attrs validators for the option classes built directly in Python (``GraphConfig(radius=...)``), where no
# converter checks the kinds of values first: each names the key and what it takes, as the range validators do, and
# raises a ConfigError, as the same value read from a mapping does (:func:`structure`).


class OptionKindError(ConfigError, TypeError):
    """An option class built in Python was given a value of the wrong kind: a :class:`ConfigError`, as the same value
    read from a mapping raises, and a ``TypeError``, as attrs' own validators raise."""


def _wrong_kind(attribute: attrs.Attribute, wanted: str, value: Any) -> OptionKindError:
    return OptionKindError(f"'{attribute.name}' must be {wanted}, got {value!r}")


def finite(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A finite real number (an integer too, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _wrong_kind(attribute, "a number", value)
    if not math.isfinite(value):
        raise ConfigError(f"'{attribute.name}' must be a finite number: {value!r}")


def integer(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """An integer (not a bool, not a float)."""
    if not is_integer(value):
        raise _wrong_kind(attribute, "an integer", value)


def boolean(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """True or false (not 0, 1 or a word)."""
    if not isinstance(value, bool):
        raise _wrong_kind(attribute, "true or false", value)


def text(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A string."""
    if not isinstance(value, str):
        raise _wrong_kind(attribute, "a string", value)


def texts(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A list or tuple of strings (one string is refused, not split into its characters)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise _wrong_kind(attribute, "a list of strings", value)


def mapping(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A mapping (a table of options)."""
    if not isinstance(value, Mapping):
        raise _wrong_kind(attribute, "a table (a mapping)", value)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read one TOML file into a dict; a missing or malformed file raises :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"TOML file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"TOML file {str(path)!r} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"TOML file {str(path)!r} is not UTF-8 text (byte {error.start}); TOML files are UTF-8"
        ) from None
    except OSError as error:
        raise ConfigError(f"TOML file {str(path)!r} cannot be read ({error.strerror or error})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into its key path and a value parsed as TOML (a bare word stays a string).

    As in TOML, blanks around the dots of the key are ignored. A value that starts as a TOML list, inline table or
    quoted string (``[``, ``{``, ``"``, ``'``) must be one: ``[a:1, b:2]`` is an error (its strings need quotes),
    not the text ``"[a:1, b:2]"``.
    """
    key, sep, raw = text.partition("=")
    parts = [part.strip() for part in key.split(".")]
    if not sep or any(not part for part in parts):
        raise ConfigError(f"override {text!r} must look like dotted.key=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError as error:
        if raw[:1] not in ("[", "{", '"', "'"):
            return parts, raw
        what = {"[": "a TOML list", "{": "a TOML inline table"}.get(raw[:1], "a TOML string")
        hint = ' (quote each string in it: ["a", "b"])' if raw[:1] in "[{" else ""
        problem = re.sub(r" \(at line \d+, column \d+\)$", "", str(error))
        raise ConfigError(f"override {text!r}: the value {raw!r} is not {what}{hint}: {problem}") from None
    return parts, value


def apply_overrides(options: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``options`` with each ``dotted.key=value`` override set, creating tables as needed.

    A key set twice (``a.b=1`` and ``a.b=2``, or ``a.b.c=1`` and then ``a.b={...}``, which would drop the first), or
    an override through a key that holds a value, not a table, is a :class:`ConfigError` naming the key.
    """
    result = copy.deepcopy(dict(options))
    given: dict[tuple[str, ...], str] = {}
    for text in overrides:
        path, value = parse_override(text)
        key = tuple(path)
        earlier = next((prior for done, prior in given.items() if done[: len(key)] == key), None)
        if earlier is not None:
            raise ConfigError(f"override {text!r}: {'.'.join(path)} is already set by --set {earlier}; set it once")
        table = result
        for depth, part in enumerate(path[:-1]):
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(path[: depth + 1])!r} is a value, not a table ({child!r}), so it "
                    f"has no key {path[depth + 1]!r}"
                )
            table = child
        table[path[-1]] = value
        given[key] = text
    return result


def with_overrides(data: Mapping[str, Any], overrides: Iterable[str], build: Callable[..., T], where: str) -> T:
    """``build(data, where=where)`` with every ``dotted.key=value`` override applied to ``data`` (the options read
    from ``where``, a file; ``functools.partial(structure, cls=C)`` builds an attrs class ``C``).  An error is blamed
    on what caused it: ``where`` when the data alone has it, otherwise the first override that brought it in
    (``--set job.seed=-3: 'seed' must be >= 0: -3 @ $.job``); ``build`` raises :class:`ConfigError` prefixed with
    the name it is given."""
    if isinstance(overrides, str):  # its characters would each be read as an override
        raise TypeError(f"overrides must be a list of 'dotted.key=value' strings, got the string {overrides!r}")
    overrides = list(overrides)
    try:
        return build(apply_overrides(data, overrides), where=where)
    except ConfigError as error:
        problem = str(error).removeprefix(f"{where}: ")
        raise _blamed(data, overrides, build, where, problem) or error from None


def _blamed(
    data: Mapping[str, Any], overrides: list[str], build: Callable[..., Any], where: str, problem: str
) -> ConfigError | None:
    """``problem`` (the error of the data with every override; several, joined by ``"; "``) with each of its parts
    blamed on the first of the data alone, the data with the first override, with the first two, ... that has it
    (the last override when only all of them together do); None without overrides."""
    if not overrides:
        return None
    parts = problem.split("; ")
    blame: dict[str, list[str]] = {}
    for count in range(len(overrides)):
        blamed = where if count == 0 else f"--set {overrides[count - 1]}"
        try:
            build(apply_overrides(data, overrides[:count]), where=blamed)
        except ConfigError as error:
            had = str(error).removeprefix(f"{blamed}: ").split("; ")
            for part in parts:
                if part in had and not any(part in found for found in blame.values()):
                    blame.setdefault(blamed, []).append(part)
    unblamed = [part for part in parts if not any(part in found for found in blame.values())]
    if unblamed:
        blame.setdefault(f"--set {overrides[-1]}", []).extend(unblamed)
    return ConfigError(
        "; ".join(f"{blamed}: {'; '.join(_unrepeated(found, blamed))}" for blamed, found in blame.items())
    )


def _unrepeated(found: list[str], blamed: str) -> list[str]:
    """The problems blamed on ``--set TEXT`` without the ``override 'TEXT': `` that :func:`apply_overrides` puts in
    front of its own (the blame names the override already)."""
    prefix = f"override {blamed.removeprefix('--set ')!r}: "
    return [part.removeprefix(prefix) for part in found]


def structure(data: Mapping[str, Any], cls: type[T], where: str = "options", path: Iterable[str] = ()) -> T:
    """Build ``cls`` (an attrs class) from ``data``; unknown keys and bad values raise :class:`ConfigError`.

    ``where`` names the source in messages (a file, ``"[finding.graph]"``); ``path`` is where ``data`` sits in a
    larger document (``("inference", "triton")``), so that the messages name each key in full: ``unknown key(s)
    inference.triton.urll; valid keys are ... (did you mean inference.triton.url?)``, ``... @ $.inference.triton``.
    """
    root = tuple(path)
    try:
        return _converter.structure(dict(data), cls)
    except (ClassValidationError, ForbiddenExtraKeysError, IterableValidationError) as error:
        raise ConfigError(f"{where}: {'; '.join(_messages(error, root))}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def unstructure(value: Any) -> Any:
    """Plain dicts/lists from an attrs value (for writing effective job options into reports)."""
    return _converter.unstructure(value)


def _messages(error: BaseException, path: tuple[Any, ...], type_: Any = None) -> list[str]:
    """Each problem of a cattrs error, ``... @ $.table.key`` (cattrs' path notation, a mapping's keys and a list's
    indices in brackets); an unknown key named in full, dotted, with the closest valid key."""
    if isinstance(error, (ClassValidationError, IterableValidationError)):
        with_notes, without = error.group_exceptions()
        found = []
        for child, note in with_notes:
            step = note.name if isinstance(note, AttributeValidationNote) else _Index(note.index)
            found.extend(_messages(child, (*path, step), note.type))
        for child in without:
            found.extend(_messages(child, path))
        return found
    if isinstance(error, ForbiddenExtraKeysError):
        return [unknown_keys_message(sorted(error.extra_fields), [field.name for field in attrs.fields(error.cl)],
                                     _dotted(path))]  # fmt: skip
    return [f"{_format_exception(error, type_)} @ {_dollar(path)}"]


class _Index:
    """A list index or a mapping key on a path (shown in brackets)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _dollar(path: tuple[Any, ...]) -> str:
    return "$" + "".join(f"[{step.value!r}]" if isinstance(step, _Index) else f".{step}" for step in path)


def _dotted(path: tuple[Any, ...]) -> str:
    """The path as a dotted key (a list's indices in brackets): ``finding.graph.cuts``, ``volumes[2]``."""
    text = ""
    for step in path:
        if isinstance(step, _Index) and isinstance(step.value, int):
            text += f"[{step.value}]"
        else:
            text += f".{step.value if isinstance(step, _Index) else step}"
    return text.removeprefix(".")


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like ``word`` (a misspelt key or name), None where none is close (``difflib``, ratio ≥ 0.6)."""
    match = difflib.get_close_matches(word, list(choices), 1, 0.6)
    return match[0] if match else None


def unknown_keys_message(unknown: Iterable[str], valid: Iterable[str], table: str = "", hint: str = "") -> str:
    """``unknown key(s) KEY, ... (TABLE.KEY, ...); valid keys are ...`` and, for an unknown key like a valid one,
    ``(did you mean TABLE.VALID?)``; ``table`` is the dotted name of the table that holds them (empty: the top level,
    where the key is its full name)."""
    unknown, valid = [str(key) for key in unknown], list(valid)
    prefix = f"{table}." if table else ""
    close = [f"{prefix}{match}" for key in unknown if (match := closest(key, valid))]
    guess = f" (did you mean {' or '.join(dict.fromkeys(close))}?)" if close else ""
    full = f" ({', '.join(prefix + key for key in unknown)})" if table else ""
    return f"unknown key(s) {', '.join(unknown)}{full}; valid keys are {', '.join(valid)}{hint}{guess}"


def _format_exception(error: BaseException, type_: Any) -> str:
    """cattrs' wording, but keep the message of validator errors and literal mismatches (it names the key)."""
    text = cattrs.v.format_exception(error, type_)
    if get_origin(type_) is Literal and " not in literal " in str(error):
        value = str(error).split(" not in literal ")[0]
        return f"expected one of {', '.join(map(repr, get_args(type_)))}, got {value!r}"
    if text == "expected a mapping":
        return "expected a table"
    if isinstance(error, _WrongKind) or text == "invalid value" or text.startswith("unknown error"):
        return str(error)
    if isinstance(error, TypeError) and type_ is None:  # a validator's (attrs.validators.instance_of): names the key
        return str(error)
    return text


def option_differences(old: Any, new: Any, key: str = "") -> list[tuple[str, Any, Any]]:
    """Where two option documents (plain JSON data) differ: ``(dotted key, old value, new value)`` in key order, a key
    missing on one side given as a value that :func:`describe_differences` shows as ``absent``."""
    if isinstance(old, dict) and isinstance(new, dict):
        prefix = f"{key}." if key else ""
        return [
            found
            for name in sorted(old.keys() | new.keys())
            for found in option_differences(old.get(name, _ABSENT), new.get(name, _ABSENT), prefix + name)
        ]
    if _ABSENT not in (old, new) and json.dumps(_numbers(old), sort_keys=True) == json.dumps(
        _numbers(new), sort_keys=True
    ):
        return []
    return [(key, old, new)]


def _numbers(value: Any) -> Any:
    """``value`` with its whole floats as integers: ``30`` and ``30.0`` are one option value (a backend's or a stage's
    table keeps the number as it was written; the option classes make both the same)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    if isinstance(value, dict):
        return {name: _numbers(item) for name, item in value.items()}
    return value


def describe_differences(differences: list[tuple[str, Any, Any]], before: str, now: str = "now") -> str:
    """The first :data:`SHOWN_DIFFERENCES` of :func:`option_differences` in words: each key (a ``--set`` key) with
    its value ``before`` (``"in the job"``) and ``now``; long values shortened."""

    def shown(value: Any) -> str:
        text = "absent" if value is _ABSENT else json.dumps(value)
        return text if len(text) <= 40 else text[:39] + "…"

    parts = [f"{key.removeprefix('options.') or 'the whole record'}: {shown(old)} {before}, {shown(new)} {now}"
             for key, old, new in differences[:SHOWN_DIFFERENCES]]  # fmt: skip
    if len(differences) > SHOWN_DIFFERENCES:
        parts.append(f"{len(differences) - SHOWN_DIFFERENCES} more")
    return "; ".join(parts)
