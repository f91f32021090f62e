"""Specialise a model to fixed input values: control flow those values decide becomes plain nodes.

A model may hide its whole network inside an ``If`` (a voice-activity model picks its network by
the sample rate input): analysis sees one ``If`` node, nothing to cut. With some inputs fixed:

1. the fixed inputs become initializers;
2. every node whose inputs are all constants is evaluated (ONNX Runtime, the nodes at once) and
   replaced by initializers, as are ``Shape``/``Size`` of an input whose shape is fixed;
3. every ``If`` whose condition became constant is replaced by the nodes of the branch it takes
   (the branch's outputs renamed to the ``If``'s; outer-scope names resolve as they are);

repeated until nothing changes; then nodes and initializers nothing reads are removed. ``Loop``
and ``Scan`` stay whole: their bodies run a number of times the data decides.

:func:`check_specialized` runs the original (fed the fixed values too) and the specialised model
on the same inputs: a difference is a :class:`VerifyError`, before anything uses the model.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from splitinfer.errors import VerifyError
from splitinfer.graph.inference import create_inference_session
from splitinfer.graph.topology import RANDOM_OPS, fold_shape, list_implicit_inputs, list_subgraphs

# A folded value is stored with the weights (and copied into each partition that reads it): fold
# shape-sized values, not a weight transformed (its node stays and runs as it did).
FOLD_MAX_ELEMENTS = 1 << 16
_DEFAULT_DOMAINS = ("", "ai.onnx")
# The tolerance of graph/verify.py's chain check (not imported: verify imports the model module,
# which imports this one). Folding runs the same kernels, so specialised outputs are usually equal.
ATOL, RTOL = 1e-4, 1e-3


@dataclass(frozen=True)
class Specialization:
    """What specialising did: the fixed values, ``If`` nodes replaced by their branch (nested ones
    included), nodes evaluated into initializers, and the largest output difference against the
    original model once :func:`check_specialized` ran (None before)."""

    fixed: Mapping[str, np.ndarray]
    num_inlined: int
    num_folded: int
    max_abs_diff: float | None = None

    def values(self) -> str:
        """The fixed values: ``sr=16000, mode=1``."""
        return ", ".join(f"{n}={_show_value(v)}" for n, v in self.fixed.items())

    def describe(self) -> str:
        """One line: the values, then what changed."""
        return f"{self.values()} ({self.num_inlined} If inlined, {self.num_folded} constant node(s) folded)"


def _show_value(value: np.ndarray) -> str:
    flat = np.asarray(value).ravel()
    shown = ",".join(str(v) for v in flat[:4].tolist())
    return shown + (",..." if flat.size > 4 else "")


def specialize(proto: onnx.ModelProto,
               fixed: Mapping[str, np.ndarray]) -> tuple[onnx.ModelProto, Specialization]:
    """A copy of ``proto`` with the graph inputs ``fixed`` (name -> value of the input's dtype and
    shape) made constants, constant expressions folded and decided ``If`` nodes inlined."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    fixed_names = set(fixed)
    kept = [vi for vi in graph.input if vi.name not in fixed_names]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name) for name, v in fixed.items())
    num_folded = num_inlined = 0
    unfoldable: set[str] = set()  # nodes evaluated once whose values were too large to keep
    while True:
        folded = _fold_constants(model, unfoldable)
        inlined = _inline_ifs(graph)
        num_folded += folded
        num_inlined += inlined
        if not folded and not inlined:
            break
    _prune(graph)
    return model, Specialization(dict(fixed), num_inlined, num_folded)


# ---- constants -----------------------------------------------------------------------------------
def _constant_names(graph: onnx.GraphProto) -> dict[str, int]:
    """Constant tensors and their element counts: initializers that no graph input overrides."""
    inputs = {vi.name for vi in graph.input}
    return {t.name: int(np.prod(t.dims, dtype=np.int64)) for t in graph.initializer if t.name not in inputs}


def _input_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for vi in graph.input:
        dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else None
        if dims is not None and vi.type.tensor_type.HasField("shape") and all(
                d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _fold_constants(model: onnx.ModelProto, unfoldable: set[str]) -> int:
    """Replace constant nodes by initializers; how many were replaced. ``unfoldable``: the first
    outputs of nodes evaluated before whose values were too large (not evaluated again)."""
    graph = model.graph
    consts = _constant_names(graph)
    shapes = _input_shapes(graph)
    outputs = {o.name for o in graph.output}
    picked: dict[int, onnx.NodeProto] = {}  # by position: protobuf hands out a new wrapper per access
    known: dict[str, np.ndarray] = {}
    for pos, node in enumerate(graph.node):
        if (node.output and node.output[0] in unfoldable) or node.op_type in RANDOM_OPS \
                or node.domain not in _DEFAULT_DOMAINS or list_subgraphs(node) \
                or any(o in outputs for o in node.output):  # a model output stays a node's output
            continue
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
            value = fold_shape(node, shapes[node.input[0]])
            known[node.output[0]] = value
            consts[node.output[0]] = int(value.size)
            picked[pos] = node
        elif all(not i or i in consts for i in node.input) and all(
                consts.get(i, 0) <= FOLD_MAX_ELEMENTS for i in node.input if i):
            picked[pos] = node
            # The element count is unknown until it runs: dependents may still fold.
            consts.update((o, 0) for o in node.output if o)
    if not picked:
        return 0
    values = {**_evaluate(model, [n for n in picked.values() if n.output[0] not in known], known), **known}
    folded: set[int] = set()
    for pos, node in picked.items():
        outs = [o for o in node.output if o]
        got = [values.get(o) for o in outs]
        if all(isinstance(v, np.ndarray) and v.dtype != object and v.size <= FOLD_MAX_ELEMENTS for v in got):
            graph.initializer.extend(numpy_helper.from_array(v, o) for o, v in zip(outs, got, strict=True))
            folded.add(pos)
        elif node.output:
            unfoldable.add(node.output[0])
    kept = [n for pos, n in enumerate(graph.node) if pos not in folded]
    del graph.node[:]
    graph.node.extend(kept)
    return len(folded)


def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto],
              known: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs of ``nodes`` (inputs: initializers or ``known`` values) in ONNX Runtime: all at
    once, else one by one, leaving out those that fail (they stay nodes)."""
    if not nodes:
        return {}
    try:
        return _run_nodes(model, nodes, known)
    except Exception:  # ORT's own error types; one node it cannot run must not stop the others
        values: dict[str, np.ndarray] = dict(known)
        for node in nodes:
            try:
                values.update(_run_nodes(model, [node], values))
            except Exception:  # this node stays a node
                continue
        return values


def _run_nodes(model: onnx.ModelProto, nodes: list[onnx.NodeProto],
               known: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    known = known or {}
    inits = {t.name: t for t in model.graph.initializer}
    needed = dict.fromkeys(i for n in nodes for i in n.input if i)
    made = {o for n in nodes for o in n.output if o}
    graph = onnx.GraphProto(name="fold")
    graph.node.extend(nodes)
    for name in needed:
        if name in made:
            continue
        graph.initializer.append(inits[name] if name in inits else numpy_helper.from_array(known[name], name))
    names = [o for n in nodes for o in n.output if o]
    graph.output.extend(onnx.ValueInfoProto(name=o) for o in names)
    mini = helper.make_model(graph, opset_imports=list(model.opset_import))
    mini.ir_version = model.ir_version
    session = create_inference_session(mini.SerializeToString(), optimize=False)
    return dict(zip(names, session.run(names, {}, quiet_run()), strict=True))


def quiet_run() -> object:
    """Run options that keep ONNX Runtime from logging a failing node: its error comes back raised."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    return options


# ---- If -------------------------------------------------------------------------------------------
def _all_names(graph: onnx.GraphProto, names: set[str]) -> set[str]:
    names.update(vi.name for vi in graph.input)
    names.update(t.name for t in graph.initializer)
    for node in graph.node:
        names.update(node.output)
        names.update(node.input)
        for sub in list_subgraphs(node):
            _all_names(sub, names)
    return names


def _inline_ifs(graph: onnx.GraphProto) -> int:
    """Replace each ``If`` of the main graph whose condition is constant by its taken branch."""
    consts = _constant_names(graph)
    inits = {t.name: t for t in graph.initializer}
    # The names a branch's own names must not meet: the main graph's, and those inside other
    # nodes' subgraphs (the taken branch's own names do not count: they are what moves).
    taken = {vi.name for vi in graph.input} | set(inits) | {o.name for o in graph.output}
    inner: dict[int, set[str]] = {}  # by position: protobuf hands out a new wrapper on each access
    for pos, node in enumerate(graph.node):
        taken.update(node.input)
        taken.update(node.output)
        subs = list_subgraphs(node)
        if subs:
            inner[pos] = set().union(*(_all_names(sub, set()) for sub in subs))
    nodes: list[onnx.NodeProto] = []
    count = 0
    for pos, node in enumerate(graph.node):
        cond = node.input[0] if node.op_type == "If" and node.domain in _DEFAULT_DOMAINS else None
        value = numpy_helper.to_array(inits[cond]) if cond in consts else None
        if value is not None and value.size == 1:
            branch = _attribute_graph(node, "then_branch" if bool(value.ravel()[0]) else "else_branch")
            if branch is not None and not branch.sparse_initializer:
                others = set().union(*(names for key, names in inner.items() if key != pos))
                new_nodes, new_inits = _take_branch(node, branch, taken | others)
                taken.update(o for n in new_nodes for o in n.output)
                taken.update(t.name for t in new_inits)
                nodes.extend(new_nodes)
                graph.initializer.extend(new_inits)
                count += 1
                continue
        nodes.append(node)
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def _attribute_graph(node: onnx.NodeProto, name: str) -> onnx.GraphProto | None:
    return next((a.g for a in node.attribute if a.name == name and a.type == onnx.AttributeProto.GRAPH), None)


def _take_branch(node: onnx.NodeProto, branch: onnx.GraphProto,
                 taken: set[str]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The branch's nodes and initializers for the main graph: its outputs renamed to the ``If``'s,
    its other names kept unless the main graph has them already (then made unique)."""
    made = [o for n in branch.node for o in n.output if o]
    local = set(made) | {t.name for t in branch.initializer}
    rename: dict[str, str] = {}
    identities = []
    for inner, outer in zip(branch.output, node.output, strict=False):
        if not outer:  # an optional output nobody reads
            continue
        if inner.name in made and inner.name not in rename:
            rename[inner.name] = outer
        else:  # an initializer, an outer name or an output given twice: an Identity makes it
            identities.append((inner.name, outer))
    counter = itertools.count()
    for name in sorted(local - set(rename)):
        if name in taken:
            fresh = f"{node.name}/{name}"
            while fresh in taken:
                fresh = f"{node.name}/{name}_{next(counter)}"
            rename[name] = fresh
            taken.add(fresh)
    prefix = f"{node.name}/" if node.name else ""
    nodes = []
    for inner_node in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(inner_node)
        _rename_node(copy, rename)
        copy.name = f"{prefix}{copy.name}" if copy.name else ""
        nodes.append(copy)
    nodes += [helper.make_node("Identity", [rename.get(src, src)], [dst], name=f"{prefix}{dst}")
              for src, dst in identities]
    inits = []
    for t in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = rename.get(t.name, t.name)
        inits.append(copy)
    return nodes, inits


def _rename_node(node: onnx.NodeProto, rename: Mapping[str, str]) -> None:
    for i, name in enumerate(node.input):
        node.input[i] = rename.get(name, name)
    for i, name in enumerate(node.output):
        node.output[i] = rename.get(name, name)
    for sub in list_subgraphs(node):
        _rename_references(sub, rename)


def _rename_references(graph: onnx.GraphProto, rename: Mapping[str, str]) -> None:
    """Rename the outer-scope names a nested graph reads (names it defines itself shadow them)."""
    own = {vi.name for vi in graph.input} | {t.name for t in graph.initializer} \
        | {o for n in graph.node for o in n.output}
    outer = {k: v for k, v in rename.items() if k not in own}
    if not outer:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = outer.get(name, name)
        for sub in list_subgraphs(node):
            _rename_references(sub, outer)
    for out in graph.output:
        out.name = outer.get(out.name, out.name)


# ---- clean-up ---------------------------------------------------------------------------------
def _prune(graph: onnx.GraphProto) -> None:
    """Remove nodes whose outputs nothing reads, then initializers nothing reads (inputs stay: they
    are the model's interface, fed whether used or not)."""
    nodes = list(graph.node)
    while True:
        read = {o.name for o in graph.output}
        for node in nodes:
            read.update(i for i in node.input if i)
            read.update(list_implicit_inputs(node))
        alive = [n for n in nodes if any(o in read for o in n.output if o)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    del graph.node[:]
    graph.node.extend(nodes)
    inputs = {vi.name for vi in graph.input}
    inits = [t for t in graph.initializer if t.name in read or t.name in inputs]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    names = {o for n in nodes for o in n.output}
    infos = [vi for vi in graph.value_info if vi.name in names]
    del graph.value_info[:]
    graph.value_info.extend(infos)


# ---- check ----------------------------------------------------------------------------------------
def check_specialized(original: bytes, specialized: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                      spec: Specialization, external_dir: Path | None = None) -> Specialization:
    """Run the original model (on ``feeds`` and the fixed values) and the specialised one (on
    ``feeds``); ``spec`` with the largest difference, or VerifyError naming the output that
    differs. ONNX Runtime's own failures are raised as they come (the caller words them).
    ``external_dir``: where the weights left on disk are (graph/external.py)."""
    want = _run_model(original, {**feeds, **spec.fixed}, external_dir)
    got = _run_model(specialized.SerializeToString(), dict(feeds), external_dir)
    worst = 0.0
    for name, ref in want.items():
        out = got.get(name)
        if out is None or out.shape != ref.shape or out.dtype != ref.dtype:
            raise VerifyError(f"the model specialised to {spec.describe()} gives output {name!r} as "
                              f"{_describe(out)}, the original {_describe(ref)}",
                              "this is a splitinfer bug: please report it with the model")
        if ref.dtype.kind in "fc":
            out, ref = np.atleast_1d(out), np.atleast_1d(ref)  # a 0-d array's elements cannot be set
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            diff[np.isnan(out) & np.isnan(ref)] = 0.0
            bad = ~((diff <= ATOL) | (diff <= RTOL * np.abs(ref)))
            worst = max(worst, float(diff.max(initial=0.0)))
        else:
            bad = out != ref
        if np.any(bad):
            raise VerifyError(f"the model specialised to {spec.describe()} differs from the original in "
                              f"output {name!r} ({int(np.count_nonzero(bad))} elements)",
                              "this is a splitinfer bug: please report it with the model")
    return Specialization(spec.fixed, spec.num_inlined, spec.num_folded, worst)


def _describe(value: np.ndarray | None) -> str:
    return "nothing" if value is None else f"{value.dtype.name}{list(value.shape)}"


def _run_model(model_bytes: bytes, feeds: Mapping[str, np.ndarray],
               external_dir: Path | None = None) -> dict[str, np.ndarray]:
    session = create_inference_session(model_bytes, optimize=False, external_dir=external_dir)
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    values = session.run(names, {k: v for k, v in feeds.items() if k in wanted}, quiet_run())
    return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}
