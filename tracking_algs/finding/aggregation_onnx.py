"""The ONNX form of the GNN's sum + max aggregation (``trkx::sum_max_aggregate``) that ONNX Runtime runs fast.

The plain export of ``scatter_add``/``scatter_reduce`` is ``ScatterElements(reduction="add"/"max")``, which
ONNX Runtime's CPU provider runs one element at a time (about 1.5 s for 1M edges × 32 features, three
quarters of the whole GNN on a pile-up-200 event). ``ScatterND`` with a reduction is fast but runs its
slices on several threads without guarding repeated indices, so its sums are wrong on multi-core sessions
(microsoft/onnxruntime#18048). This form therefore moves the messages only with gathers and reductions:

* **layout**, built once per edge direction (the export keeps one copy for every iteration): the edges
  sorted by target node (``TopK``); each node's edges laid out in blocks of :data:`BLOCK` slots, padded
  with a zero row; then each node's blocks laid out in ``K`` slots, ``K`` the largest block count. The
  integer tables come from 1-D ``ScatterElements`` over the E edges (node counts, slot tables), whose
  single-threaded kernel is exact and cheap at this size;
* **per aggregation**: one ``Gather`` of the messages into the blocks, ``ReduceSum`` and ``ReduceMax``
  over each block, one ``Gather`` of the block results per node and a second ``ReduceSum``/``ReduceMax``.

The result is the same as the scatter form: the sum (in another order, so equal to float32 rounding) and
the max over the messages and 0 (``Relu`` of the block max), 0 for a node without edges.
"""

from __future__ import annotations

from onnxscript import INT64
from onnxscript import opset18 as op

#: Edges per block of the first reduction level.
BLOCK = 8


def _layout(index, n_nodes):
    """Gather tables of the two reduction levels for target ``index`` [E] and ``n_nodes`` ([1] int64).

    ``first`` [B·BLOCK] holds, slot by slot, the edge whose message fills it (E: the zero row);
    ``second`` [N·K] holds, node by node, its blocks (B: the zero row); ``width`` is ``[K]``.
    """
    zero, one = op.Constant(value_ints=[0]), op.Constant(value_ints=[1])
    block = op.Constant(value_ints=[BLOCK])
    n_edges = op.Shape(index)
    target, order = op.TopK(index, n_edges, largest=0, sorted=1)
    counts = op.ScatterElements(op.Expand(zero, n_nodes), index, op.Expand(one, n_edges), reduction="add")
    starts = op.CumSum(counts, op.Constant(value_int=0), exclusive=1)
    rank = op.Sub(op.Range(op.Constant(value_int=0), op.Squeeze(n_edges), op.Constant(value_int=1)),
                  op.Gather(starts, target))  # fmt: skip
    blocks = op.Div(op.Add(counts, op.Constant(value_ints=[BLOCK - 1])), block)
    block_starts = op.CumSum(blocks, op.Constant(value_int=0), exclusive=1)
    n_blocks = op.ReduceSum(blocks, keepdims=1)
    edge_block = op.Gather(block_starts, target)
    first = op.ScatterElements(op.Expand(n_edges, op.Mul(n_blocks, block)),
                               op.Add(op.Mul(edge_block, block), rank), order)  # fmt: skip
    width = op.Max(op.ReduceMax(blocks, keepdims=1), one)
    local = op.Div(rank, block)
    second = op.ScatterElements(op.Expand(n_blocks, op.Mul(n_nodes, width)),
                                op.Add(op.Mul(target, width), local), op.Add(edge_block, local),
                                reduction="min")  # fmt: skip
    return first, second, width


def sum_max_aggregate(messages, index, rows):
    """Translation of ``trkx::sum_max_aggregate(messages [E, H], index [E], rows [N, ·])`` → (sum, max) [N, H]."""
    n_nodes = op.Shape(rows, start=0, end=1)
    hidden = op.Shape(messages, start=1, end=2)
    first, second, width = _layout(op.Cast(index, to=INT64.dtype), n_nodes)
    zero_row = op.Expand(
        op.CastLike(op.Constant(value_float=0.0), messages), op.Concat(op.Constant(value_ints=[1]), hidden, axis=0)
    )
    slots = op.Gather(op.Concat(messages, zero_row, axis=0), first)
    slots = op.Reshape(slots, op.Concat(op.Constant(value_ints=[-1, BLOCK]), hidden, axis=0))
    axis = op.Constant(value_ints=[1])
    per_node = op.Concat(n_nodes, width, hidden, axis=0)
    results = []
    for reduce in (op.ReduceSum, op.ReduceMax):
        blocks = op.Concat(reduce(slots, axis, keepdims=0), zero_row, axis=0)
        results.append(reduce(op.Reshape(op.Gather(blocks, second), per_node), axis, keepdims=0))
    return results[0], op.Relu(results[1])
