"""The whole model as verification's reference, run in windows when its weights are too many to open.

A model whose weights stay on disk (``Model.external_dir``) is split because it is large; opening it as
one inference session would hold all its weights at once, the very copy splitting avoids. When its
weights pass ``window_bytes``, its nodes, in the order the file lists them, are cut into *windows* of at
most that many bytes of weights (a node with more is a window alone, and a window only ends where every
tensor crossing into later ones has a declared type). Each window is made a model of its own, its
weights still referring to the files they are in, run, and closed before the next opens; only the
values later windows or the caller need are kept.

The windows' bounds are not the partitions' cuts and their extraction is not ``graph/partition.py``'s,
so the reference stays independent of the chain it checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from splitinfer.graph.external import external_bytes, is_external, ref_of
from splitinfer.graph.inference import create_inference_session
from splitinfer.graph.model import Model
from splitinfer.graph.topology import list_implicit_inputs

Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
MIN_WINDOW_BYTES = 64 << 20  # below this, windows would only add sessions


@dataclass(frozen=True)
class Window:
    """Nodes ``first..last`` (indices into the graph's node list) as a model of their own."""

    first: int
    last: int
    proto: onnx.ModelProto
    inputs: tuple[str, ...]  # from the feeds or earlier windows
    outputs: tuple[str, ...]  # what later windows or the caller need
    weight_bytes: int


def needs_windows(model: Model, window_bytes: int) -> bool:
    """True when the model's weights stay on disk and pass ``window_bytes``."""
    return model.external_dir is not None and external_bytes(model.proto) > window_bytes


@contextmanager
def reference(model: Model, fetch: Sequence[str], providers: Sequence[str],
              window_bytes: int | None = None) -> Iterator[Run]:
    """A function from feeds to the model's values of ``fetch`` (model outputs or inner tensors): one
    inference session on the whole model, or (``needs_windows``) window by window, one at a time."""
    if window_bytes is None or not needs_windows(model, window_bytes):
        session = create_inference_session(with_outputs(model.proto, fetch), providers,
                                           external_dir=model.external_dir)
        names = list(dict.fromkeys(fetch))
        try:
            yield lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))
        finally:
            del session
        return
    windows = plan_windows(model.proto, window_bytes, fetch)
    yield lambda feeds: run_windows(windows, feeds, fetch, providers, model.external_dir)


def run_windows(windows: Sequence[Window], feeds: Mapping[str, np.ndarray], fetch: Sequence[str],
                providers: Sequence[str], external_dir: Path | None) -> dict[str, np.ndarray]:
    """Run the windows in turn on ``feeds``; the values of ``fetch``."""
    values = dict(feeds)
    later = [set(fetch)]  # later[-1 - k]: what the windows after window k (and the caller) take
    for window in reversed(windows[1:]):
        later.append(later[-1] | set(window.inputs))
    for window, kept in zip(windows, reversed(later), strict=True):
        session = create_inference_session(window.proto.SerializeToString(), providers,
                                           external_dir=external_dir)
        results = session.run(list(window.outputs), {n: values[n] for n in window.inputs})
        del session  # before the next window's: one window's weights at a time
        values.update(zip(window.outputs, results, strict=True))
        values = {n: v for n, v in values.items() if n in kept}
    return {n: values[n] for n in fetch}


def plan_windows(proto: onnx.ModelProto, window_bytes: int, fetch: Sequence[str] = ()) -> list[Window]:
    """The model's nodes cut into windows of at most ``window_bytes`` of external weights each."""
    graph = proto.graph
    nodes = list(graph.node)
    inits = {t.name: t for t in graph.initializer}
    weight = {name: ref_of(t).length if is_external(t) else 0 for name, t in inits.items()}
    reads = [[n for n in (*node.input, *list_implicit_inputs(node)) if n] for node in nodes]
    last_read = {n: i for i, names in enumerate(reads) for n in names}
    for name in (*(o.name for o in graph.output), *fetch):
        last_read[name] = len(nodes)  # needed to the end
    typed = {v.name for v in (*graph.input, *graph.value_info, *graph.output)
             if v.type.WhichOneof("value") is not None}
    bounds: list[tuple[int, int]] = []
    first, held = 0, 0
    open_: set[str] = set()  # made in this window and read after the current node
    for i, node in enumerate(nodes):
        held += sum(weight.get(n, 0) for n in set(reads[i]))
        open_ = {n for n in open_ if last_read.get(n, -1) > i}
        open_.update(out for out in node.output if out and last_read.get(out, -1) > i)
        if i + 1 < len(nodes):
            upcoming = sum(weight.get(n, 0) for n in set(reads[i + 1]))
            if held + upcoming <= window_bytes or not open_ <= typed:
                continue
        bounds.append((first, i))
        first, held, open_ = i + 1, 0, set()
    return [_window(proto, nodes, reads, inits, weight, last_read, a, b) for a, b in bounds]


def _window(proto: onnx.ModelProto, nodes: list[onnx.NodeProto], reads: list[list[str]],
            inits: Mapping[str, onnx.TensorProto], weight: Mapping[str, int], last_read: Mapping[str, int],
            first: int, last: int) -> Window:
    inside = range(first, last + 1)
    used = list(dict.fromkeys(n for i in inside for n in reads[i]))
    produced = {out for i in inside for out in nodes[i].output if out}
    inputs = tuple(n for n in used if n not in produced and n not in inits)
    outputs = tuple(n for n in produced if last_read.get(n, -1) > last)
    declared = {v.name: v for v in (*proto.graph.input, *proto.graph.value_info, *proto.graph.output)}
    graph = helper.make_graph(
        [nodes[i] for i in inside], f"window_{first}_{last}",
        [declared[n] for n in inputs], [onnx.ValueInfoProto(name=n) for n in outputs],
        [inits[n] for n in used if n in inits])
    model = helper.make_model(graph, opset_imports=proto.opset_import, ir_version=proto.ir_version)
    model.functions.extend(proto.functions)
    return Window(first, last, model, inputs, outputs, sum(weight.get(n, 0) for n in used if n in inits))


def with_outputs(proto: onnx.ModelProto, extra: Sequence[str]) -> bytes:
    """The model serialized with ``extra`` tensors added to its outputs."""
    declared = {o.name for o in proto.graph.output}
    missing = [n for n in dict.fromkeys(extra) if n not in declared]
    if not missing:
        return proto.SerializeToString()
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    copy.graph.output.extend(onnx.ValueInfoProto(name=n) for n in missing)
    return copy.SerializeToString()
