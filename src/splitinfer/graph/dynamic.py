"""Tensors whose shape depends on the input *values*, not only on the input shapes, and which axes vary.

``load_model`` fixes every input shape, so most shapes are known before anything runs. A few ops make
sizes from values: NonZero's count, the boxes NonMaxSuppression keeps, TopK with a computed K, a
Reshape to a computed shape. The load measures those shapes on one input (``_specs.probe_shapes``); the
size it saw is only that input's. This module marks them, so that partitions leave those dims open
(``dim_param``) and stage specs say -1 there, and so that ``Shape`` of such a tensor is never folded
into a constant.

Rules, in one pass over the main graph in file (topological) order:

* **constant**: an initializer, the output of a node whose inputs are all constants (random ops
  never), or ``Shape`` / ``Size`` of a tensor whose shape is static (not marked). Constants never vary.
* **sources**: NonZero (axis 1), NonMaxSuppression (axis 0), Unique (values, indices, counts along
  its axis), Compress with a computed condition (its axis), TopK with a computed K (its axis),
  OneHot with a computed depth (the new axis), Range with computed bounds; Loop whose trip count or
  condition is computed (scan outputs along axis 0); If with a computed condition (the axes on which
  its branches disagree); and the ops that take a shape as a value (Reshape, Expand, Tile,
  ConstantOfShape, Slice, Pad, Resize, Upsample, Split, Squeeze, Unsqueeze, CenterCropPad, ...)
  when that input is computed: every axis ONNX shape inference could not tell, else every axis.
* **propagation**: a node with a marked input marks, of each output, the axes ONNX shape inference
  (run before the load's measuring run, without values) left unknown; every axis when it did not even
  give a rank; none when it knew every dim (a ReduceSum over the varying axis, a Shape: its rank is fixed).
  Where ONNX's inference of a source knows less than its rule (TopK with a computed K: every dim
  unknown), inference runs once more with the source's shape declared, so that what follows is not
  marked for the axes inference lost.

The rank of a marked tensor is assumed fixed (a computed Squeeze axes list would break that: rare).
Sequences and other non-tensor values made from marked tensors pass the mark on but are not listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import onnx
from onnx import helper

from splitinfer.graph.topology import RANDOM_OPS, list_implicit_inputs, list_subgraphs
from splitinfer.types import NUMPY_TO_ONNX, TensorSpec

# Ops that take a shape (or sizes, repeats, bounds) as a value: input positions that decide the output shape.
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4), "Pad": (1, 3), "Resize": (2, 3), "Upsample": (1,), "Split": (1,),
    "Squeeze": (1,), "Unsqueeze": (1,), "CenterCropPad": (1, 2), "MaxUnpool": (2,), "Col2Im": (1, 2),
    "DFT": (1,), "STFT": (3,),
}
# A rule for an output: the axes that vary by the op's own logic, or one of these words.
BY_INFERENCE = "inference"  # the axes ONNX shape inference left unknown (none when it knew them all)
AS_SHAPE = "shape"  # those axes; every axis when inference knew them all (it did not see the value)
Rule = tuple[int, ...] | str
Dims = Mapping[str, tuple[int | None, ...]]  # what shape inference knew of each tensor: None = unknown


def known_dims(graph: onnx.GraphProto) -> dict[str, tuple[int | None, ...]]:
    """What ONNX shape inference said of each main-graph tensor: dims, None where it could not tell.

    Read from an inferred graph *before* any run fills the gaps; a tensor absent had no known rank.
    """
    dims: dict[str, tuple[int | None, ...]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        tt = vi.type.tensor_type if vi.type.WhichOneof("value") == "tensor_type" else None
        if tt is not None and tt.HasField("shape"):
            dims[vi.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
    return dims


def infer_with(skeleton: onnx.ModelProto, declared: list[onnx.ValueInfoProto]) -> Dims:
    """:func:`known_dims` after ONNX shape inference (as the load runs it) with ``declared`` shapes added."""
    copy = onnx.ModelProto()
    copy.CopyFrom(skeleton)
    copy.graph.value_info.extend(declared)
    inferred = onnx.shape_inference.infer_shapes(copy, check_type=False, strict_mode=False, data_prop=True)
    return known_dims(inferred.graph)


def find_dynamic_dims(graph: onnx.GraphProto, specs: Mapping[str, TensorSpec], inferred: Dims,
                      reinfer: Callable[[list[onnx.ValueInfoProto]], Dims] | None = None
                      ) -> dict[str, tuple[int, ...]]:
    """Tensor -> its axes whose size depends on the input values (see the module's rules).

    ``specs``: every tensor as seen (inferred or measured); ``inferred``: what shape inference alone
    knew (:func:`known_dims`). Only tensors in ``specs`` are listed. ONNX's inference of some sources
    knows less than their rule (TopK with a computed K: every dim unknown, not only K's axis), and
    everything after them would be marked for it: ``reinfer(value_infos)`` runs shape inference again
    with those outputs declared (a ``dim_param`` on the rule's axes, the seen sizes elsewhere).
    """
    dynamic, hints = _mark(graph, specs, inferred)
    if hints and reinfer is not None:
        dynamic, _ = _mark(graph, specs, reinfer(hints))
    return dynamic


def _mark(graph: onnx.GraphProto, specs: Mapping[str, TensorSpec], inferred: Dims
          ) -> tuple[dict[str, tuple[int, ...]], list[onnx.ValueInfoProto]]:
    """The marked tensors, and the sources whose rule knows more than ``inferred`` (as value infos)."""
    constant = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    dynamic: dict[str, tuple[int, ...]] = {}
    hints: list[onnx.ValueInfoProto] = []
    tainted: set[str] = set()  # marked values with no tensor shape (sequences): they pass the mark on
    for node in graph.node:
        inputs = [i for i in node.input if i] + list(list_implicit_inputs(node))
        outputs = [o for o in node.output if o]
        if node.op_type not in RANDOM_OPS and all(i in constant for i in inputs):
            constant.update(outputs)
            continue
        if node.domain in ("", "ai.onnx") and node.op_type in ("Shape", "Size"):
            if node.input[0] in specs and node.input[0] not in dynamic:
                constant.update(outputs)  # folded, as GraphIndex folds it
            continue  # a fixed rank (Shape) or a scalar (Size): never marked
        rules = _source_rules(node, constant) if node.domain in ("", "ai.onnx") else {}
        fed = any(i in dynamic or i in tainted for i in inputs)
        for pos, name in enumerate(node.output):
            if not name or (pos not in rules and not fed):
                continue
            if name not in specs:
                tainted.add(name)
                continue
            rank = len(specs[name].shape)
            unknown = _unknown_axes(inferred.get(name), rank)
            rule = rules.get(pos, BY_INFERENCE)
            if isinstance(rule, tuple):  # the op's own axes (and what a varying input adds)
                axes = {a % rank for a in rule if rank} | (unknown if fed else set())
                if unknown - axes:
                    hints.append(value_info(open_spec(specs[name], tuple(axes)),
                                            NUMPY_TO_ONNX[specs[name].dtype]))
            else:
                axes = unknown or (set(range(rank)) if rule == AS_SHAPE else set())
            if axes:
                dynamic[name] = tuple(sorted(axes))
    return dynamic, hints


def _unknown_axes(dims: tuple[int | None, ...] | None, rank: int) -> set[int]:
    if dims is None or len(dims) != rank:
        return set(range(rank))
    return {a for a, d in enumerate(dims) if d is None}


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _computed(node: onnx.NodeProto, positions: tuple[int, ...], constant: set[str]) -> bool:
    return any(p < len(node.input) and node.input[p] and node.input[p] not in constant for p in positions)


def _source_rules(node: onnx.NodeProto, constant: set[str]) -> dict[int, Rule]:
    """Output position -> the axes that vary by the op's own logic, or BY_INFERENCE / AS_SHAPE.
    Empty for a node that makes no size from values."""
    op = node.op_type
    if op == "NonZero":
        return {0: (1,)}
    if op == "NonMaxSuppression":
        return {0: (0,)}
    if op == "Unique":
        axis = _attr(node, "axis", 0)  # without the attribute the input is flattened: axis 0 of a 1-d output
        return {0: (axis,), 1: (0,), 3: (0,)}
    if op == "Compress" and _computed(node, (1,), constant):
        return {0: (_attr(node, "axis", 0),)}
    if op == "TopK" and _computed(node, (1,), constant):
        axis = _attr(node, "axis", -1)
        return {0: (axis,), 1: (axis,)}
    if op == "OneHot" and _computed(node, (1,), constant):
        return {0: (_attr(node, "axis", -1),)}
    if op == "Loop" and _loop_varies(node, constant):
        # Scan outputs stack one slice per iteration; a carried value keeps its shape unless the body
        # changes it, which shape inference shows as unknown dims.
        num_carried = len(node.input) - 2
        return {pos: (0,) if pos >= num_carried else BY_INFERENCE for pos in range(len(node.output))}
    if op == "If" and _computed(node, (0,), constant):
        return dict.fromkeys(range(len(node.output)), BY_INFERENCE)  # where the branches' shapes disagree
    if op in SHAPE_INPUTS and _computed(node, SHAPE_INPUTS[op], constant):
        return dict.fromkeys(range(len(node.output)), AS_SHAPE)
    return {}


def _loop_varies(node: onnx.NodeProto, constant: set[str]) -> bool:
    """A Loop runs a number of times its inputs' values decide: a computed trip count or condition, or
    a body that computes its condition (a while loop) rather than passing it on or holding a constant."""
    trip = node.input[0] if node.input else ""
    cond = node.input[1] if len(node.input) > 1 else ""
    if not trip or trip not in constant or (cond and cond not in constant):
        return True
    body = next(iter(list_subgraphs(node)), None)
    if body is None or len(body.input) < 2 or not body.output:
        return True
    out, cond_in = body.output[0].name, body.input[1].name
    made = {o: n for n in body.node for o in n.output}
    producer = made.get(out)
    while producer is not None and producer.op_type == "Identity":
        out = producer.input[0]
        producer = made.get(out)
    held = {t.name for t in body.initializer}
    return not (out == cond_in or out in held or (producer is not None and producer.op_type == "Constant"))


def open_spec(spec: TensorSpec, axes: tuple[int, ...]) -> TensorSpec:
    """The spec a stage declares for a tensor whose ``axes`` vary: -1 there, the sizes seen kept."""
    if not axes:
        return spec
    shape = tuple(-1 if a in axes else d for a, d in enumerate(spec.shape))
    return TensorSpec(spec.name, spec.dtype, shape, seen=spec.shape)


def dim_name(tensor: str, axis: int) -> str:
    """The ``dim_param`` of a varying dim: one symbol per tensor and axis (no equality implied)."""
    return f"{tensor}_dim{axis}"


def value_info(spec: TensorSpec, elem_type: int) -> onnx.ValueInfoProto:
    """A ValueInfoProto with a ``dim_param`` where the spec's dim is negative (varies)."""
    dims: list[int | str] = [d if d >= 0 else dim_name(spec.name, a) for a, d in enumerate(spec.shape)]
    return helper.make_tensor_value_info(spec.name, elem_type, dims)


def open_value_info(graph: onnx.GraphProto, dynamic: Mapping[str, tuple[int, ...]]) -> None:
    """Replace the measured sizes of varying dims in ``graph.value_info`` (and of the graph's inputs and
    outputs) by ``dim_param`` symbols, so that the model as loaded declares no size it saw on one input
    only."""
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        axes = dynamic.get(vi.name)
        if not axes or vi.type.WhichOneof("value") != "tensor_type":
            continue
        for a, dim in enumerate(vi.type.tensor_type.shape.dim):
            if a in axes:
                dim.Clear()
                dim.dim_param = dim_name(vi.name, a)
