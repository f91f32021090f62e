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

from splitinfer.errors import ModelError, ShapeError, SplitinferError, first_line
from splitinfer.graph._specs import (
    clear_inner_shapes,
    collect_specs,
    copy_output_types,
    find_gaps,
    make_skeleton,
    probe_shapes,
)
from splitinfer.graph.dynamic import find_dynamic_dims, infer_with, known_dims, open_value_info
from splitinfer.graph.external import (
    INLINE_MAX_BYTES,
    PROTOBUF_LIMIT_BYTES,
    check_external,
    external_bytes,
    inline_small,
    uses_external,
)
from splitinfer.graph.feeds import (
    cannot_run_error,
    check_feed_specs,
    check_given_inputs,
    find_compared_values,
    find_index_bounds,
    generate_feeds,
    shapes_of_given,
)
from splitinfer.graph.shapes import fix_input_shapes
from splitinfer.graph.sizes import at_size, check_sizes, describe_size, find_symbolic_dims, merge_dims
from splitinfer.graph.specialize import Specialization, check_specialized, specialize
from splitinfer.graph.state import StatePair, decoder_sizes, find_state
from splitinfer.graph.topology import GraphIndex, index_graph
from splitinfer.types import TensorSpec

ModelSource = str | Path | bytes | onnx.ModelProto


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
    shapes: :mod:`splitinfer.graph.dynamic`; ``tensors`` holds the sizes seen on the load's input),
    ``symbolic_dims`` (tensor -> the axes that follow the input sizes the model serves:
    :mod:`splitinfer.graph.sizes`), ``sizes`` (those input sizes, the one loaded first; only that one
    when the shapes were fixed), ``external_dir`` (the folder of the weights left on disk as external
    data, :mod:`splitinfer.graph.external`; None when every weight is in ``proto``).
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
        symbolic_dims: Mapping[str, tuple[int, ...]] | None = None,
        sizes: Sequence[Mapping[str, tuple[int, ...]]] = (),
        external_dir: Path | None = None,
    ) -> None:
        self.proto = proto
        self.external_dir = external_dir
        self.dynamic_dims: Mapping[str, tuple[int, ...]] = dict(dynamic_dims or {})
        self.symbolic_dims: Mapping[str, tuple[int, ...]] = dict(symbolic_dims or {})
        # The axes partitions leave open: data-dependent or following the input sizes served.
        self.open_dims: Mapping[str, tuple[int, ...]] = merge_dims(self.dynamic_dims, self.symbolic_dims)
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
        own = {s.name: tuple(s.shape) for s in self.inputs}
        self.sizes: tuple[dict[str, tuple[int, ...]], ...] = tuple(
            {**own, **{k: tuple(v) for k, v in size.items()}} for size in sizes) or (own,)
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
    def state(self) -> tuple[StatePair, ...]:
        """Its state pairs (a decoder's cache, :mod:`splitinfer.graph.state`): inputs fed back from
        outputs at the next call, kept on the device whose partition computes them."""
        if "state" not in self.cache:
            self.cache["state"] = find_state(self.proto.graph)
        return self.cache["state"]  # type: ignore[return-value]

    @property
    def tensors(self) -> Mapping[str, TensorSpec]:
        """Every main-graph tensor whose dtype and shape are known (constants included)."""
        return self._specs

    @property
    def graph_index(self) -> GraphIndex:
        """Producers, consumers and constants of the main graph (built once)."""
        if self._index is None:
            # A varying shape is not known: its Shape must stay a node, not fold to the size seen once.
            open_dims = self.open_dims
            shapes = {name: spec.shape for name, spec in self._specs.items() if name not in open_dims}
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

    def make_feeds(self, seed: int = 0, batch_size: int | None = None,
                   shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
        """The real inputs given at load (``feeds``) where they fit ``batch_size``, the others
        seeded and generated (see :func:`splitinfer.graph.feeds.generate_feeds`); ``shapes``: at
        another size the model serves (one of ``sizes``) instead of the one loaded."""
        if self._bounds is None or self._compared is None:
            names = [s.name for s in self.inputs]
            self._bounds = find_index_bounds(self.proto.graph, names)
            self._compared = find_compared_values(self.proto.graph, names)
        inputs = at_size(self.inputs, shapes) if shapes is not None else self.inputs
        feeds = generate_feeds(inputs, self._bounds, seed=seed, batch_size=batch_size, values=self._compared)
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
    sizes: Sequence[Mapping[str, Sequence[int]]] | None = None,
    weights_on_disk: bool | None = None,
) -> Model:
    """Load a model from a path (external data next to it), bytes or a ModelProto.

    ``weights_on_disk``: a model saved with external data keeps its weights there (read range by
    range when partitions are written or verified: ``graph/external.py``) instead of in memory. None:
    only when they exceed what one protobuf holds (2 GiB), since the paths that run the whole model in
    one inference session (profiling, quantising, evaluating) need them in memory; inspecting,
    splitting and verifying work either way.

    A decoder with a cache (graph/state.py) given no shapes is loaded at its prefill (16 tokens, empty
    caches) and at decode steps (one token after 16 and after 128 tokens):
    :func:`~splitinfer.graph.state.decoder_sizes`.

    ``input_shapes`` fixes input shapes by name; ``batch`` fixes a dynamic
    leading dim of every input. ``feeds``: real values of some inputs (name ->
    array; they fix dynamic dims too): the run that measures shapes inference left
    unknown uses them, as :meth:`Model.make_feeds` does (verification, profiling);
    the other inputs are generated. ``fixed_inputs``: inputs fixed to values (name ->
    number, list or array, cast to the input's dtype): they become constants of the
    model, and every ``If`` they decide is replaced by the branch it takes
    (:func:`~splitinfer.graph.specialize.specialize`); the result is checked against
    the original model on the same inputs before it is returned. ``sizes``: further input shapes
    (mappings as ``input_shapes``, completed by it) the model must also serve: it is loaded at each,
    and the axes whose size differs stay open (``Model.symbolic_dims``, :mod:`splitinfer.graph.sizes`).
    Raises
    :class:`ModelError` for files that are not ONNX and :class:`ShapeError` for
    inputs left dynamic, shapes that contradict the model, inputs given that it does
    not take, and a model ONNX Runtime cannot run on the (generated) inputs.
    """
    proto, sha256, path, label = _read(source, weights_on_disk)
    pairs = find_state(proto.graph)
    defaults = decoder_sizes(proto.graph, pairs) \
        if sizes is None and not input_shapes and batch is None and not feeds else None
    if defaults is not None:  # a decoder with nothing given: at its prefill and decode steps of two pasts
        input_shapes, sizes = defaults[0], defaults[1:]
    wanted = check_sizes(sizes)
    _name_nodes(proto.graph)
    given, fixed = check_given_inputs(proto.graph, feeds or {}, fixed_inputs or {})
    shapes = {**shapes_of_given(proto.graph, {**given, **fixed}), **(input_shapes or {})}
    fix_input_shapes(proto.graph, shapes, batch, frozenset(p.past for p in pairs))
    original, specialization = None, None
    if fixed:
        original = proto.SerializeToString()
        proto, specialization = specialize(proto, fixed)
        _name_nodes(proto.graph)  # the nodes of an inlined branch may be unnamed
    clear_inner_shapes(proto.graph)
    skeleton = make_skeleton(proto)
    _check(skeleton, label)
    inferred = onnx.shape_inference.infer_shapes(
        skeleton, check_type=False, strict_mode=False, data_prop=True
    )
    specs, uncuttable = collect_specs(inferred.graph, proto.graph)
    proto.graph.value_info.extend(
        vi for vi in inferred.graph.value_info if vi.name in specs or vi.name in uncuttable
    )
    copy_output_types(inferred.graph, proto.graph)
    inputs = [specs[i.name] for i in proto.graph.input if i.name in specs and i.name not in
              {t.name for t in proto.graph.initializer}]
    check_feed_specs(given, inputs)
    partial = known_dims(inferred.graph)  # before the run below fills the gaps with one input's sizes
    gaps = find_gaps(proto.graph, specs, uncuttable)
    external_dir = path.parent if path is not None and uses_external(proto) else None
    if gaps:
        probe_shapes(proto, gaps, specs, uncuttable, _feeds_for(proto.graph, inputs, given), given,
                     external_dir)
    missing = [o.name for o in proto.graph.output if o.name not in specs]
    if missing:
        raise ShapeError(
            f"cannot tell the shape of model output(s) {', '.join(missing)}",
            "give concrete shapes of the inputs with input_shapes=",
        )
    dynamic = find_dynamic_dims(proto.graph, specs, partial, lambda hints: infer_with(skeleton, hints))
    symbolic, served = _other_sizes(source, specs, wanted, input_shapes or {}, batch, fixed_inputs,
                                    weights_on_disk)
    open_value_info(proto.graph, merge_dims(dynamic, symbolic))
    model = Model(proto, sha256, path, specs, uncuttable, given, specialization, dynamic, symbolic,
                  [{s.name: tuple(s.shape) for s in inputs}, *served] if served else (), external_dir)
    if original is not None and specialization is not None:
        feeds_used = model.make_feeds()
        try:
            model.specialization = check_specialized(original, proto, feeds_used, specialization,
                                                         external_dir)
        except SplitinferError:
            raise
        except Exception as e:  # ORT's own error types: the original fails on these inputs
            what = f"the original model with {specialization.values()} (to check the specialised one)"
            raise cannot_run_error(e, what, given, feeds_used) from None
    return model


def _other_sizes(source: ModelSource, specs: Mapping[str, TensorSpec],
                 sizes: list[dict[str, tuple[int, ...]]], input_shapes: Mapping[str, Sequence[int]],
                 batch: int | None, fixed_inputs: Mapping[str, object] | None, weights_on_disk: bool | None
                 ) -> tuple[dict[str, tuple[int, ...]], list[dict[str, tuple[int, ...]]]]:
    """The axes that differ between this load and a load at each of ``sizes``; each other size, complete."""
    symbolic: dict[str, tuple[int, ...]] = {}
    served: list[dict[str, tuple[int, ...]]] = []
    here = {name: tuple(specs[name].shape) for name in specs}
    for size in sizes:
        try:
            other = load_model(source, input_shapes={**input_shapes, **size}, batch=batch,
                               fixed_inputs=fixed_inputs, weights_on_disk=weights_on_disk)
        except ShapeError as e:
            raise ShapeError(f"sizes= {describe_size(size)}: {e.problem}", e.fix) from None
        shapes = {s.name: tuple(s.shape) for s in other.inputs}
        if shapes not in served and any(here.get(n) != dims for n, dims in shapes.items()):
            served.append(shapes)
        symbolic = merge_dims(symbolic, find_symbolic_dims(specs, other.tensors))
    return symbolic, served


def _feeds_for(graph: onnx.GraphProto, inputs: list[TensorSpec],
               given: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``given`` and, for the other inputs, seeded generated values (as :meth:`Model.make_feeds`)."""
    names = [s.name for s in inputs]
    feeds = generate_feeds(inputs, find_index_bounds(graph, names), values=find_compared_values(graph, names))
    return {**feeds, **given}


def _read(source: ModelSource, weights_on_disk: bool | None = None
          ) -> tuple[onnx.ModelProto, str, Path | None, str]:
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
    sha256 = hashlib.sha256(data).hexdigest()
    del data
    # Weights in external data files stay there (checked, small ones read in): graph.external.
    check_external(proto, path.parent, f"'{path}'")
    on_disk = external_bytes(proto) > PROTOBUF_LIMIT_BYTES if weights_on_disk is None else weights_on_disk
    inline_small(proto, path.parent, INLINE_MAX_BYTES if on_disk else PROTOBUF_LIMIT_BYTES)
    return proto, sha256, path, f"'{path}'"


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
