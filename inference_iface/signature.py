"""Value types describing a model: :class:`TensorSpec` and :class:`ModelSignature`.

Tensor names are free-form strings (``"input.1"``, ``"y:0"``); Python field names are derived from
them by :func:`field_name`, the one documented rule:

1. every character that is not an ASCII letter, digit or underscore becomes ``_``;
2. a name that then starts with a digit or an underscore gets the prefix ``t_``
   (``namedtuple`` forbids leading underscores);
3. a Python keyword gets the suffix ``_`` (``"lambda"`` → ``"lambda_"``);
4. a tensor name that is already its own field name (``"a_b_2"``) keeps it; the other names that
   collide after steps 1-3 get the first free suffix ``_2``, ``_3``, ... in signature order
   (``"a.b"``, ``"a:b"`` → ``a_b``, ``a_b_2``; ``"a.b"``, ``"a:b"``, ``"a_b_2"`` → ``a_b``, ``a_b_3``, ``a_b_2``).
   So a keyword that equals a tensor name always means that tensor.
"""

from __future__ import annotations

import functools
import keyword
import re
from collections import namedtuple
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import attrs
import numpy as np

from inference_iface.dtypes import DTYPE_NAMES
from inference_iface.errors import ModelError
from inference_iface.options import is_integer

_NOT_IDENTIFIER = re.compile(r"[^0-9A-Za-z_]")


def field_name(tensor_name: str) -> str:
    """The Python identifier for one tensor name (steps 1-3 of the module's rule)."""
    name = _NOT_IDENTIFIER.sub("_", tensor_name)
    if not name or name[0].isdigit() or name[0] == "_":
        name = "t_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


def field_names(tensor_names: Iterable[str]) -> tuple[str, ...]:
    """Python identifiers for a sequence of tensor names (the whole rule, collisions included)."""
    names = tuple(tensor_names)
    bases = [field_name(name) for name in names]
    taken = {name for name, base in zip(names, bases, strict=True) if name == base}
    result = []
    for name, base in zip(names, bases, strict=True):
        if name == base:
            result.append(name)
            continue
        candidate, index = base, 2
        while candidate in taken:
            candidate = f"{base}_{index}"
            index += 1
        taken.add(candidate)
        result.append(candidate)
    return tuple(result)


def _shape(value: Any, spec: Any) -> tuple[int, ...]:
    """The dimensions of ``spec`` (the TensorSpec being made, its name set) as integers, ``-1`` for a dynamic one
    (given as ``None`` or any negative integer)."""
    dims = None if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) else tuple(value)
    if dims is None or not all(dim is None or is_integer(dim) for dim in dims):
        raise ModelError(
            f"tensor {spec.name!r}: the shape must be a sequence of dimensions (integers; -1 or None for a dynamic "
            f"one), got {value!r}"
        )
    return tuple(-1 if dim is None or dim < 0 else int(dim) for dim in dims)


def _check_dtype(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in DTYPE_NAMES:
        raise ModelError(f"tensor {instance.name!r}: unknown dtype {value!r}; expected one of {', '.join(DTYPE_NAMES)}")


@attrs.frozen(repr=False, cache_hash=True)
class TensorSpec:
    """One named tensor of a model: its dtype name and shape, ``-1`` marking a dynamic dimension."""

    name: str
    dtype: str = attrs.field(validator=_check_dtype)
    # mypy's attrs plugin does not follow an attrs.Converter ("Unsupported converter"): __init__ takes Any there
    shape: tuple[int, ...] = attrs.field(converter=attrs.Converter(_shape, takes_self=True))  # type: ignore[misc]

    @property
    def rank(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def __repr__(self) -> str:
        dims = ", ".join("?" if dim < 0 else str(dim) for dim in self.shape)
        return f"TensorSpec({self.name!r}, {self.dtype}, [{dims}])"


def _specs(value: Iterable[TensorSpec]) -> tuple[TensorSpec, ...]:
    specs = tuple(value)
    names = [spec.name for spec in specs]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ModelError(f"tensor names must be unique; repeated: {', '.join(duplicated)}")
    return specs


@attrs.frozen(repr=False, cache_hash=True)
class ModelSignature:
    """The named inputs and outputs of a model, in the model's own order."""

    inputs: tuple[TensorSpec, ...] = attrs.field(converter=_specs)
    outputs: tuple[TensorSpec, ...] = attrs.field(converter=_specs)

    @functools.cached_property
    def input_names(self) -> tuple[str, ...]:
        """Input tensor names in signature order."""
        return tuple(spec.name for spec in self.inputs)

    @functools.cached_property
    def output_names(self) -> tuple[str, ...]:
        """Output tensor names in signature order."""
        return tuple(spec.name for spec in self.outputs)

    @functools.cached_property
    def input_keywords(self) -> Mapping[str, str]:
        """Every name an input may be given by (field names, and tensor names that are identifiers) → tensor name."""
        names = self.input_names
        keywords = dict(zip(field_names(names), names, strict=True))
        keywords.update({name: name for name in names if name.isidentifier()})
        return MappingProxyType(keywords)

    def input(self, name: str) -> TensorSpec:
        """The input spec called ``name`` (``KeyError`` naming the inputs where there is none)."""
        return _find(self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        """The output spec called ``name`` (``KeyError`` naming the outputs where there is none)."""
        return _find(self.outputs, name, "output")

    @property
    def input_type(self) -> type[NamedTuple]:
        """A NamedTuple class whose fields are the input names made identifiers, for building inputs."""
        return named_tuple_type("Inputs", self.input_names)

    @property
    def output_type(self) -> type[NamedTuple]:
        """The NamedTuple class returned by ``infer`` when all outputs are requested."""
        return named_tuple_type("Outputs", self.output_names)

    def __repr__(self) -> str:
        def listed(specs: tuple[TensorSpec, ...]) -> str:  # as Python writes a tuple: (a,) for one, () for none
            return f"({', '.join(map(repr, specs))}{',' if len(specs) == 1 else ''})"

        return f"ModelSignature(inputs={listed(self.inputs)}, outputs={listed(self.outputs)})"


def _find(specs: Sequence[TensorSpec], name: str, kind: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(f"no {kind} called {name!r}; the model has {', '.join(spec.name for spec in specs)}")


class Outputs(Protocol):
    """What :meth:`~inference_iface.interface.InferenceInterface.infer` returns, as a type checker sees it: a
    NamedTuple of numpy arrays whose fields are the output names made identifiers (``out.embedding``), indexable
    (``out[0]``), iterable, and convertible (``out._asdict()``); ``tensor_names`` holds the tensor names in order."""

    tensor_names: tuple[str, ...]

    def __getattr__(self, field: str) -> np.ndarray: ...

    def __getitem__(self, index: int) -> np.ndarray: ...

    def __iter__(self) -> Iterator[np.ndarray]: ...

    def __len__(self) -> int: ...

    def _asdict(self) -> dict[str, np.ndarray]: ...


@functools.cache
def named_tuple_type(type_name: str, tensor_names: tuple[str, ...]) -> type[NamedTuple]:
    """The NamedTuple class (made once per name tuple) with fields ``field_names(tensor_names)``.

    The class carries ``tensor_names``, so a value can be turned back into a mapping by tensor name.
    """
    cls = namedtuple(type_name, field_names(tensor_names))  # type: ignore[misc]  # names known at run time only
    cls.tensor_names = tensor_names  # type: ignore[attr-defined]
    return cls
