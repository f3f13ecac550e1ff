"""``trkx info MODEL.onnx``: print a model's signature (names, dtypes, shapes, Python field names)."""

from __future__ import annotations

import argparse

from inference_iface import TensorSpec, field_names
from tracking_algs.commands.model_args import add_model_arguments, open_model

NAME = "info"
HELP = "print the inputs and outputs of an ONNX model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``."""
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Open the model and print its signature."""
    with open_model(args) as iface:
        print(iface.describe())
        for title, specs in (("inputs", iface.signature.inputs), ("outputs", iface.signature.outputs)):
            print(f"{title}:")
            for line in format_specs(specs):
                print(f"  {line}")
    return 0


def format_specs(specs: tuple[TensorSpec, ...]) -> list[str]:
    """One aligned line per tensor: name, dtype, shape (``?`` = dynamic) and its Python field name."""
    rows = [
        (spec.name, spec.dtype, "[" + ", ".join("?" if dim < 0 else str(dim) for dim in spec.shape) + "]", field)
        for spec, field in zip(specs, field_names(spec.name for spec in specs), strict=True)
    ]
    widths = [max((len(row[column]) for row in rows), default=0) for column in range(3)]
    return [
        f"{name:<{widths[0]}}  {dtype:<{widths[1]}}  {shape:<{widths[2]}}  field {field}"
        for name, dtype, shape, field in rows
    ]
