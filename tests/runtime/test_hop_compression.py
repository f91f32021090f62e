"""Compressed hops: a stage's inputs travel compressed over the link into it and are restored there."""

from __future__ import annotations

import msgspec
import numpy as np
import onnxruntime as ort
import pytest
from helpers.runtime_models import local_cluster, mlp_parts, stages_on, whole_and_parts

from splitinfer.compression import parse_compression
from splitinfer.errors import PlanError, TransportError
from splitinfer.runtime import deploy_stages
from splitinfer.runtime.wire import codec, messages

DEVICES = ["a", "b", "c"]


def _pipeline(compressions: list[str]):
    """Three stages on three workers; batch 64 x width 256 floats: 64 KiB, so each hop is a framed tensor."""
    whole, parts = whole_and_parts(mlp_parts(3, width=256, batch=64))
    stages = [s.__class__(s.index, s.device, s.model_bytes, s.inputs, s.outputs, c)
              for s, c in zip(stages_on(parts, DEVICES), compressions, strict=True)]
    x = np.random.default_rng(3).standard_normal((64, 256)).astype(np.float32)
    return whole, stages, x


def test_lossless_hops_give_the_exact_result():
    whole, stages, x = _pipeline(["zstd", "lz4", "zstd:level=3"])
    (expected,) = ort.InferenceSession(whole).run(None, {"t0": x})
    with deploy_stages(stages, local_cluster(DEVICES)) as session:
        (exact,) = session.run(None, {"t0": x}, deadline_s=20)
    np.testing.assert_allclose(exact, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compressions", [["fp16", "", ""], ["", "int8", ""], ["", "", "int8:per_channel"]],
                         ids=["uplink fp16", "worker hop int8", "worker hop int8 per channel"])
def test_each_lossy_hop_is_taken_and_its_error_is_bounded(compressions):
    whole, stages, x = _pipeline(compressions)
    (expected,) = ort.InferenceSession(whole).run(None, {"t0": x})
    with deploy_stages(stages, local_cluster(DEVICES)) as session:
        (approx,) = session.run(None, {"t0": x}, deadline_s=20)
        (again,) = session.run(None, {"t0": x}, deadline_s=20)
    assert not np.array_equal(approx, expected)  # the lossy hop was really taken...
    np.testing.assert_array_equal(approx, again)  # ...deterministically...
    snr_db = 10 * np.log10(np.sum(expected ** 2) / np.sum((approx - expected) ** 2))
    assert snr_db > 25  # ...and within its error: a 256-wide MLP keeps well over 25 dB


def test_an_unknown_compression_is_refused_naming_the_known_ones():
    _, stages, _ = _pipeline(["", "gzip", ""])
    with pytest.raises(PlanError, match="unknown compression 'gzip'") as info:
        deploy_stages(stages, local_cluster(DEVICES))
    assert "zstd" in info.value.fix


def test_a_compressed_tensor_travels_as_its_payload_and_is_restored():
    x = np.random.default_rng(0).standard_normal((1, 64, 32, 32)).astype(np.float32)
    ints = np.arange(10, dtype=np.int64)
    packed = parse_compression("int8").compress(x)
    arrays = [("x", packed), ("ints", ints)]
    header = messages.Infer(deployment_id="d", stage=0, deadline_unix_s=0.0)
    frames = codec.encode(header, b"t", arrays=arrays)
    assert codec.payload_bytes(arrays) == x.size + ints.nbytes  # one byte per value, integers raw
    msg = codec.decode(frames, b"t")
    assert msg.arrays["x"].shape == x.shape and msg.arrays["x"].dtype == np.float32
    assert np.abs(msg.arrays["x"] - x).max() <= packed.params["scale"][0]
    np.testing.assert_array_equal(msg.arrays["ints"], ints)


@pytest.mark.parametrize(("change", "match"), [
    ({"dtype": "float32", "shape": (4,)}, "compressed payload"),  # a payload is bytes, one dimension
    ({"compression": "gzip"}, "gzip"),
    ({"params": {"dtype": "float32", "shape": [1 << 40], "coded_dtype": "uint8", "axis": None,
                 "scale": [1.0], "zero_point": [0]}}, "limit"),  # restores to far over the limit
    ({"params": {"dtype": "object", "shape": [16], "coded_dtype": "uint8", "axis": None, "scale": [1.0],
                 "zero_point": [0]}}, "dtype 'object'"),
])
def test_a_malformed_compressed_tensor_is_a_transport_error(change, match):
    payload = np.zeros(16, np.uint8)
    meta = messages.TensorMeta("x", "uint8", (16,), True, "int8",
                               {"dtype": "float32", "shape": [16], "coded_dtype": "uint8", "axis": None,
                                "scale": [1.0], "zero_point": [0]})
    header = messages.Infer(deployment_id="d", stage=0, deadline_unix_s=0.0,
                            tensors=[msgspec.structs.replace(meta, **change)])
    head = codec.pack_head(b"t", msgspec.msgpack.encode(header), [payload])
    msg = codec.decode([codec.pack_head(b"t", msgspec.msgpack.encode(
        msgspec.structs.replace(header, tensors=[meta])), [payload])], b"t")
    np.testing.assert_array_equal(msg.arrays["x"], np.zeros(16, np.float32))  # the unchanged one restores
    with pytest.raises(TransportError, match=match) as info:
        codec.decode([head], b"t")
    assert info.value.code == "malformed"
