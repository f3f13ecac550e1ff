"""Job options: TOML files, ``--set dotted.key=value`` overrides, and strict structuring into attrs classes.

Unknown keys are errors that list the valid choices; values are converted and validated by cattrs.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

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
        return value if isinstance(value, cls) else from_mapping(value, _type)

    return structure_value


_converter.register_structure_hook_factory(attrs.has, _attrs_or_instance)


class _WrongKind(ValueError):
    """A value of the wrong kind for its key (its message says what was expected and what came)."""


def _strict_bool(value: Any, _type: type) -> bool:
    """Only true and false are booleans (cattrs would take ``bool(value)``: the word ``False`` would be true)."""
    if isinstance(value, bool):
        return value
    raise _WrongKind(f"expected true or false, got {value!r}")


def _strict_int(value: Any, _type: type) -> int:
    """Integers, and floats that are whole numbers (cattrs would cut ``3.7`` to 3 and take ``true`` as 1)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _WrongKind(f"expected an integer, got {value!r}")


def _strict_float(value: Any, _type: type) -> float:
    """Numbers (cattrs would take ``true`` as 1.0 and parse a string)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
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
    """Split ``"a.b.c=value"`` into its key path and a value parsed as TOML (a bare word stays a string)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like dotted.key=value")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(options: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``options`` with each ``dotted.key=value`` override set, creating tables as needed."""
    result = copy.deepcopy(dict(options))
    for text in overrides:
        path, value = parse_override(text)
        table = result
        for part in path[:-1]:
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a table")
            table = child
        table[path[-1]] = value
    return result


def with_overrides(data: Mapping[str, Any], overrides: Iterable[str], build: Callable[..., T], where: str) -> T:
    """``build(data, where=where)`` with every ``dotted.key=value`` override applied to ``data`` (the options read
    from ``where``, a file; ``functools.partial(structure, cls=C)`` builds an attrs class ``C``).  An error is blamed
    on what caused it: ``where`` when the data alone has it, otherwise the first override that brought it in
    (``--set job.seed=-3: 'seed' must be >= 0: -3 @ $.job``); ``build`` raises :class:`ConfigError` prefixed with
    the name it is given."""
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
    return ConfigError("; ".join(f"{blamed}: {'; '.join(found)}" for blamed, found in blame.items()))


def structure(data: Mapping[str, Any], cls: type[T], where: str = "options") -> T:
    """Build ``cls`` (an attrs class) from ``data``; unknown keys and bad values raise :class:`ConfigError`.

    ``where`` names the table in messages (``"[finding.graph]"``).
    """
    try:
        return _converter.structure(dict(data), cls)
    except (ClassValidationError, ForbiddenExtraKeysError) as error:
        raise ConfigError(f"{where}: {_explain(error)}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def unstructure(value: Any) -> Any:
    """Plain dicts/lists from an attrs value (for writing effective job options into reports)."""
    return _converter.unstructure(value)


def _explain(error: BaseException) -> str:
    extra = _first(error, ForbiddenExtraKeysError)
    if extra is not None:
        valid = ", ".join(field.name for field in attrs.fields(extra.cl))
        return f"unknown key(s) {', '.join(sorted(extra.extra_fields))}; valid keys are {valid}"
    return "; ".join(cattrs.transform_error(error, format_exception=_format_exception))


def _format_exception(error: BaseException, type_: Any) -> str:
    """cattrs' wording, but keep the message of validator errors and literal mismatches (it names the key)."""
    text = cattrs.v.format_exception(error, type_)
    if get_origin(type_) is Literal and " not in literal " in str(error):
        value = str(error).split(" not in literal ")[0]
        return f"expected one of {', '.join(map(repr, get_args(type_)))}, got {value!r}"
    if isinstance(error, _WrongKind) or text == "invalid value" or text.startswith("unknown error"):
        return str(error)
    return text


def _first(error: BaseException, kind: type[BaseException]) -> Any:
    if isinstance(error, kind):
        return error
    for child in getattr(error, "exceptions", ()):
        found = _first(child, kind)
        if found is not None:
            return found
    return None


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
    if _ABSENT not in (old, new) and json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True):
        return []
    return [(key, old, new)]


def describe_differences(differences: list[tuple[str, Any, Any]], before: str, now: str = "now") -> str:
    """The first :data:`SHOWN_DIFFERENCES` of :func:`option_differences` in words: each key (a ``--set`` key) with
    its value ``before`` (``"in the job"``) and ``now``; long values shortened."""

    def shown(value: Any) -> str:
        text = "absent" if value is _ABSENT else json.dumps(value)
        return text if len(text) <= 40 else text[:39] + "…"

    parts = [f"{key.removeprefix('options.')}: {shown(old)} {before}, {shown(new)} {now}"
             for key, old, new in differences[:SHOWN_DIFFERENCES]]  # fmt: skip
    if len(differences) > SHOWN_DIFFERENCES:
        parts.append(f"{len(differences) - SHOWN_DIFFERENCES} more")
    return "; ".join(parts)
