"""Split a model at cuts into standalone ONNX models (partitions) that chain.

Pass-through rule: a tensor made in partition 1 and read in partition 3 is an
output of 1, an input *and an output* of 2 (the graph input is listed again as
a graph output, no node needed) and an input of 3. Every partition therefore
receives only from the one before it and a deployed pipeline is a plain
chain. Model outputs made early pass through to the end the same way, and a
model input read late passes through the partitions before its reader.

Partition ``k``'s inputs are exactly the tensors live across the cut before
it, its outputs exactly those live across the cut after it (for the last
partition: the model outputs, in model order). Constants are never inputs:
each partition carries the initializers it reads (shared ones are copied into
every partition that uses them), copies of the constant nodes it needs, and
the folded values of ``Shape``/``Size`` nodes as initializers.

A tensor whose size depends on the input values (``Model.dynamic_dims``) or follows the input sizes the
model serves (``Model.symbolic_dims``) keeps those dims open:
a ``dim_param`` in the partition, -1 in its :class:`TensorSpec` (``seen``: the size seen at load),
so that ONNX Runtime and the stage's feed check take any size there.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import numpy_helper

from splitinfer.errors import CutError
from splitinfer.graph.analysis import Analysis, Cut, analyze
from splitinfer.graph.dynamic import open_spec, value_info
from splitinfer.graph.external import save_with_external, serialize, uses_external
from splitinfer.graph.inference import DEFAULT_PROVIDERS, create_inference_session
from splitinfer.graph.liveness import compute_liveness, state_nodes
from splitinfer.graph.model import Model
from splitinfer.graph.state import StatePair
from splitinfer.types import NUMPY_TO_ONNX, TensorSpec

CutSpec = int | Cut | Sequence[str]


@dataclass(frozen=True, eq=False)
class Partition:
    """One standalone piece of a split model.

    ``nodes`` are the model's (non-constant) nodes it runs, in order;
    ``first_block`` / ``last_block`` are the analysis blocks it covers, or
    None when its bounds are not block bounds.
    """

    index: int
    proto: onnx.ModelProto
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    nodes: tuple[str, ...]
    first_block: int | None = None
    last_block: int | None = None
    # The folder its weights left on disk are in (the model's external_dir), None when all are in proto.
    external_dir: Path | None = None
    # The model's state pairs it holds (graph/state.py): among its inputs and outputs, kept on its device.
    state: tuple[StatePair, ...] = ()

    @property
    def num_nodes(self) -> int:
        """Number of model nodes it runs (constant nodes it carries not counted)."""
        return len(self.nodes)

    @property
    def cut_bytes(self) -> int:
        """Bytes this partition sends on (its outputs; a varying size as seen at load)."""
        return sum(s.num_bytes for s in self.outputs)

    @property
    def is_external(self) -> bool:
        """True when some of its weights stay in the source model's external data files."""
        return self.external_dir is not None and uses_external(self.proto)

    def to_bytes(self) -> bytes:
        """The serialized ONNX model, standalone (:meth:`blob` as ``bytes``: one more copy of the weights
        left on disk; where a ``bytearray`` does, take the blob)."""
        blob = self.blob()
        return blob if isinstance(blob, bytes) else bytes(blob)

    def blob(self) -> bytes | bytearray:
        """The serialized ONNX model, standalone: weights left on disk are read from their files straight
        into place (``external.serialize``: one partition's weights in memory; ModelError past protobuf's
        2 GB)."""
        if self.is_external and self.external_dir is not None:
            return serialize(self.proto, self.external_dir, f"partition {self.index}")
        return self.proto.SerializeToString()

    def inference_session(self, providers: Sequence[str] = DEFAULT_PROVIDERS) -> Any:
        """An ONNX Runtime inference session on it here; weights left on disk are read by ONNX Runtime from
        their files (memory-mapped), not through a copy in this process."""
        return create_inference_session(self.proto.SerializeToString(), providers,
                                        external_dir=self.external_dir)

    def save(self, path: str | Path) -> Path:
        """Write the partition as an .onnx file; returns the path. Weights left on disk in the source
        model are copied, range by range, into ``<path stem>.data`` beside it (never held in memory)."""
        path = Path(path)
        if self.is_external and self.external_dir is not None:
            return save_with_external(self.proto, self.external_dir, path)
        path.write_bytes(self.to_bytes())
        return path


def split(model: Model, cuts: Sequence[CutSpec], analysis: Analysis | None = None) -> list[Partition]:
    """Split ``model`` at ``cuts`` into ``len(cuts) + 1`` partitions.

    A cut is a position in ``analysis.order`` (an int), a :class:`Cut`, or a
    list of tensor names, or one comma-separated string of them (the cut
    right after everything those tensors need, across which exactly those
    tensors, plus pass-through model inputs and outputs, are live). Cuts may
    come in any order. ``analysis`` defaults to ``analyze(model)``. Raises
    :class:`CutError` for unknown tensors, tensors that do not separate the
    graph, and cuts that cross each other.
    """
    analysis = analysis if analysis is not None else analyze(model)
    order = analysis.order
    befores = [_before_set(model, analysis, cut) for cut in cuts]
    befores.sort(key=lambda item: len(item[0]))
    for (small, a), (large, b) in itertools.pairwise(befores):
        if small == large:
            raise CutError(f"cuts {a} and {b} are the same cut", "give each cut once")
        stray = next((n for n in order if n in small and n not in large), None)
        if stray is not None:
            raise CutError(
                f"cuts {a} and {b} cross each other: node {stray!r} is before {a} but after {b}",
                "give cuts that follow one another along the model",
            )
    segment = {}
    for i, (before, _) in reversed(list(enumerate(befores))):
        segment.update(dict.fromkeys(before, i))
    new_order = sorted(order, key=lambda n: segment.get(n, len(befores)))
    positions = [len(before) for before, _ in befores]
    bounds = analysis.block_bounds() if tuple(new_order) == order else None
    return _make_chain(model, new_order, positions, bounds)


def extract_segment(model: Model, analysis: Analysis, first_block: int, last_block: int) -> Partition:
    """The partition covering blocks ``first_block..last_block`` (inclusive) of ``analysis``.

    Same input/output rule as :func:`split`; its ``index`` is ``first_block``.
    """
    num = len(analysis.blocks)
    if not 0 <= first_block <= last_block < num:
        raise CutError(
            f"blocks {first_block}..{last_block} are not a segment of a model with {num} blocks",
            f"give 0 <= first_block <= last_block <= {num - 1}",
        )
    bounds = analysis.block_bounds()
    start, end = bounds[first_block], bounds[last_block + 1]
    live = compute_liveness(model, analysis.order)
    crossing = live.tensors_at([start, end])
    return _build(model, first_block, analysis.order[start:end], crossing[start], crossing[end],
                  end == len(analysis.order), first_block, last_block)


def _before_set(model: Model, analysis: Analysis, cut: CutSpec) -> tuple[set[str], str]:
    order = analysis.order
    if isinstance(cut, Cut):
        live = compute_liveness(model, order)
        at = live.tensors_at([cut.position]).get(cut.position, []) if 0 < cut.position < len(order) else []
        if at == [t.name for t in cut.tensors]:
            return set(order[: cut.position]), f"at position {cut.position}"
        cut = [t.name for t in cut.tensors]  # from another order: cut at its tensors instead
    if isinstance(cut, bool):
        raise CutError(f"{cut!r} is not a cut", "give a position, a Cut or a list of tensor names")
    if isinstance(cut, int):
        if not 0 < cut < len(order):
            raise CutError(
                f"cut position {cut} is outside the model", f"give a position between 1 and {len(order) - 1}"
            )
        return set(order[:cut]), f"at position {cut}"
    names = [n.strip() for n in cut.split(",")] if isinstance(cut, str) else [str(n) for n in cut]
    if not names or not all(names):
        raise CutError("an empty tensor name in a cut", "give a comma-separated list of tensor names")
    return _ancestors_cut(model, names), "at " + ",".join(names)


def _ancestors_cut(model: Model, names: list[str]) -> set[str]:
    index = model.graph_index
    for name in names:
        if name in index.constants:
            raise CutError(
                f"tensor {name!r} is a constant (computed from weights and shapes only)",
                "constants travel with every partition; cut at tensors computed from the inputs",
            )
        if name not in index.producer and name not in index.graph_inputs:
            raise CutError(
                f"tensor {name!r} is not in the model",
                "pick tensors listed by `splitinfer inspect --json MODEL` (candidates)",
            )
    before: set[str] = set()
    stack = [index.producer[n] for n in names if n in index.producer]
    while stack:
        node = stack.pop()
        if node in before or node in index.constant_nodes:
            continue
        before.add(node)
        stack.extend(index.producer[t] for t in index.inputs_of[node] if t in index.producer)
    label = ",".join(names)
    if not before:
        raise CutError(f"the cut at {label} is before every node", "cut at tensors made by nodes")
    _check_separates(model, before, names, label)
    return before


def _check_separates(model: Model, before: set[str], names: list[str], label: str) -> None:
    index = model.graph_index
    allowed = set(names) | set(index.graph_outputs)
    crossing = set()
    for node in before:
        for t in index.nodes[node].output:
            if not t or t in index.constants:
                continue
            readers = index.consumers.get(t, [])
            after = [c for c in readers if c not in before and c not in index.constant_nodes]
            if after or t in index.graph_outputs:
                crossing.add(t)
            if after and t not in allowed:
                raise CutError(
                    f"tensors {label} do not separate the graph: {t!r} is made before the cut and "
                    f"read after it (by node {after[0]!r})",
                    f"add it to the cut (--at {label},{t}) or pick other tensors",
                )
    live_nodes = len(index.nodes) - len(index.constant_nodes)
    if len(before) == live_nodes:
        raise CutError(f"the cut at {label} is after every node", "cut at tensors that later nodes read")
    for name in names:
        if name in index.producer and name not in crossing:
            raise CutError(
                f"tensor {name!r} is not needed after the cut at {label} (only nodes before it read it)",
                "leave it out of the cut",
            )


def _make_chain(
    model: Model, order: list[str], positions: list[int], block_bounds: list[int] | None
) -> list[Partition]:
    bounds = [0, *positions, len(order)]
    crossing = compute_liveness(model, order).tensors_at(bounds)
    parts = []
    for k, (start, end) in enumerate(itertools.pairwise(bounds)):
        first = last = None
        if block_bounds is not None and start in block_bounds and end in block_bounds:
            first, last = block_bounds.index(start), block_bounds.index(end) - 1
        parts.append(_build(model, k, order[start:end], crossing[start], crossing[end],
                            k == len(bounds) - 2, first, last))
    return parts


def _specs_of(model: Model, names: Sequence[str], where: str) -> tuple[TensorSpec, ...]:
    for name in names:
        if name not in model.tensors:
            raise CutError(
                f"{name!r} would cross the cut {where}, but it is not a tensor of known shape "
                "(a sequence, or an unsupported dtype)",
                "cut somewhere else (`splitinfer inspect` lists the candidate cuts)",
            )
    return tuple(_open(model, n) for n in names)


def _open(model: Model, name: str) -> TensorSpec:
    return open_spec(model.tensors[name], model.open_dims.get(name, ()))


def _constant_closure(
    model: Model, nodes: Sequence[str], extra: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Constant nodes (file order) and initializer/folded names the given nodes need."""
    index = model.graph_index
    stack = [t for n in nodes for t in index.inputs_of[n] if t in index.constants] + list(extra)
    seen: set[str] = set()
    const_nodes: set[str] = set()
    tensors: list[str] = []
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in index.initializers or t in index.folded:
            tensors.append(t)
        elif t in index.producer:
            producer = index.producer[t]
            if producer not in const_nodes:
                const_nodes.add(producer)
                stack.extend(index.inputs_of[producer])
    return sorted(const_nodes, key=index.file_position.__getitem__), sorted(tensors)


def _check_state(model: Model, nodes: set[str], own: Sequence[StatePair], k: int) -> None:
    """Each state pair whole in the partition: every node using its cache (liveness.state_nodes);
    CutError when a cut separates them (the cache would have to travel)."""
    index = model.graph_index
    for pair in own:
        outside = [n for n in state_nodes(index, pair) if n not in nodes and n not in index.constant_nodes]
        if outside:
            raise CutError(f"partition {k} holds part of state {pair.past} -> {pair.present}, and node "
                           f"{outside[0]!r} uses it in another partition",
                           "cut between layers, where no layer's cache is split")


def _value_info(spec: TensorSpec) -> onnx.ValueInfoProto:
    return value_info(spec, NUMPY_TO_ONNX[spec.dtype])


def _build(
    model: Model, k: int, nodes: Sequence[str], inputs: Sequence[str], outputs: Sequence[str],
    is_last: bool, first_block: int | None, last_block: int | None,
) -> Partition:
    index = model.graph_index
    presents = {p.present for p in model.state}
    if is_last:
        outputs = [o for o in index.graph_outputs if o not in presents]
    # Its state pairs (graph/state.py): the pasts its nodes read come in, the presents they make go out,
    # here only.
    reads = {t for n in nodes for t in index.inputs_of[n]}
    made_here = {t for n in nodes for t in index.nodes[n].output}
    own = tuple(p for p in model.state if p.past in reads or p.present in made_here)
    _check_state(model, set(nodes), own, k)
    inputs = [*inputs, *(p.past for p in own if p.past in reads)]
    outputs = [*outputs, *(p.present for p in own if p.present in made_here)]
    const_outputs = [o for o in outputs if o in index.constants] if is_last else []
    in_specs = _specs_of(model, inputs, f"before partition {k}")
    out_specs = _specs_of(model, outputs, f"after partition {k}")
    const_nodes, const_tensors = _constant_closure(model, nodes, const_outputs)
    src = model.proto
    proto = onnx.ModelProto(
        ir_version=src.ir_version, producer_name="splitinfer", domain=src.domain,
        model_version=src.model_version,
    )
    proto.opset_import.extend(src.opset_import)
    proto.functions.extend(src.functions)
    proto.metadata_props.extend(src.metadata_props)
    graph = proto.graph
    graph.name = f"{src.graph.name or 'model'}_part{k}"
    graph.node.extend(index.nodes[n] for n in [*const_nodes, *nodes])
    graph.input.extend(_value_info(s) for s in in_specs)
    graph.output.extend(_value_info(s) for s in out_specs)
    for t in const_tensors:
        if t in index.initializers:
            graph.initializer.append(index.initializers[t])
        else:
            graph.initializer.append(numpy_helper.from_array(index.folded[t], t))
    boundary = set(inputs) | set(outputs)
    made = (o for n in [*const_nodes, *nodes] for o in index.nodes[n].output)
    graph.value_info.extend(
        _value_info(_open(model, o)) for o in made if o and o not in boundary and o in model.tensors
    )
    return Partition(k, proto, in_specs, out_specs, tuple(nodes), first_block, last_block, model.external_dir,
                     own)
