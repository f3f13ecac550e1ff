"""The abstract :class:`InferenceInterface`: named inputs in, named outputs out."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast

import numpy as np

from inference_iface.errors import BackendUnavailableError, ConfigError, InputError, ModelError
from inference_iface.signature import ModelSignature, Outputs, named_tuple_type
from inference_iface.validation import CAST_POLICIES, CastPolicy, collect_inputs, validate_inputs

if TYPE_CHECKING:
    from inference_iface.registry import BackendConfig


class InferenceInterface(abc.ABC):
    """One model behind one backend.

    Subclasses provide :attr:`signature`, :meth:`describe` and :meth:`_run`; this class does the
    binding by name, the validation before any backend call and the packing of outputs.

    Example::

        with create_inference({"backend": "onnxruntime", "model_path": "embedding.onnx"}) as iface:
            out = iface.infer(features=x)
            out.embedding
    """

    #: The attrs class of the backend's options (a :class:`~inference_iface.registry.BackendConfig`); the
    #: constructor of a registered backend takes one instance of it.
    config_class: ClassVar[type[BackendConfig]]

    def __init__(self, cast_policy: CastPolicy = "strict") -> None:
        if cast_policy not in CAST_POLICIES:
            raise ConfigError(f"cast_policy {cast_policy!r} is unknown; expected one of {', '.join(CAST_POLICIES)}")
        self.cast_policy: CastPolicy = cast_policy

    @property
    @abc.abstractmethod
    def signature(self) -> ModelSignature:
        """The model's named inputs and outputs."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line naming the backend, the model and where it runs, for logs (never secrets)."""

    @abc.abstractmethod
    def _run(self, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]) -> Mapping[str, np.ndarray]:
        """Run validated, C-contiguous ``inputs``; return at least the outputs in ``output_names``."""

    def infer(
        self, inputs: Mapping[str, Any] | NamedTuple | None = None, /, *, outputs: Iterable[str] | None = None, **named
    ) -> Outputs:
        """Run the model once.

        Args:
            inputs: a Mapping by tensor name, or a NamedTuple whose fields are the input names made
                identifiers (``signature.input_type``); or leave it out and pass keywords.
            outputs: tensor names of the outputs wanted (default: all, in signature order).
            **named: inputs as keywords, named by tensor name or its identifier form.

        Returns:
            A NamedTuple of numpy arrays in the order of ``outputs`` (or of the signature).

        Raises:
            InputError: an input is unknown, missing or of the wrong dtype, rank or dimension.
            ModelError: the model failed while running.
            BackendUnavailableError: the backend cannot be reached.
            InferenceTimeoutError: the call ran past its deadline.
        """
        signature = self.signature  # the body is kept flat: it is the per-call overhead over the backend
        arrays = validate_inputs(signature, collect_inputs(signature, inputs, named), self.cast_policy)
        names = signature.output_names if outputs is None else self.requested_outputs(outputs)
        result = self._run(arrays, names)
        try:
            values = [result[name] for name in names]
        except KeyError:
            missing = [name for name in names if name not in result]
            raise ModelError(
                f"{self.describe()}: the backend returned no output(s) {', '.join(map(repr, missing))}"
            ) from None
        return cast(Outputs, named_tuple_type("Outputs", names)._make(values))

    def prepare_inputs(self, inputs: Mapping[str, Any] | NamedTuple | None = None, /, **named) -> dict[str, np.ndarray]:
        """Bind and validate inputs as :meth:`infer` does, without running; returns arrays by tensor name."""
        return validate_inputs(self.signature, collect_inputs(self.signature, inputs, named), self.cast_policy)

    def requested_outputs(self, outputs: Iterable[str] | None) -> tuple[str, ...]:
        """Check a requested output subset against the signature (``None`` means all)."""
        available = self.signature.output_names
        if outputs is None:
            return available
        if isinstance(outputs, str):
            names: tuple[str, ...] = (outputs,)
        elif isinstance(outputs, Iterable) and not isinstance(outputs, (bytes, bytearray)):
            names = tuple(outputs)
        else:
            raise InputError(f"outputs must be output names (a list of str), got {type(outputs).__name__}")
        not_names = [name for name in names if not isinstance(name, str)]
        if not_names:
            raise InputError(f"outputs must be output names (a list of str), got {', '.join(map(repr, not_names))}")
        repeated = sorted({name for name in names if names.count(name) > 1}, key=names.index)
        if repeated:
            raise InputError(f"output(s) {', '.join(map(repr, repeated))} requested more than once")
        unknown = [name for name in names if name not in available]
        if unknown or not names:
            raise InputError(
                f"unknown output(s) {', '.join(map(repr, unknown)) or '(none requested)'}; "
                f"the model's outputs are {', '.join(map(repr, available))}"
            )
        return names

    def close(self) -> None:
        """Release the backend's resources; the interface cannot be used afterwards."""
        return None  # a backend without resources has nothing to release

    def _closed_error(self) -> BackendUnavailableError:
        """The error of a call to a closed interface (one in flight when it was closed included)."""
        return BackendUnavailableError(f"{self.describe()}: the interface has been closed")

    def __enter__(self) -> InferenceInterface:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def __reduce__(self) -> Any:
        """An interface holds a session or a connection, which do not travel between processes."""
        raise TypeError(
            f"{type(self).__name__} cannot be pickled or copied: create one in each process from its options "
            "(create_inference(options))"
        )
