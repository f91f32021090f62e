"""Load an ONNX model, fix its input shapes and learn the shape of every tensor.

Shapes come from ONNX shape inference (strict off, data propagation on) run on
a *skeleton* of the model: the big initializers replaced by typed graph inputs,
so inference never copies the weights. Where inference leaves gaps (custom
ops, data-dependent shapes), the model runs once in ONNX Runtime on generated
inputs with the unknown tensors added as extra outputs, and the shapes are read
from the results. Real inputs given (``feeds=``) take the place of generated ones;
inputs fixed to values (``fixed_inputs=``) become constants, and control flow they
decide is replaced by the branch taken (:mod:`splitinfer.graph.specialize`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, helper

from splitinfer.errors import ModelError, ShapeError, SplitinferError, first_line
from splitinfer.graph.dynamic import find_dynamic_dims, infer_with, known_dims, open_value_info
from splitinfer.graph.feeds import (
    cannot_run_error,
    check_feed_specs,
    check_given_inputs,
    find_compared_values,
    find_index_bounds,
    generate_feeds,
    shapes_of_given,
)
from splitinfer.graph.inference import create_inference_session
from splitinfer.graph.shapes import fix_input_shapes, read_spec
from splitinfer.graph.specialize import Specialization, check_specialized, quiet_run, specialize
from splitinfer.graph.topology import GraphIndex, index_graph
from splitinfer.types import NUMPY_TO_ONNX, ONNX_TO_NUMPY, TensorSpec

ModelSource = str | Path | bytes | onnx.ModelProto
# Initializers with more elements than this become typed inputs in the skeleton:
# shape inference only needs the values of small (shape-like) constants.
_SKELETON_MAX_ELEMENTS = 1024


class Model:
    """A loaded model with concrete input shapes and known tensor shapes.

    Attributes: ``proto`` (ModelProto with concrete input shapes and inferred
    value_info), ``sha256`` (hex digest of the original serialized bytes),
    ``path`` (file it came from, if any), ``inputs`` / ``outputs``,
    ``opset`` (default-domain opset version), ``uncuttable`` (values that
    cannot cross a cut: sequences, maps, tensors without a numpy dtype),
    ``feeds`` (real values of inputs given at load: :meth:`make_feeds` uses them),
    ``specialization`` (the fixed inputs and what fixing them changed, or None),
    ``dynamic_dims`` (tensor -> the axes whose size depends on the input values, not only on their
    shapes: :mod:`splitinfer.graph.dynamic`; ``tensors`` holds the sizes seen on the load's input).
    """

    def __init__(
        self,
        proto: onnx.ModelProto,
        sha256: str,
        path: Path | None,
        specs: dict[str, TensorSpec],
        uncuttable: set[str],
        feeds: Mapping[str, np.ndarray] | None = None,
        specialization: Specialization | None = None,
        dynamic_dims: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        self.proto = proto
        self.dynamic_dims: Mapping[str, tuple[int, ...]] = dict(dynamic_dims or {})
        self.feeds = dict(feeds or {})
        self.specialization = specialization
        self.sha256 = sha256
        self.path = path
        self._specs = specs
        self.uncuttable = frozenset(uncuttable)
        graph = proto.graph
        init_names = {t.name for t in graph.initializer}
        self.inputs: tuple[TensorSpec, ...] = tuple(
            specs[i.name] for i in graph.input if i.name not in init_names
        )
        self.outputs: tuple[TensorSpec, ...] = tuple(specs[o.name] for o in graph.output)
        self.opset: int = next(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0
        )
        self._index: GraphIndex | None = None
        self._bounds: dict[str, int] | None = None
        self._compared: dict[str, int] | None = None
        self.cache: dict[object, object] = {}  # per-model memo for analysis helpers

    @property
    def name(self) -> str:
        """A short label: the file stem, else the graph name."""
        return self.path.stem if self.path else (self.proto.graph.name or "model")

    @property
    def fixed_inputs(self) -> Mapping[str, np.ndarray]:
        """The inputs the model was specialised to (name -> value; empty when none was fixed)."""
        return self.specialization.fixed if self.specialization is not None else {}

    @property
    def tensors(self) -> Mapping[str, TensorSpec]:
        """Every main-graph tensor whose dtype and shape are known (constants included)."""
        return self._specs

    @property
    def graph_index(self) -> GraphIndex:
        """Producers, consumers and constants of the main graph (built once)."""
        if self._index is None:
            # A varying shape is not known: its Shape must stay a node, not fold to the size seen once.
            shapes = {name: spec.shape for name, spec in self._specs.items() if name not in self.dynamic_dims}
            self._index = index_graph(self.proto.graph, shapes)
        return self._index

    def tensor(self, name: str) -> TensorSpec:
        """The spec of a tensor of the main graph."""
        try:
            return self._specs[name]
        except KeyError:
            raise ModelError(
                f"tensor {name!r} is not in the model (or has no tensor type)",
                "pick a tensor listed by `splitinfer inspect --json MODEL`",
            ) from None

    def make_feeds(self, seed: int = 0, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """The real inputs given at load (``feeds``) where they fit ``batch_size``, the others
        seeded and generated (see :func:`splitinfer.graph.feeds.generate_feeds`)."""
        if self._bounds is None or self._compared is None:
            names = [s.name for s in self.inputs]
            self._bounds = find_index_bounds(self.proto.graph, names)
            self._compared = find_compared_values(self.proto.graph, names)
        feeds = generate_feeds(self.inputs, self._bounds, seed=seed, batch_size=batch_size,
                               values=self._compared)
        feeds.update((k, v) for k, v in self.feeds.items() if v.shape == feeds[k].shape)
        return feeds

    def __repr__(self) -> str:
        return f"Model({self.name!r}, nodes={len(self.proto.graph.node)}, opset={self.opset})"


def load_model(
    source: ModelSource,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    fixed_inputs: Mapping[str, object] | None = None,
) -> Model:
    """Load a model from a path (external data next to it), bytes or a ModelProto.

    ``input_shapes`` fixes input shapes by name; ``batch`` fixes a dynamic
    leading dim of every input. ``feeds``: real values of some inputs (name ->
    array; they fix dynamic dims too): the run that measures shapes inference left
    unknown uses them, as :meth:`Model.make_feeds` does (verification, profiling);
    the other inputs are generated. ``fixed_inputs``: inputs fixed to values (name ->
    number, list or array, cast to the input's dtype): they become constants of the
    model, and every ``If`` they decide is replaced by the branch it takes
    (:func:`~splitinfer.graph.specialize.specialize`); the result is checked against
    the original model on the same inputs before it is returned. Raises
    :class:`ModelError` for files that are not ONNX and :class:`ShapeError` for
    inputs left dynamic, shapes that contradict the model, inputs given that it does
    not take, and a model ONNX Runtime cannot run on the (generated) inputs.
    """
    proto, sha256, path, label = _read(source)
    _name_nodes(proto.graph)
    given, fixed = check_given_inputs(proto.graph, feeds or {}, fixed_inputs or {})
    shapes = {**shapes_of_given(proto.graph, {**given, **fixed}), **(input_shapes or {})}
    fix_input_shapes(proto.graph, shapes, batch)
    original, specialization = None, None
    if fixed:
        original = proto.SerializeToString()
        proto, specialization = specialize(proto, fixed)
        _name_nodes(proto.graph)  # the nodes of an inlined branch may be unnamed
    _clear_inner_shapes(proto.graph)
    skeleton = _make_skeleton(proto)
    _check(skeleton, label)
    inferred = onnx.shape_inference.infer_shapes(
        skeleton, check_type=False, strict_mode=False, data_prop=True
    )
    specs, uncuttable = _collect_specs(inferred.graph, proto.graph)
    proto.graph.value_info.extend(
        vi for vi in inferred.graph.value_info if vi.name in specs or vi.name in uncuttable
    )
    _copy_output_types(inferred.graph, proto.graph)
    inputs = [specs[i.name] for i in proto.graph.input if i.name in specs and i.name not in
              {t.name for t in proto.graph.initializer}]
    check_feed_specs(given, inputs)
    partial = known_dims(inferred.graph)  # before the run below fills the gaps with one input's sizes
    gaps = _find_gaps(proto.graph, specs, uncuttable)
    if gaps:
        _probe_shapes(proto, gaps, specs, uncuttable, _feeds_for(proto.graph, inputs, given), given)
    missing = [o.name for o in proto.graph.output if o.name not in specs]
    if missing:
        raise ShapeError(
            f"cannot tell the shape of model output(s) {', '.join(missing)}",
            "give concrete shapes of the inputs with input_shapes=",
        )
    dynamic = find_dynamic_dims(proto.graph, specs, partial, lambda hints: infer_with(skeleton, hints))
    open_value_info(proto.graph, dynamic)
    model = Model(proto, sha256, path, specs, uncuttable, given, specialization, dynamic)
    if original is not None and specialization is not None:
        feeds_used = model.make_feeds()
        try:
            model.specialization = check_specialized(original, proto, feeds_used, specialization)
        except SplitinferError:
            raise
        except Exception as e:  # ORT's own error types: the original fails on these inputs
            what = f"the original model with {specialization.values()} (to check the specialised one)"
            raise cannot_run_error(e, what, given, feeds_used) from None
    return model


def _feeds_for(graph: onnx.GraphProto, inputs: list[TensorSpec],
               given: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``given`` and, for the other inputs, seeded generated values (as :meth:`Model.make_feeds`)."""
    names = [s.name for s in inputs]
    feeds = generate_feeds(inputs, find_index_bounds(graph, names), values=find_compared_values(graph, names))
    return {**feeds, **given}


def _read(source: ModelSource) -> tuple[onnx.ModelProto, str, Path | None, str]:
    if isinstance(source, onnx.ModelProto):
        data = source.SerializeToString()
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
        return proto, hashlib.sha256(data).hexdigest(), None, "the model"
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return _parse(data, "the model bytes"), hashlib.sha256(data).hexdigest(), None, "the model bytes"
    path = Path(source)
    if not path.exists():
        raise ModelError(f"model file '{path}' does not exist", "check the path")
    if path.is_dir():
        raise ModelError(f"'{path}' is a directory, not an .onnx file", "give the path of the .onnx file")
    data = path.read_bytes()
    proto = _parse(data, f"'{path}'")
    if any(external_data_helper.uses_external_data(t) for t in proto.graph.initializer):
        try:
            external_data_helper.load_external_data_for_model(proto, str(path.parent))
        except Exception as e:  # OSError, ValueError, onnx's ValidationError (a path outside the folder)
            raise ModelError(
                f"cannot read the external data of '{path}': {first_line(e)}",
                "keep the external data files in the .onnx file's folder, named by relative paths",
            ) from None
    return proto, hashlib.sha256(data).hexdigest(), path, f"'{path}'"


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    hint = "export or download the model again; it must be an ONNX (.onnx) file"
    if data[:2] == b"PK":
        hint = "it looks like a zip archive (a PyTorch checkpoint?): export it to ONNX with torch.onnx.export"
    if not data:
        raise ModelError(f"{label} is empty", hint)
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError or RuntimeError by backend
        raise ModelError(f"{label} is not an ONNX model (truncated or another format)", hint) from e
    if not proto.HasField("graph") or not proto.graph.output:
        raise ModelError(f"{label} is not an ONNX model (no graph with outputs)", hint)
    return proto


def _check(skeleton: onnx.ModelProto, label: str) -> None:
    try:
        onnx.checker.check_model(skeleton)
    except (onnx.checker.ValidationError, Exception) as e:
        raise ModelError(
            f"{label} is not a valid ONNX model (truncated or corrupt?): {first_line(e)}",
            "export or download the model again",
        ) from e


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node of the main graph a unique, deterministic name."""
    taken = {n.name for n in graph.node if n.name}
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.name or node.op_type}_{i}"
        name, k = base, 1
        while name in taken or name in seen:
            name, k = f"{base}_{k}", k + 1
        node.name = name
        seen.add(name)
        taken.add(name)


def _clear_inner_shapes(graph: onnx.GraphProto) -> None:
    # Declared intermediate/output shapes were made for the export's shapes, often
    # symbolic or stale: inference recomputes them from the fixed inputs.
    # The rank stays (the checker wants a shape on outputs); the dims become unknown.
    del graph.value_info[:]
    for out in graph.output:
        if out.type.HasField("tensor_type") and out.type.tensor_type.HasField("shape"):
            for d in out.type.tensor_type.shape.dim:
                d.Clear()


def _make_skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    graph = proto.graph
    skel_graph = onnx.GraphProto(name=graph.name)
    skel_graph.node.extend(graph.node)
    skel_graph.input.extend(graph.input)
    skel_graph.output.extend(graph.output)
    skel_graph.sparse_initializer.extend(graph.sparse_initializer)
    input_names = {i.name for i in graph.input}
    for t in graph.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) <= _SKELETON_MAX_ELEMENTS:
            skel_graph.initializer.append(t)
        elif t.name not in input_names:
            skel_graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    skeleton = onnx.ModelProto(
        ir_version=proto.ir_version, producer_name=proto.producer_name, domain=proto.domain,
        model_version=proto.model_version,
    )
    skeleton.opset_import.extend(proto.opset_import)
    skeleton.functions.extend(proto.functions)
    skeleton.graph.CopyFrom(skel_graph)
    return skeleton


def _collect_specs(
    inferred: onnx.GraphProto, graph: onnx.GraphProto
) -> tuple[dict[str, TensorSpec], set[str]]:
    specs: dict[str, TensorSpec] = {}
    uncuttable: set[str] = set()
    for t in graph.initializer:
        spec = read_spec(helper.make_tensor_type_proto(t.data_type, list(t.dims)), t.name)
        if spec is not None:
            specs[t.name] = spec
    for vi in [*inferred.input, *inferred.value_info, *inferred.output]:
        if vi.name in specs:
            continue
        spec = read_spec(vi.type, vi.name)
        if spec is not None:
            specs[vi.name] = spec
        elif vi.type.WhichOneof("value") not in (None, "tensor_type") or _has_odd_dtype(vi.type):
            uncuttable.add(vi.name)
    return specs, uncuttable


def _has_odd_dtype(tp: onnx.TypeProto) -> bool:
    elem = tp.tensor_type.elem_type
    return elem != 0 and elem not in ONNX_TO_NUMPY


def _copy_output_types(inferred: onnx.GraphProto, graph: onnx.GraphProto) -> None:
    by_name = {o.name: o for o in inferred.output}
    for out in graph.output:
        if out.name in by_name and read_spec(by_name[out.name].type, out.name) is not None:
            out.type.CopyFrom(by_name[out.name].type)


def _find_gaps(graph: onnx.GraphProto, specs: Mapping[str, TensorSpec], uncuttable: set[str]) -> list[str]:
    gaps = [o for n in graph.node for o in n.output if o and o not in specs and o not in uncuttable]
    return list(dict.fromkeys(gaps))


def _probe_shapes(
    proto: onnx.ModelProto, gaps: list[str], specs: dict[str, TensorSpec], uncuttable: set[str],
    feeds: dict[str, np.ndarray], given: Mapping[str, np.ndarray],
) -> None:
    """Run the model once on ``feeds`` with the unknown tensors as extra outputs; read their shapes."""
    graph = proto.graph
    declared = {o.name for o in graph.output}
    extra = [g for g in gaps if g not in declared]
    num_outputs = len(graph.output)
    graph.output.extend(onnx.ValueInfoProto(name=g) for g in extra)
    try:
        session = create_inference_session(proto.SerializeToString(), optimize=False)
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, feeds, quiet_run())
    except SplitinferError:
        raise
    except Exception as e:  # ORT raises its own exception types per failure
        what = f"the model (to measure {len(gaps)} tensor shape(s) shape inference left unknown)"
        raise cannot_run_error(e, what, given, feeds) from None
    finally:
        del graph.output[num_outputs:]
    for name, value in zip(names, values, strict=True):
        if name not in gaps:
            continue
        if isinstance(value, np.ndarray) and value.dtype.name in NUMPY_TO_ONNX:
            specs[name] = TensorSpec(name, value.dtype.name, tuple(int(d) for d in value.shape))
            elem = NUMPY_TO_ONNX[value.dtype.name]
            graph.value_info.append(helper.make_tensor_value_info(name, elem, value.shape))
        else:
            uncuttable.add(name)

