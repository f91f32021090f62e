"""Bytes on the wire: each hop of a request's timing counts what its sender really sent, a compressed
tensor as its payload and params, so bench can put them beside a plan's predicted ``num_bytes``."""

from __future__ import annotations

import msgspec
import numpy as np
import onnxruntime as ort
from helpers.runtime_models import local_cluster, mlp_parts, stages_on, whole_and_parts

from splitinfer.compression import Compressed, parse_compression, wire_bytes
from splitinfer.runtime import deploy_stages
from splitinfer.runtime.coordinator.timing import build_timing
from splitinfer.runtime.wire import codec, messages

DEVICES = ["a", "b", "c"]


def _stamp(stage: int, device: str, sent_bytes: int) -> messages.StageStamp:
    return messages.StageStamp(stage, device, 1.0, 1.5, 1.5, 0.01, 0.0, sent_bytes)


def test_each_hop_counts_what_its_sender_reported_else_the_uncompressed_tensors():
    stamps = [_stamp(0, "b", 300), _stamp(1, "c", 40)]
    timing = build_timing(1, submitted_unix_s=0.0, received_unix_s=3.0, result_sent_unix_s=2.0, stamps=stamps,
                          source="a", sink="a", hop_bytes=(4000, 1000, 160), upload_bytes=1100)
    assert [h.num_bytes for h in timing.hops] == [1100, 300, 40]
    # A worker from before stamps carried sent_bytes (-1), and no upload count: the tensors' own bytes.
    old = [_stamp(0, "b", -1), _stamp(1, "c", -1)]
    timing = build_timing(1, submitted_unix_s=0.0, received_unix_s=3.0, result_sent_unix_s=2.0, stamps=old,
                          source="a", sink="a", hop_bytes=(4000, 1000, 160))
    assert [h.num_bytes for h in timing.hops] == [4000, 1000, 160]


def test_a_stamp_without_sent_bytes_still_decodes():
    old = msgspec.msgpack.encode([[0, "b", 1.0, 1.5, 1.5, 0.01, 0.0]])  # seven fields: a worker from before
    (stamp,) = msgspec.msgpack.decode(old, type=list[messages.StageStamp])
    assert stamp.sent_bytes == -1


def _carried(compression: str, x: np.ndarray) -> tuple[int, np.ndarray]:
    """(bytes sent, tensor the receiver restores) for ``x`` over a hop with ``compression``."""
    carried = parse_compression(compression).carry(x)
    assert isinstance(carried, Compressed)
    return wire_bytes(carried), parse_compression(compression).decompress(carried)


def test_compressed_hops_count_their_payload_and_params_not_the_tensor():
    _, parts = whole_and_parts(mlp_parts(3, width=256, batch=64))
    compressions = ["fp16", "int8", "lz4"]  # into stage 0 (the uplink), 1 and 2
    stages = [s.__class__(s.index, s.device, s.model_bytes, s.inputs, s.outputs, c)
              for s, c in zip(stages_on(parts, DEVICES), compressions, strict=True)]
    x = np.random.default_rng(3).standard_normal((64, 256)).astype(np.float32)
    # The same chain in this process, one thread as the workers run: what each hop carries.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    expected, tensor = [], x
    for (model, ins, _), compression in zip(parts, compressions, strict=True):
        num_bytes, restored = _carried(compression, tensor)
        expected.append(num_bytes)
        (tensor,) = ort.InferenceSession(model, options).run(None, {ins[0].name: restored})
    expected.append(tensor.nbytes)  # the result travels raw
    raw = x.nbytes
    with deploy_stages(stages, local_cluster(DEVICES)) as session:
        session.run(None, {"t0": x}, deadline_s=20)
        timing = session.last_timing
    assert [(h.src, h.dst) for h in timing.hops] == [("a", "a"), ("a", "b"), ("b", "c"), ("c", "a")]
    assert [h.num_bytes for h in timing.hops] == expected
    assert timing.hops[0].num_bytes < raw // 2 + 1024 and timing.hops[1].num_bytes < raw // 4 + 1024
    assert codec.sent_bytes([("t", x)]) == raw


def test_a_hand_off_on_one_worker_counts_the_tensors_as_they_are():
    _, parts = whole_and_parts(mlp_parts(2, width=16, batch=4))
    stages = [s.__class__(s.index, s.device, s.model_bytes, s.inputs, s.outputs, "int8")
              for s in stages_on(parts, ["a", "a"])]
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    with deploy_stages(stages, local_cluster(["a"])) as session:
        session.run(None, {"t0": x}, deadline_s=20)
        hops = session.last_timing.hops
    assert [(h.src, h.dst) for h in hops] == [("a", "a")] * 3
    # The uplink compresses (the coordinator sends into stage 0); the hand-off and the result do not.
    assert hops[0].num_bytes == _carried("int8", x)[0] and [h.num_bytes for h in hops[1:]] == [4 * 16 * 4] * 2
