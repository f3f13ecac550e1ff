"""Real ONNX models built with ``onnx.helper`` for the tests and benchmarks.

Each builder writes one ``.onnx`` file into the directory it is given and returns its path. These are
plain functions (not fixtures) so benchmarks and other test modules can call them too.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: ONNX opset used by every model here (supported by the installed onnxruntime).
OPSET = 17

#: Interface dtype name → ONNX element type, for every dtype ONNX Runtime's CPU provider runs through Identity.
ONNX_TYPES: dict[str, int] = {
    "bool": TensorProto.BOOL,
    "int8": TensorProto.INT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8,
    "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
    "bytes": TensorProto.STRING,
}


def _save(graph: onnx.GraphProto, directory: str | Path, file_name: str) -> Path:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="inference-iface tests"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = Path(directory) / file_name
    onnx.save(model, path)
    return path


def two_in_two_out(directory: str | Path) -> Path:
    """Inputs ``"input.1"`` and ``"y:0"`` (float32 [?, 3]); outputs ``"sum"`` and ``"prod:0"`` (element-wise)."""
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 3]) for name in ("input.1", "y:0")]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 3]) for name in ("sum", "prod:0")]
    nodes = [
        helper.make_node("Add", ["input.1", "y:0"], ["sum"]),
        helper.make_node("Mul", ["input.1", "y:0"], ["prod:0"]),
    ]
    return _save(helper.make_graph(nodes, "two_in_two_out", inputs, outputs), directory, "two_in_two_out.onnx")


def identity_model(directory: str | Path, dtype_name: str, shape: tuple[int | str | None, ...] = ("n", 2)) -> Path:
    """``"out:0" = Identity("in.0")`` for tensors of interface dtype ``dtype_name`` (a key of :data:`ONNX_TYPES`)."""
    element_type = ONNX_TYPES[dtype_name]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["in.0"], ["out:0"])],
        f"identity_{dtype_name}",
        [helper.make_tensor_value_info("in.0", element_type, list(shape))],
        [helper.make_tensor_value_info("out:0", element_type, list(shape))],
    )
    return _save(graph, directory, f"identity_{dtype_name}.onnx")


def copies_model(directory: str | Path, names: tuple[str, ...]) -> Path:
    """One output per name in ``names``, each an ``Identity`` of the input ``"x"`` (float32 [n])."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], [name]) for name in names],
        "copies",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n"]) for name in names],
    )
    return _save(graph, directory, "copies.onnx")


def fixed_shape_model(directory: str | Path) -> Path:
    """Fixed dims: ``"x"`` float32 [2, 4] and ``"scale"`` float32 [4] → ``"scaled"`` [2, 4] = x * scale,
    and ``"total"`` float32 [2] = row sums of ``scaled``."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "scale"], ["scaled"]),
            helper.make_node("ReduceSum", ["scaled", "axes"], ["total"], keepdims=0),
        ],
        "fixed_shape",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, [2]),
        ],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return _save(graph, directory, "fixed_shape.onnx")


def mixed_dtypes_model(directory: str | Path) -> Path:
    """Inputs of several dtypes at once: ``"hits/x"`` float32 [?, 3], ``"ids"`` int64 [?], ``"mask"`` bool [?]
    → ``"scaled"`` float64 [?, 3] (x cast up, doubled), ``"ids+1"`` int64 [?], ``"not mask"`` bool [?]."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["hits/x"], ["x64"], to=TensorProto.DOUBLE),
            helper.make_node("Add", ["x64", "x64"], ["scaled"]),
            helper.make_node("Add", ["ids", "one"], ["ids+1"]),
            helper.make_node("Not", ["mask"], ["not mask"]),
        ],
        "mixed_dtypes",
        [
            helper.make_tensor_value_info("hits/x", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["m"]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["m"]),
        ],
        [
            helper.make_tensor_value_info("scaled", TensorProto.DOUBLE, ["n", 3]),
            helper.make_tensor_value_info("ids+1", TensorProto.INT64, ["m"]),
            helper.make_tensor_value_info("not mask", TensorProto.BOOL, ["m"]),
        ],
        initializer=[numpy_helper.from_array(np.array(1, dtype=np.int64), "one")],
    )
    return _save(graph, directory, "mixed_dtypes.onnx")


def mlp_model(
    directory: str | Path, file_name: str, widths: tuple[int, ...], seed: int = 0, input_name: str = "features"
) -> Path:
    """A float32 MLP ``widths[0] → ... → widths[-1]`` (ReLU between layers) with a dynamic batch dimension.

    Input ``input_name`` [?, widths[0]], output ``"embedding"`` [?, widths[-1]]; weights drawn from ``seed``.
    """
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current = input_name
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (0.1 * rng.standard_normal(fan_out)).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{layer}"), numpy_helper.from_array(bias, f"b{layer}")]
        last = layer == len(widths) - 2
        target = "embedding" if last else f"h{layer}"
        nodes.append(helper.make_node("Gemm", [current, f"w{layer}", f"b{layer}"], [target]))
        if not last:
            nodes.append(helper.make_node("Relu", [target], [f"a{layer}"]))
            target = f"a{layer}"
        current = target
    graph = helper.make_graph(
        nodes,
        Path(file_name).stem,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", widths[0]])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", widths[-1]])],
        initializer=initializers,
    )
    return _save(graph, directory, file_name)


def small_mlp(directory: str | Path) -> Path:
    """The benchmark's small model: 3 → 8 (one layer), run on 1000 rows."""
    return mlp_model(directory, "small_mlp.onnx", (3, 8))


def medium_mlp(directory: str | Path) -> Path:
    """The benchmark's medium model: 12 → 64 → 64 → 8, run on 100 000 rows (an embedding-sized MLP)."""
    return mlp_model(directory, "medium_mlp.onnx", (12, 64, 64, 8))


def corrupt_model(directory: str | Path) -> Path:
    """A file named ``.onnx`` that is not an ONNX model."""
    path = Path(directory) / "corrupt.onnx"
    path.write_bytes(b"this is not a protobuf model\x00\x01")
    return path


def colliding_names_model(directory: str | Path) -> Path:
    """Inputs whose field names collide: ``"a.b"``, ``"a:b"`` and ``"a_b_2"`` (float32 [?]);
    outputs ``"a.b+1"`` = a.b + 1, ``"a:b*2"`` = a:b * 2 and ``"a_b_2-3"`` = a_b_2 - 3, so a mix-up shows."""
    names = ("a.b", "a:b", "a_b_2")
    outputs = ("a.b+1", "a:b*2", "a_b_2-3")
    ops = ("Add", "Mul", "Sub")
    constants = (1.0, 2.0, 3.0)
    graph = helper.make_graph(
        [
            helper.make_node(op, [name, f"c{index}"], [out])
            for index, (name, out, op) in enumerate(zip(names, outputs, ops, strict=True))
        ],
        "colliding_names",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n"]) for name in names],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n"]) for name in outputs],
        initializer=[
            numpy_helper.from_array(np.array(value, dtype=np.float32), f"c{index}")
            for index, value in enumerate(constants)
        ],
    )
    return _save(graph, directory, "colliding_names.onnx")


def flatten_model(directory: str | Path) -> Path:
    """``"x"`` float32 [n, 16] → ``"flat"`` float32 [16·n] (Reshape to one dimension): an output whose dynamic
    size is not any input's leading dimension."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "flat_shape"], ["flat"])],
        "flatten",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["n16"])],
        initializer=[numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat_shape")],
    )
    return _save(graph, directory, "flatten.onnx")


def float8_input_model(directory: str | Path) -> Path:
    """An input of ONNX type float8e4m3fn (which the interface has no dtype for), cast to float32."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x8"], ["y"], to=TensorProto.FLOAT)],
        "float8_input",
        [helper.make_tensor_value_info("x8", TensorProto.FLOAT8E4M3FN, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path = Path(directory) / "float8_input.onnx"
    onnx.save(model, path)
    return path


def served_chain_with_edges(directory: str | Path, edges: np.ndarray, scores: np.ndarray, label: int = -1) -> Path:
    """The served chain's tensors (``FEATURES`` float64 [N, 8], ``HIT_ID`` int64 [N] → ``LABELS`` int64 [N],
    ``GNN_EDGES`` int64 [2, E], ``GNN_SCORES`` float32 [E]): every row labelled ``label`` and the given ``edges``
    and ``scores`` whatever the event (a server that answers with them)."""
    inputs = [helper.make_tensor_value_info("FEATURES", TensorProto.DOUBLE, ["n", 8]),
              helper.make_tensor_value_info("HIT_ID", TensorProto.INT64, ["n"])]  # fmt: skip
    outputs = [helper.make_tensor_value_info("LABELS", TensorProto.INT64, ["n"]),
               helper.make_tensor_value_info("GNN_EDGES", TensorProto.INT64, [2, "e"]),
               helper.make_tensor_value_info("GNN_SCORES", TensorProto.FLOAT, ["s"])]  # fmt: skip
    nodes = [
        helper.make_node("Constant", [], ["label"], value=numpy_helper.from_array(np.array(label, np.int64))),
        helper.make_node("Sub", ["HIT_ID", "HIT_ID"], ["zero"]),
        helper.make_node("Add", ["zero", "label"], ["LABELS"]),
        helper.make_node("Constant", [], ["GNN_EDGES"], value=numpy_helper.from_array(edges.astype(np.int64))),
        helper.make_node("Constant", [], ["GNN_SCORES"], value=numpy_helper.from_array(scores.astype(np.float32))),
    ]
    return _save(helper.make_graph(nodes, "served_chain_with_edges", inputs, outputs), directory, "served_chain.onnx")


def element_type_model(directory: str | Path, element_type: int) -> Path:
    """``"y" = Identity("x")`` for tensors of ONNX element type ``element_type`` (any number: written unchecked, so
    UNDEFINED, 0, can be too)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "element_type",
        [helper.make_tensor_value_info("x", element_type, [2])],
        [helper.make_tensor_value_info("y", element_type, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    path = Path(directory) / f"element_type_{element_type}.onnx"
    onnx.save(model, path)
    return path


def external_data_model(directory: str | Path, location: str = "weights/medium_mlp.bin") -> Path:
    """:func:`medium_mlp` saved with every initializer in one external data file at ``location`` (relative to the
    model), in a directory of its own under ``directory``: ``external_data/medium_mlp.onnx``."""
    model = onnx.load(medium_mlp(directory))
    path = Path(directory) / "external_data" / "medium_mlp.onnx"
    data = path.parent / location
    data.parent.mkdir(parents=True, exist_ok=True)
    data.unlink(missing_ok=True)  # onnx.save appends to a data file that exists
    onnx.save(
        model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    return path
