"""Fuzzing the wire: whatever frames a peer sends, the codec raises only coded errors, a worker keeps
serving and a session keeps running requests.

Messages are structured (every kind of header with fields mutated, retyped, deleted, added or nested
thousands deep, random tensor metadata, signed with the token, another or none, sent now or at odd
times, heads truncated, frames missing or extra) or raw (random bytes and frames). Most go straight to
``codec.decode`` in process; some to a real worker's ROUTER and to a real session's result socket.
"""

from __future__ import annotations

import logging
import math
import random
import time

import msgspec
import numpy as np
import onnxruntime as ort
import pytest
import zmq
from helpers.runtime_models import local_cluster, mlp_parts, stages_on, whole_and_parts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitinfer.errors import ErrorCode, SplitinferError
from splitinfer.runtime import WorkerClient, deploy_stages
from splitinfer.runtime.wire import codec, messages

TOKEN = b"fuzz-token-0123456789"
MIN_IN_PROCESS = 10_000
_DEEP = "\x00deep\x00"  # a placeholder string, replaced by nested arrays or maps once encoded
_DEEP_PACKED = msgspec.msgpack.encode(_DEEP)
_META = messages.TensorMeta("t0", "float32", (2, 16))
SAMPLES = {type(h).__name__: msgspec.to_builtins(h) for h in (
    messages.Health(), messages.Info(), messages.Echo(num_reply_bytes=8), messages.Undeploy(),
    messages.Deploy(deployment_id="d", stage=0, device="a", inputs=[_META], outputs=[_META],
                    route=messages.Route("tcp://127.0.0.1:9", True), reply_to="tcp://127.0.0.1:9"),
    messages.TimePartition(), messages.TimeCompression(compressions=["int8"]),
    messages.Probe(address="tcp://127.0.0.1:9", sizes_bytes=[10]),
    messages.Shutdown(), messages.Infer(deployment_id="d", stage=0, deadline_unix_s=2e9),
    messages.Outputs(deployment_id="d", stamps=[messages.StageStamp(0, "a", 1.0, 1.0, 1.0, 1e-3, 0.0, 64)]),
    messages.ErrorReply(code="failed", problem="p"),
    messages.Done(data={"a": [1, 2.5, {"b": None}]}),
    messages.PartitionStatus(sha256="a" * 64, size_bytes=300),
    messages.PartitionChunk(sha256="a" * 64, size_bytes=300, offset=0, chunk_sha256="b" * 64))}
# What a test may sign with the real token: other kinds could really stop the worker or drop its stages.
SIGNABLE = {"worker": ("Health", "Info", "Echo", "Infer", "Outputs", "ErrorReply", "Done", "PartitionStatus",
                       "PartitionChunk"),
            "session": ("Outputs", "ErrorReply", "Done")}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=12),
                    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=8)
dims = st.one_of(st.integers(-2, 4), st.integers(-(2**63), 2**64 - 1))
dtypes = st.sampled_from([*sorted(codec.ALLOWED_DTYPES), "object", "", "f4"])
tensor_meta = st.one_of(
    st.tuples(st.text(max_size=4), dtypes, st.lists(dims, max_size=5), st.booleans()).map(list),
    st.tuples(st.text(max_size=4), dtypes, st.lists(dims, max_size=5), st.booleans(), st.just(""),
              st.just({}), st.one_of(st.integers(-2, codec.MAX_PARTS + 2), dims)).map(list))  # in parts
fields = st.sampled_from(["kind", "request_id", "blobs", "tensors", "deployment_id", "stage", "data",
                          "deadline_unix_s", "stamps", "route", "inputs", "code", "num_reply_bytes", "zz",
                          "sha256", "size_bytes", "offset", "chunk_sha256"])
# Nesting: where msgspec recurses (Done.data's values, an unknown field it skips, a field before the
# kind it looks for) and where it does not; shallow, or past the interpreter's recursion limit.
nesting = st.tuples(st.just("deep"), st.sampled_from(["data", "zz", "zz", "tensors", "kind"]),
                    st.one_of(st.integers(1, 40), st.integers(900, 5000)), st.booleans(), st.booleans())
mutation = st.one_of(
    st.tuples(st.just("set"), fields, values),
    st.tuples(st.just("del"), fields),
    st.tuples(st.just("set"), st.just("tensors"), st.lists(tensor_meta, max_size=4)),
    st.tuples(st.just("set"), st.just("blobs"), st.lists(st.integers(-1, 300), max_size=3)),
    st.tuples(st.just("set"), st.just("kind"), st.text(max_size=10)),
    nesting, nesting,
)


@st.composite
def structured(draw, target: str | None = None) -> list[bytes]:
    """A header of some kind with mutations, framed with odd signatures, times and frames; for a
    ``target`` process, only what cannot disturb the test is signed with the real token."""
    kind = draw(st.sampled_from(sorted(SAMPLES)))
    header = dict(SAMPLES[kind])
    deep = None
    for op in draw(st.lists(mutation, max_size=3)):
        if op[0] == "set":
            header[op[1]] = op[2]
        elif op[0] == "del":
            header.pop(op[1], None)
        else:
            _, field, depth, arrays, first = op
            header.pop(field, None)
            value = {"x": _DEEP} if field == "data" else _DEEP
            header = {field: value, **header} if first else {**header, field: value}
            deep = (b"\x91" if arrays else b"\x81\xa1k") * depth + b"\xc0"
    header_bytes = msgspec.msgpack.encode(header)
    if deep is not None:
        header_bytes = header_bytes.replace(_DEEP_PACKED, deep, 1)
    signing = draw(st.sampled_from(["token", "token", "none", "wrong"]))
    if signing == "token" and target is not None:
        if kind not in SIGNABLE[target]:
            signing = "wrong"
        if type(header.get("num_reply_bytes")) is int and header["num_reply_bytes"] > 4096:
            header["num_reply_bytes"] = 8  # a real worker would allocate the bytes asked for
        if type(header.get("request_id")) is int and -1 < header["request_id"] < 10**6:
            header["request_id"] += 10**9  # never the id of the session's own requests
        header_bytes = msgspec.msgpack.encode(header)
        if deep is not None:
            header_bytes = header_bytes.replace(_DEEP_PACKED, deep, 1)
    key = {"token": TOKEN, "none": None, "wrong": b"another-token"}[signing]
    sent = draw(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
    head = codec.pack_head(key, header_bytes, sent_unix_s=sent) + draw(st.binary(max_size=64))
    cut = draw(st.one_of(st.none(), st.integers(0, len(head))))
    return [head[:cut] if cut is not None else head, *draw(st.lists(st.binary(max_size=300), max_size=4))]


@st.composite
def with_tensors(draw) -> list[bytes]:
    """A signed infer whose frames fit its tensor metadata, or nearly: the checks past the header."""
    shapes = st.lists(st.one_of(st.integers(0, 3), st.integers(2**31, 2**63 - 1)), max_size=4)
    allowed = st.sampled_from(sorted(codec.ALLOWED_DTYPES))
    metas = draw(st.lists(st.tuples(st.sampled_from(["a", "b"]), allowed, shapes, st.booleans(), st.just(""),
                                    st.just({}), st.integers(1, 4)), min_size=1, max_size=3))
    header = {**SAMPLES["Infer"], "tensors": [list(m) for m in metas], "request_id": 10**9}
    head, frames = codec.pack_head(TOKEN, msgspec.msgpack.encode(header)), []
    for _, dtype, shape, inline, _, _, parts in metas:
        num_bytes = np.dtype(dtype).itemsize * math.prod(shape)
        data = bytes(num_bytes if num_bytes <= 4096 else draw(st.integers(0, 64)))
        if inline:
            head += bytes(-len(head) % 8) + data
        else:  # in parts (an encrypted link's), a part now and then missing or extra
            cuts = sorted(draw(st.lists(st.integers(0, len(data)), min_size=parts - 1, max_size=parts - 1)))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
            frames += {0: pieces, 1: pieces[:-1], 2: [*pieces, b""]}[draw(st.sampled_from([0, 0, 1, 2]))]
    return [head, *frames]


raw = st.one_of(st.lists(st.binary(max_size=200), min_size=1, max_size=6),
                st.binary(max_size=300).map(lambda b: [codec.pack_head(TOKEN, b)]))


def messages_for(target: str | None = None) -> st.SearchStrategy[list[bytes]]:
    return st.one_of(structured(target), structured(target), with_tensors(), raw)


def variants(frames: list[bytes], rnd: random.Random) -> list[list[bytes]]:
    """The message and five cheap mutants: a truncated head, a flipped byte, a frame lost or added,
    bytes after the head. (Drawing a message costs hypothesis milliseconds; these cost microseconds.)"""
    head, rest = frames[0], frames[1:]
    flipped = bytearray(head)
    if flipped:
        flipped[rnd.randrange(len(flipped))] ^= 1 << rnd.randrange(8)
    return [frames, [head[:rnd.randrange(len(head) + 1)], *rest], [bytes(flipped), *rest],
            frames[:-1] if rest else [*frames, rnd.randbytes(rnd.randrange(300))],
            [head + rnd.randbytes(rnd.randrange(1, 16)), *rest]]


def _decodes_or_names_the_fault(frames: list[bytes]) -> None:
    try:
        codec.decode(frames, TOKEN, max_frame_bytes=1 << 20)
    except SplitinferError as e:  # anything else fails the test
        assert isinstance(e.code, ErrorCode) and e.problem and e.fix, e


def test_decode_raises_only_coded_errors_for_10000_messages():
    count = [0]

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(messages_for(), min_size=7, max_size=10), st.randoms(use_true_random=False))
    def decode_all(batch, rnd):
        for frames in batch:
            for variant in variants(frames, rnd):
                _decodes_or_names_the_fault(variant)
                count[0] += 1

    start = time.perf_counter()
    decode_all()
    print(f"\nfuzz: {count[0]} messages decoded in process in {time.perf_counter() - start:.1f} s")
    assert count[0] >= MIN_IN_PROCESS


def test_headers_nested_deeper_than_the_bound_are_malformed_signed_or_not():
    for depth in (codec.MAX_HEADER_DEPTH, 1000, 200_000):
        header = b"\x82\xa4kind\xa6health\xa1x" + b"\x91" * depth + b"\xc0"
        for token, code in ((TOKEN, ErrorCode.MALFORMED), (b"another", ErrorCode.AUTH)):
            with pytest.raises(SplitinferError) as e:
                codec.decode([codec.pack_head(TOKEN, header)], token)
            assert e.value.code == code, (depth, token)
    shallow = b"\x82\xa4kind\xa6health\xa1x" + b"\x91" * (codec.MAX_HEADER_DEPTH - 1) + b"\xc0"
    assert isinstance(codec.decode([codec.pack_head(TOKEN, shallow)], TOKEN).header, messages.Health)


@pytest.fixture(scope="module")
def session():
    whole, parts = whole_and_parts(mlp_parts(1, width=16, batch=2))
    with deploy_stages(stages_on(parts, ["a"]), local_cluster(["a"]), token=TOKEN, timeout_s=20) as s:
        yield s, ort.InferenceSession(whole, providers=["CPUExecutionProvider"])


def _runs_correctly(session, reference) -> None:
    x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    (got,) = session.run(None, {"t0": x})
    np.testing.assert_allclose(got, reference.run(None, {"t0": x})[0], atol=1e-5)


def test_a_worker_and_a_session_survive_fuzzed_messages(session, caplog):
    session, reference = session
    caplog.set_level(logging.WARNING, logger="splitinfer.session")  # one per message it drops
    context = zmq.Context()
    worker = context.socket(zmq.DEALER)
    worker.connect(session.addresses["a"])
    results = context.socket(zmq.PUSH)
    results.connect(session.result_address)
    sent = {"worker": 0, "session": 0}

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(messages_for("worker"), min_size=4, max_size=8),
           st.lists(messages_for("session"), min_size=2, max_size=4), st.randoms(use_true_random=False))
    def send_all(to_worker, to_session, rnd):
        for frames in to_worker:
            for variant in variants(frames, rnd):
                worker.send_multipart(variant)
                sent["worker"] += 1
        for frames in to_session:  # nobody reads them yet: the runs below do
            for variant in variants(frames, rnd):
                results.send_multipart(variant)
                sent["session"] += 1
        while worker.poll(0):
            worker.recv_multipart()

    start = time.perf_counter()
    try:
        send_all()
        # Each socket delivers in order: once these last ones are handled, so was everything before.
        worker.send_multipart(codec.encode(messages.Echo(request_id=-7), TOKEN, blobs=[b"end"]))
        results.send_multipart([codec.pack_head(TOKEN, msgspec.msgpack.encode({"kind": "fuzz-end"}))])
        while True:
            assert worker.poll(20_000), "the worker stopped answering"
            reply = codec.decode(worker.recv_multipart(), TOKEN)
            if reply.header.request_id == -7 and isinstance(reply.header, messages.Done):
                break
        with WorkerClient(session.addresses["a"], TOKEN) as client:
            assert client.health()["name"] == "a"
            assert client.info()["name"] == "a"  # signed requests still go through
        deadline = time.monotonic() + 20
        while not any("fuzz-end" in r.getMessage() for r in caplog.records):  # the runs read them
            assert time.monotonic() < deadline, "the session did not read what was sent to it"
            _runs_correctly(session, reference)
        _runs_correctly(session, reference)
    finally:
        context.destroy(linger=0)
    print(f"\nfuzz: {sent['worker']} messages to a worker, {sent['session']} to a session, "
          f"{time.perf_counter() - start:.1f} s")
    assert sent["worker"] >= 1000 and sent["session"] >= 500
    assert session.launcher.is_alive("a")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records[:3]
    log = session.launcher.workers["a"].log_path.read_text()
    assert "Traceback" not in log and "unexpected failure" not in log, log[-2000:]
