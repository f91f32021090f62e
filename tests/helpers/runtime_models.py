"""Tiny ONNX models split into partitions by hand, for runtime tests.

Each builder returns the whole model (bytes) and its partitions as
``(model_bytes, inputs, outputs)`` triples whose tensor names chain.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from splitinfer.cluster import Cluster, parse_cluster
from splitinfer.runtime import StageSpec
from splitinfer.runtime.wire import messages
from splitinfer.runtime.wire.messages import Message
from splitinfer.types import NUMPY_TO_ONNX, TensorSpec

OPSET = 17


@dataclass(frozen=True)
class Part:
    """The nodes and initializers of one partition, with its interface."""

    nodes: tuple[onnx.NodeProto, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    initializers: tuple[onnx.TensorProto, ...] = ()


def _info(spec: TensorSpec) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(spec.name, NUMPY_TO_ONNX[spec.dtype], list(spec.shape))


def make_model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
               initializers: Sequence[onnx.TensorProto] = (), name: str = "m") -> bytes:
    """A checked, serialised ONNX model."""
    graph = helper.make_graph(list(nodes), name, [_info(s) for s in inputs], [_info(s) for s in outputs],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def whole_and_parts(parts: Sequence[Part]) -> tuple[bytes, list[tuple[bytes, tuple[TensorSpec, ...],
                                                                      tuple[TensorSpec, ...]]]]:
    """The whole model (all nodes) and one standalone model per part."""
    nodes = [n for p in parts for n in p.nodes]
    inits = [i for p in parts for i in p.initializers]
    whole = make_model(nodes, parts[0].inputs, parts[-1].outputs, inits, "whole")
    partitions = [(make_model(p.nodes, p.inputs, p.outputs, p.initializers, f"part{k}"), p.inputs, p.outputs)
                  for k, p in enumerate(parts)]
    return whole, partitions


def mlp_parts(num_parts: int, width: int = 32, batch: int = 4, layers_per_part: int = 2,
              seed: int = 0) -> list[Part]:
    """A chain of MatMul+Add+Relu layers cut into ``num_parts`` partitions (float32)."""
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(num_parts):
        nodes, inits = [], []
        src = f"t{k}"
        for layer in range(layers_per_part):
            tag = f"p{k}l{layer}"
            w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
            b = rng.standard_normal(width).astype(np.float32) * 0.1
            inits += [numpy_helper.from_array(w, f"{tag}_w"), numpy_helper.from_array(b, f"{tag}_b")]
            last = layer == layers_per_part - 1
            dst = f"t{k + 1}" if last else f"{tag}_out"
            nodes += [helper.make_node("MatMul", [src, f"{tag}_w"], [f"{tag}_mm"]),
                      helper.make_node("Add", [f"{tag}_mm", f"{tag}_b"], [f"{tag}_add"]),
                      helper.make_node("Relu", [f"{tag}_add"], [dst])]
            src = dst
        spec_in = (TensorSpec(f"t{k}", "float32", (batch, width)),)
        spec_out = (TensorSpec(f"t{k + 1}", "float32", (batch, width)),)
        parts.append(Part(tuple(nodes), spec_in, spec_out, tuple(inits)))
    return parts


def conv_part(channels: int = 256, layers: int = 4, side: int = 8, seed: int = 2) -> Part:
    """One partition of 3x3 convolutions (with biases and Relus): the layers ONNX Runtime rewrites into
    its blocked layout on the CPU, copying their weights (channels=256, layers=4: 9.4 MB of them)."""
    rng = np.random.default_rng(seed)
    nodes, inits, src = [], [], "c0"
    for k in range(layers):
        w = (rng.standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"cw{k}"),
                  numpy_helper.from_array(np.full(channels, 0.01, np.float32), f"cb{k}")]
        dst = f"c{k + 1}" if k == layers - 1 else f"c{k}_out"
        nodes += [helper.make_node("Conv", [src, f"cw{k}", f"cb{k}"], [f"c{k}_conv"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{k}_conv"], [dst])]
        src = dst
    shape = (1, channels, side, side)
    return Part(tuple(nodes), (TensorSpec("c0", "float32", shape),),
                (TensorSpec(f"c{layers}", "float32", shape),), tuple(inits))


def heavy_parts(num_parts: int, size: int = 256, repeats: int = 4, seed: int = 1) -> list[Part]:
    """Compute-heavy float32 partitions (square MatMuls) for slowdown and throughput tests."""
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(num_parts):
        nodes, inits = [], []
        src = f"h{k}"
        for r in range(repeats):
            w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"hw{k}_{r}"))
            dst = f"h{k + 1}" if r == repeats - 1 else f"h{k}_{r}"
            nodes.append(helper.make_node("MatMul", [src, f"hw{k}_{r}"], [dst]))
            src = dst
        spec = (size, size)
        parts.append(Part(tuple(nodes), (TensorSpec(f"h{k}", "float32", spec),),
                          (TensorSpec(f"h{k + 1}", "float32", spec),), tuple(inits)))
    return parts


def mixed_parts() -> list[Part]:
    """Two partitions passing float16, int64 ids, a bool mask, a 0-d float64, uint8 and an empty tensor."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 6)).astype(np.float32)
    part_a = Part(
        nodes=(
            helper.make_node("MatMul", ["x", "wa"], ["xa"]),
            helper.make_node("Cast", ["xa"], ["h16"], to=TensorProto.FLOAT16),
            helper.make_node("Add", ["ids", "one64"], ["ids_next"]),
            helper.make_node("Not", ["mask"], ["mask_not"]),
            helper.make_node("ReduceSum", ["x"], ["xsum32"], keepdims=0),
            helper.make_node("Cast", ["xsum32"], ["xsum"], to=TensorProto.DOUBLE),
            helper.make_node("Cast", ["ids"], ["ids_u8"], to=TensorProto.UINT8),
            helper.make_node("Identity", ["empty"], ["empty_out"]),
        ),
        inputs=(TensorSpec("x", "float32", (2, 8)), TensorSpec("ids", "int64", (2, 5)),
                TensorSpec("mask", "bool", (2, 5)), TensorSpec("empty", "float32", (0, 3))),
        outputs=(TensorSpec("h16", "float16", (2, 6)), TensorSpec("ids_next", "int64", (2, 5)),
                 TensorSpec("mask_not", "bool", (2, 5)), TensorSpec("xsum", "float64", ()),
                 TensorSpec("ids_u8", "uint8", (2, 5)), TensorSpec("empty_out", "float32", (0, 3))),
        initializers=(numpy_helper.from_array(w, "wa"),
                      numpy_helper.from_array(np.array(1, np.int64), "one64")),
    )
    part_b = Part(
        nodes=(
            helper.make_node("Cast", ["h16"], ["h32"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["xsum"], ["xsum32b"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["h32", "xsum32b"], ["y"]),
            helper.make_node("Cast", ["mask_not"], ["mask_i64"], to=TensorProto.INT64),
            helper.make_node("Mul", ["ids_next", "mask_i64"], ["ids_masked"]),
            helper.make_node("Cast", ["ids_u8"], ["ids_u8_i64"], to=TensorProto.INT64),
            helper.make_node("Add", ["ids_masked", "ids_u8_i64"], ["ids_out"]),
            helper.make_node("Shape", ["empty_out"], ["empty_shape"]),
        ),
        inputs=part_a.outputs,
        outputs=(TensorSpec("y", "float32", (2, 6)), TensorSpec("ids_out", "int64", (2, 5)),
                 TensorSpec("mask_not", "bool", (2, 5)), TensorSpec("empty_shape", "int64", (2,))),
    )
    # mask_not passes straight through part_b: an input that is also an output.
    part_b = Part((*part_b.nodes, helper.make_node("Identity", ["mask_not"], ["mask_out"])),
                  part_b.inputs, (*part_b.outputs[:2], TensorSpec("mask_out", "bool", (2, 5)),
                                  part_b.outputs[3]))
    return [part_a, part_b]


def mixed_feeds(seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for :func:`mixed_parts`."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((2, 8)).astype(np.float32),
            "ids": rng.integers(0, 200, (2, 5)).astype(np.int64),
            "mask": rng.integers(0, 2, (2, 5)).astype(bool),
            "empty": np.zeros((0, 3), np.float32)}


def stages_on(partitions: Sequence[tuple[bytes, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]],
              devices: Sequence[str]) -> list[StageSpec]:
    """StageSpecs placing partition k on devices[k]."""
    return [StageSpec(k, dev, model, ins, outs)
            for k, ((model, ins, outs), dev) in enumerate(zip(partitions, devices, strict=True))]


def local_cluster(names: Sequence[str], *, slowdown: dict[str, float] | None = None,
                  links: Sequence[dict] = (), source: str | None = None, sink: str | None = None,
                  connect_all: bool = True) -> Cluster:
    """A cluster of local devices (1 thread each), all connected by free links unless given."""
    slowdown = slowdown or {}
    devices = [{"name": n, "num_threads": 1, "slowdown": slowdown.get(n, 1.0)} for n in names]
    declared = {(link["from"], link["to"]) for link in links} | {(link["to"], link["from"]) for link in links}
    all_links = list(links)
    if connect_all:
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if (a, b) not in declared:
                    all_links.append({"from": a, "to": b, "measure": True})
    doc = {"devices": devices, "links": all_links, "source": source or names[0]}
    if sink is not None:
        doc["sink"] = sink
    return parse_cluster(doc)


def slowdown_for(model: bytes, feed: dict, seconds: float) -> float:
    """The slowdown that makes one run of ``model`` (1 thread, as the local workers run) take about
    ``seconds`` on this machine: a fixed factor gave 0.2-1 s per request from one machine to the next."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    session.run(None, feed)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return max(1.0, seconds / float(np.median(times)))


def put_in_chunks(store: Any, data: bytes, chunk_bytes: int = 64 * 1024) -> str:
    """Put ``data`` in a worker's PartitionStore as partition_chunk messages do; its SHA-256."""
    sha = hashlib.sha256(data).hexdigest()
    for offset in range(0, len(data), chunk_bytes):
        piece = data[offset:offset + chunk_bytes]
        header = messages.PartitionChunk(sha256=sha, size_bytes=len(data), offset=offset,
                                         chunk_sha256=hashlib.sha256(piece).hexdigest())
        reply = store.chunk(header, Message(header, blobs=[memoryview(piece)]))
    assert reply == {"offset": len(data), "complete": True}
    return sha
