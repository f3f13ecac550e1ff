"""Arguments shared by the commands that open one model (``trkx info``, ``trkx infer``)."""

from __future__ import annotations

import argparse

from inference_iface import InferenceInterface, create_inference
from inference_iface.options import parse_override


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``MODEL`` and ``--backend-option key=value`` (repeatable) to ``parser``."""
    parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX model file")
    parser.add_argument(
        "--backend-option",
        "-O",
        dest="backend_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the onnxruntime backend, value in TOML syntax (device=cpu, intra_op_threads=2, "
        "cast_policy=safe); repeatable",
    )


def open_model(args: argparse.Namespace) -> InferenceInterface:
    """The inference interface for ``args.model`` with ``args.backend_options`` applied."""
    options: dict[str, object] = {"backend": "onnxruntime", "model_path": args.model}
    for text in args.backend_options:
        path, value = parse_override(text)
        options[".".join(path)] = value
    return create_inference(options)
