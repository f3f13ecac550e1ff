"""``trkx infer MODEL.onnx --input NAME=FILE.npy ...``: run one inference and save the outputs as ``.npz``."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np

from inference_iface import InputError
from tracking_algs.commands.arg_types import npz_file
from tracking_algs.commands.model_args import add_model_arguments, open_model

NAME = "infer"
HELP = "run an ONNX model once on .npy inputs and save its outputs to .npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``."""
    add_model_arguments(parser)
    parser.add_argument(
        "--input",
        "-i",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="one input tensor (by its tensor name) read from a .npy file; repeat for every input",
    )
    parser.add_argument("--output", "-o", type=npz_file, default=Path("outputs.npz"),
                        help="the .npz file to write the outputs into (.npz added to a name without it)")  # fmt: skip
    parser.add_argument("--outputs", nargs="+", metavar="NAME", default=None, help="only these outputs (default: all)")


def run(args: argparse.Namespace) -> int:
    """Read the inputs, run the model once, write one ``.npz`` array per output (keys = tensor names)."""
    inputs: dict[str, np.ndarray] = {}
    for text in args.inputs:
        name, array = read_input(text)
        if name in inputs:
            raise InputError(f"--input {text!r}: input {name!r} is given twice; give each input once")
        inputs[name] = array
    with open_model(args) as iface:
        result = iface.infer(inputs, outputs=args.outputs)
    arrays = {name: portable(array) for name, array in zip(result.tensor_names, result, strict=True)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_npz(args.output, arrays)
    print(f"wrote {args.output}:")
    for name, array in arrays.items():
        print(f"  {name}: {array.dtype} {list(array.shape)}")
    return 0


def read_input(text: str) -> tuple[str, np.ndarray]:
    """Parse ``NAME=FILE.npy`` and load the array (no pickles)."""
    name, sep, file_name = text.partition("=")
    if not sep or not name or not file_name:
        raise InputError(f"--input {text!r} must look like NAME=FILE.npy")
    try:
        return name, np.load(file_name, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # EOFError: an empty file
        raise InputError(f"input {name!r}: cannot read {file_name!r} as a .npy array: {error}") from None


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` into the ``.npz`` file ``path`` (one ``NAME.npy`` member each, as ``np.savez`` does).

    ``np.savez`` takes the arrays as keyword arguments, so an output named like one of its own parameters
    (``file``; ``allow_pickle`` in numpy 2) would clash with it; the archive is therefore written member by member.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def portable(array: np.ndarray) -> np.ndarray:
    """String tensors (numpy object arrays) as fixed-width str/bytes arrays, so the .npz needs no pickle."""
    if array.dtype != object:
        return array
    if array.size and isinstance(array.flat[0], bytes):
        return array.astype(np.bytes_)
    return array.astype(np.str_)
