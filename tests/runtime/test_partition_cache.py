"""Shipping partitions, a worker's side in process: its content-addressed cache bounded by least-recently-used
eviction, transfers in chunks checked by SHA-256 and resumed where they broke, every bad number or name a
peer may send (device/_partitions.py); the client's side of a transfer that breaks (wire/partitions.py).
Real workers: test_partition_deploy.py."""

from __future__ import annotations

import hashlib

import msgspec
import numpy as np
import pytest

from splitinfer.errors import DeadlineError, ErrorCode, SplitinferError, TransportError, WorkerError, code_of
from splitinfer.runtime.coordinator.pipeline import deploy_by_hash
from splitinfer.runtime.device._partition_cache import open_store
from splitinfer.runtime.device._partitions import MAX_PENDING, PartitionStore, with_parts
from splitinfer.runtime.device.config import parse_config
from splitinfer.runtime.wire import messages
from splitinfer.runtime.wire.messages import Message
from splitinfer.runtime.wire.partitions import put_partition


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _chunk(store: PartitionStore, data: bytes, offset: int, num_bytes: int, *, sha: str | None = None,
           chunk_sha: str | None = None) -> dict:
    piece = data[offset:offset + num_bytes]
    header = messages.PartitionChunk(sha256=sha or _sha(data), size_bytes=len(data), offset=offset,
                                     chunk_sha256=chunk_sha or _sha(piece))
    return store.chunk(header, Message(header, blobs=[memoryview(piece)]))


def _put(store: PartitionStore, data: bytes, chunk_bytes: int = 400) -> None:
    for offset in range(0, len(data), chunk_bytes):
        reply = _chunk(store, data, offset, chunk_bytes)
    assert reply == {"offset": len(data), "complete": True}


def _status(store: PartitionStore, data: bytes) -> dict:
    return store.status(messages.PartitionStatus(sha256=_sha(data), size_bytes=len(data)))


def _blob(seed: int, num_bytes: int = 1000) -> bytes:
    return np.random.default_rng(seed).bytes(num_bytes)


# ---- the store, in process ---------------------------------------------------------------------
def test_the_cache_evicts_the_least_recently_used_at_its_bound(tmp_path):
    store = PartitionStore(tmp_path, 3000)
    a, b, c, d = (_blob(k) for k in range(4))
    for data in (a, b, c):
        _put(store, data)
    assert store.cached() == [_sha(a), _sha(b), _sha(c)]
    assert _status(store, a)["have"]  # asked for: used, so b is now the least recently used
    assert store.load(_sha(c)) == c  # loaded by a deploy: used too
    _put(store, d)
    assert store.cached() == [_sha(a), _sha(c), _sha(d)]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file() and len(p.name) == 64) == \
        sorted(map(_sha, (a, c, d)))
    assert store.cached_bytes == 3000
    with pytest.raises(WorkerError) as e:
        store.load(_sha(b))
    assert e.value.code == ErrorCode.MISSING_PARTITION
    # A transfer reserves its whole size when it starts: the cache makes room before its first byte.
    _chunk(store, _blob(9, 1500), 0, 100)
    assert store.cached() == [_sha(d)] and store.cached_bytes + 1500 <= 3000
    # Reopened (a worker restart): what is on disk is the cache, the pending transfer resumes.
    store.close()
    again = PartitionStore(tmp_path, 3000)
    assert again.cached() == [_sha(d)] and _status(again, _blob(9, 1500))["offset"] == 100


def test_pending_transfers_are_bounded_in_number_and_the_oldest_goes(tmp_path):
    store = PartitionStore(tmp_path, 1 << 20)
    blobs = [_blob(k) for k in range(MAX_PENDING + 1)]
    for data in blobs:
        assert _chunk(store, data, 0, 100) == {"offset": 100, "complete": False}
    assert _status(store, blobs[0])["offset"] == 0  # dropped: the one sent to longest ago
    assert all(_status(store, data)["offset"] == 100 for data in blobs[1:])
    assert len(list((tmp_path / "pending").iterdir())) == MAX_PENDING


def test_a_corrupted_chunk_or_file_is_refused_and_nothing_is_installed(tmp_path):
    store = PartitionStore(tmp_path, 1 << 20)
    data = _blob(1)
    _chunk(store, data, 0, 400)
    with pytest.raises(TransportError) as e:  # damaged on the way: unlike its own hash
        _chunk(store, data, 400, 400, chunk_sha="0" * 64)
    assert e.value.code == ErrorCode.INTEGRITY and "nothing written" in e.value.problem
    assert _status(store, data)["offset"] == 400
    # Chunks that each match their hash but add up to other bytes than the partition's hash says.
    liar = _sha(b"other bytes")
    for offset in (0, 400):
        _chunk(store, data, offset, 400, sha=liar)
    with pytest.raises(TransportError) as e:
        _chunk(store, data, 800, 400, sha=liar)
    assert e.value.code == ErrorCode.INTEGRITY and "nothing installed" in e.value.problem
    assert store.cached() == [] and not (tmp_path / liar).exists()
    assert [p.name for p in (tmp_path / "pending").iterdir()] == [f"{_sha(data)}-1000.part"]
    with pytest.raises(WorkerError):
        store.load(liar)
    # A cached file damaged on disk is found out when a deploy loads it, and removed.
    _chunk(store, data, 400, 600)
    (tmp_path / _sha(data)).write_bytes(b"x" * 1000)
    with pytest.raises(WorkerError) as e:
        store.load(_sha(data))
    assert e.value.code == ErrorCode.MISSING_PARTITION and store.cached() == []


def test_a_chunk_from_elsewhere_than_the_bytes_held_is_not_written(tmp_path):
    store = PartitionStore(tmp_path, 1 << 20)
    data = _blob(2)
    assert _chunk(store, data, 0, 300) == {"offset": 300, "complete": False}
    assert _chunk(store, data, 600, 300) == {"offset": 300, "complete": False}  # send from 300
    assert _chunk(store, data, 0, 300) == {"offset": 300, "complete": False}  # sent twice: once kept
    assert _chunk(store, data, 300, 700) == {"offset": 1000, "complete": True}
    assert store.load(_sha(data)) == data


def _bad_requests() -> list[tuple[str, dict, ErrorCode, str]]:
    sha = _sha(b"abc")
    return [
        ("a hash of 63 digits", {"sha256": sha[:63]}, ErrorCode.MALFORMED, "sha256"),
        ("a hash in capitals", {"sha256": sha.upper()}, ErrorCode.MALFORMED, "sha256"),
        ("a path for a hash", {"sha256": "../" * 21 + "a"}, ErrorCode.MALFORMED, "sha256"),
        ("a hash with a newline", {"sha256": sha + "\n"}, ErrorCode.MALFORMED, "sha256"),
        ("a number for a hash", {"sha256": 5}, ErrorCode.MALFORMED, "sha256"),
        ("a chunk hash that is a path", {"chunk_sha256": "/etc/passwd"}, ErrorCode.MALFORMED, "chunk_sha256"),
        ("an offset past the end", {"offset": 3}, ErrorCode.MALFORMED, "offset"),
        ("a negative offset", {"offset": -1}, ErrorCode.MALFORMED, "offset"),
        ("a chunk past the end", {"offset": 2}, ErrorCode.MALFORMED, "does not end within"),
        ("a size of nothing", {"size_bytes": 0}, ErrorCode.MALFORMED, "size_bytes"),
        ("a size beyond any partition", {"size_bytes": 1 << 62}, ErrorCode.MALFORMED, "size_bytes"),
        ("a size of NaN", {"size_bytes": float("nan")}, ErrorCode.MALFORMED, "size_bytes"),
        ("a size larger than the cache", {"size_bytes": 5000}, ErrorCode.OVERSIZED, "--cache-max-bytes"),
        ("no chunk", {"blobs": []}, ErrorCode.MALFORMED, "blobs"),
        ("two chunks", {"blobs": [b"abc", b"abc"]}, ErrorCode.MALFORMED, "blobs"),
        ("a chunk over the limit", {"blobs": [bytes(1025)], "size_bytes": 2000}, ErrorCode.OVERSIZED,
         "limit 1024"),
    ]


@pytest.mark.parametrize(("what", "change", "code", "named"), _bad_requests(),
                         ids=[c[0] for c in _bad_requests()])
def test_bad_numbers_and_names_in_a_chunk_are_refused_with_a_code(tmp_path, what, change, code, named):
    store = PartitionStore(tmp_path, 4096, max_chunk_bytes=1024)
    fields = {"sha256": _sha(b"abc"), "size_bytes": 3, "offset": 0, "chunk_sha256": _sha(b"abc"),
              "blobs": [b"abc"], **change}
    blobs = fields.pop("blobs")
    header = msgspec.structs.replace(messages.PartitionChunk(sha256="", size_bytes=1, offset=0,
                                                             chunk_sha256=""), **fields)
    with pytest.raises(TransportError) as e:
        store.chunk(header, Message(header, blobs=[memoryview(b) for b in blobs]))
    assert code_of(e.value) == code, what
    assert named in e.value.problem and e.value.fix and "\n" not in e.value.problem, what
    if "sha256" in change:
        with pytest.raises(TransportError):
            store.status(messages.PartitionStatus(sha256=change["sha256"], size_bytes=3))
    assert store.cached() == [] and not list((tmp_path / "pending").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pending"]  # nothing written anywhere else


def test_a_deploy_names_one_hash_per_part_each_a_hash(tmp_path):
    store = PartitionStore(tmp_path, 4096)
    meta = messages.TensorMeta("t0", "float32", (2, 16))
    deploy = messages.Deploy(deployment_id="d", stage=0, device="w", inputs=[meta], outputs=[meta],
                             route=messages.Route("tcp://127.0.0.1:9", True), reply_to="tcp://127.0.0.1:9")
    for hashes, problem in ((["a" * 64, "b" * 64], "names 2 parts"), (["../x"], "not a SHA-256")):
        with pytest.raises(TransportError, match=problem):
            with_parts(store, msgspec.structs.replace(deploy, parts_sha256=hashes), Message(deploy))
    _put(store, b"abc")
    got = with_parts(store, msgspec.structs.replace(deploy, parts_sha256=[_sha(b"abc")]),
                     Message(deploy, blobs=[memoryview(b"rule")]))
    assert [bytes(b) for b in got.blobs] == [b"abc", b"rule"]  # the part, then the rule graphs


class _FlakyWorker:
    """A worker's store behind a client that breaks off: the ``fail``-th chunk request gets no answer
    (DeadlineError, after the store took it or not), or arrives damaged."""

    name = "flaky"

    def __init__(self, store: PartitionStore, fail: int, how: str) -> None:
        self.store, self.fail, self.how, self.num_chunks = store, fail, how, 0

    def request(self, header, *, blobs=(), timeout_s=None):
        blobs = [memoryview(bytes(b)) for b in blobs]
        if isinstance(header, messages.PartitionChunk):
            self.num_chunks += 1
            if self.num_chunks == self.fail:
                if self.how == "lost":  # the worker never saw it
                    raise DeadlineError("no answer", "retry")
                if self.how == "damaged":
                    blobs = [memoryview(b"\xff" + bytes(blobs[0][1:]))]
                else:  # taken, but the answer was lost
                    self.store.chunk(header, Message(header, blobs=blobs))
                    raise DeadlineError("no answer", "retry")
            data = self.store.chunk(header, Message(header, blobs=blobs))
        else:
            data = self.store.status(header)
        return Message(messages.Done(data=data))


@pytest.mark.parametrize("how", ["lost", "answer lost", "damaged"])
def test_the_client_resumes_a_transfer_that_breaks_where_the_worker_is(tmp_path, how):
    store = PartitionStore(tmp_path, 1 << 20, max_chunk_bytes=1000)
    data = _blob(3, 4500)
    flaky = _FlakyWorker(store, 3, how)
    upload = put_partition(flaky, data)
    assert upload is not None and store.load(_sha(data)) == data and upload.source == "cache"
    assert flaky.num_chunks == 6 - (how == "answer lost")  # 5 chunks, the broken one sent again
    # Three breaks in a row: the error, not a loop.
    other = _blob(4, 4500)
    with pytest.raises(DeadlineError):
        put_partition(_AlwaysLost(store), other)
    assert _status(store, other)["offset"] == 1000


class _OldWorker:
    """A worker from before partitions were kept: it cannot decode a partition_status (nor a kind it does
    not know), and takes deploys inline."""

    name = "old"

    def __init__(self) -> None:
        self.deploys: list[tuple[messages.Deploy, int]] = []

    def put_partition(self, data: bytes, timeout_s: float | None = None):
        return put_partition(self, data, timeout_s=timeout_s)

    def request(self, header, *, blobs=(), timeout_s=None):
        if isinstance(header, messages.Deploy):
            self.deploys.append((header, len(blobs)))
            return Message(messages.Done())
        raise TransportError("header cannot be decoded: Invalid value 'partition_status' - at `$.kind`",
                             "send a msgspec-msgpack header with a known 'kind'", code=ErrorCode.MALFORMED)


def test_a_worker_from_before_gets_its_partitions_inline():
    old = _OldWorker()
    assert put_partition(old, b"model") is None
    meta = messages.TensorMeta("t0", "float32", (2, 16))
    deploy = messages.Deploy(deployment_id="d", stage=0, device="w", inputs=[meta], outputs=[meta],
                             route=messages.Route("tcp://127.0.0.1:9", True), reply_to="tcp://127.0.0.1:9")
    deploy_by_hash(old, deploy, [b"part0", b"part1"], [b"rule"], 5.0)
    ((header, num_blobs),) = old.deploys
    assert header.parts_sha256 == [] and num_blobs == 3


class _AlwaysLost(_FlakyWorker):
    def __init__(self, store: PartitionStore) -> None:
        super().__init__(store, 0, "lost")

    def request(self, header, **kw):
        if isinstance(header, messages.PartitionChunk) and header.offset:
            raise DeadlineError("no answer", "retry")
        return super().request(header, **kw)


def test_the_cache_flags_are_checked_naming_the_flag(tmp_path):
    assert parse_config(["--name", "w", "--cache-max-bytes", "2GiB"]).cache_max_bytes == 2 << 30
    for size in ("lots", "-1", "2PiB", "2000TiB"):
        with pytest.raises(SplitinferError, match="--cache-max-bytes") as e:
            parse_config(["--name", "w", "--cache-max-bytes", size])
        assert "\n" not in str(e.value)
    with pytest.raises(SplitinferError, match=r"--model-dir .* is not a folder"):
        open_store("w", str(tmp_path / "cache"), 4096, str(tmp_path / "none"), 1 << 30)


def test_without_a_cache_dir_a_worker_uses_splitinfers_cache_folder_or_a_temporary_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITINFER_CACHE_DIR", str(tmp_path / "root"))
    store = open_store("edge@fast", None, 4096, None, 1 << 30)
    try:
        assert store.folder == tmp_path / "root" / "partitions" / "edge_fast"
        second = open_store("edge@fast", None, 4096, None, 1 << 30)  # the same name again: held
        assert second.folder != store.folder and second.folder.is_dir()
        second.close()
        assert not second.folder.exists()  # a temporary folder goes with its worker
    finally:
        store.close()
    with pytest.raises(SplitinferError, match=r"--cache-dir .* cannot be used"):
        open_store("w", str(tmp_path / "root" / "partitions" / "edge_fast" / ".lock" / "x"), 4096, None, 1)
