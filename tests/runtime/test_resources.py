"""Resource sampling on a worker: the sampler (fake readers, a fake NVML), the ``resources`` request over
the wire (good and malformed), the client's checks of a reply, the gateway's gauges when a worker fails."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import types

import numpy as np
import pytest
import zmq
from helpers.gateway import metric

from splitinfer.errors import ErrorCode, TransportError
from splitinfer.providers import uses_gpu
from splitinfer.runtime import WorkerClient
from splitinfer.runtime.device._resources import Nvml, ResourceSampler
from splitinfer.runtime.device.config import WorkerConfig
from splitinfer.runtime.device.worker import Worker
from splitinfer.runtime.gateway._metrics import Metrics
from splitinfer.runtime.gateway._resources import ResourcePoller
from splitinfer.runtime.wire import codec, messages
from splitinfer.runtime.wire.client import _resource_samples

TOKEN = b"resources-token"
NAN, INF = math.nan, math.inf


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def _reader(values):
    """A process reader that gives ``values`` (cpu, rss) in turn, then raises."""
    it = iter(values)

    def read():
        return next(it)
    return lambda: read


def test_the_ring_buffer_keeps_the_latest_samples_and_replies_those_after_a_time():
    sampler = ResourceSampler(process=_reader([(float(k), 100.0 + k) for k in range(10)]), clock=Clock(),
                              max_samples=4)
    sampler.start(10.0, gpu=False)  # the thread would first sample in 10 s: this test samples itself
    try:
        for _ in range(7):
            sampler.sample()
        assert sampler.sampling and len(sampler.samples) == 4
        times = [s[0] for s in sampler.samples]
        assert times == [1002.0, 1002.5, 1003.0, 1003.5]  # the first three fell out
        rows = sampler.since(1002.5)
        assert rows.shape == (2, 5) and rows[:, 1].tolist() == [5.0, 6.0]
        assert rows[:, 2].tolist() == [105, 106]
        assert np.isnan(rows[:, 3:]).all()  # no GPU asked for
        data, arrays = sampler.answer(messages.Resources(since_unix_s=1003.0, interval_s=10.0), ())
        assert [name for name, _ in arrays] == list(messages.RESOURCE_SERIES)
        assert dict(arrays)["time_unix_s"].tolist() == [1003.5]
        assert data["sampling"] and data["interval_s"] == 10.0 and data["num_cpus"] == os.cpu_count()
    finally:
        sampler.stop()
    assert not sampler.sampling and len(sampler.samples) == 4  # stopped, the samples kept


def test_a_reader_that_fails_stops_the_sampler_and_the_reply_says_why():
    sampler = ResourceSampler(process=_reader([(1.0, 2.0)] * 3))
    sampler.start(0.01, gpu=False)
    deadline = time.monotonic() + 5
    while sampler.sampling and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not sampler.sampling and len(sampler.samples) == 3
    assert sampler.error.startswith("sampling stopped: StopIteration")
    data, _ = sampler.answer(messages.Resources(stop=True), ())
    assert data["error"] == sampler.error and not data["sampling"]


def test_sampling_lapses_when_nobody_asks_for_longer_than_the_buffer_holds():
    sampler = ResourceSampler(max_samples=3)
    sampler.start(0.01, gpu=False)
    deadline = time.monotonic() + 5
    while sampler.sampling and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not sampler.sampling and sampler.error == "" and len(sampler.samples) >= 3
    sampler.start(0.01, gpu=False)  # the next request starts it again
    assert sampler.sampling
    sampler.stop()


class FakePynvml(types.SimpleNamespace):
    """pynvml's few calls the sampler makes; ``fail_after`` readings, then NVMLError."""

    class NVMLError(Exception):
        pass

    def __init__(self, fail_after: int) -> None:
        super().__init__(calls=[], left=fail_after)

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByIndex(self, index):
        self.calls.append(f"index {index}")
        return index

    def nvmlDeviceGetUtilizationRates(self, handle):
        self.left -= 1
        if self.left < 0:
            raise self.NVMLError("GPU is lost")
        return types.SimpleNamespace(gpu=40 + self.left)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=2_000_000_000)


def test_gpu_figures_come_from_nvml_until_it_fails_then_are_absent(monkeypatch):
    fake = FakePynvml(fail_after=3)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    sampler = ResourceSampler(process=_reader([(1.0, 2.0)] * 5), clock=Clock())
    sampler.start(10.0, gpu=True)  # the first reading is open()'s: two are left
    try:
        assert fake.calls[:2] == ["init", "index 1"] and sampler.gpu == "GPU 1"
        for _ in range(3):
            sampler.sample()
        rows = sampler.since(0)
        assert rows[:2, 3].tolist() == [41.0, 40.0] and rows[:2, 4].tolist() == [2e9, 2e9]
        assert np.isnan(rows[2, 3:]).all()  # NVML failed: this sample has no GPU figures
        assert "shutdown" in fake.calls and sampler.error == "GPU figures stopped: NVML failed (GPU is lost)"
    finally:
        sampler.stop()


def test_without_nvml_or_a_gpu_provider_there_are_no_gpu_figures(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails, as where nvidia-ml-py is absent
    nvml = Nvml()
    assert not nvml.open() and nvml.reason.startswith("no GPU figures: NVML unavailable")
    assert all(math.isnan(v) for v in nvml.read())
    assert uses_gpu(("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert not uses_gpu(("CPUExecutionProvider",))
    assert uses_gpu(("CUDAExecutionProvider:device_id=0",))  # with options too
    made = []
    sampler = ResourceSampler(gpu=lambda: made.append(1) or Nvml())
    sampler.answer(messages.Resources(interval_s=10.0), ("CPUExecutionProvider",))
    sampler.stop()
    assert made == []  # a CPU worker never opens NVML: a GPU's figures would not be its own


@pytest.fixture(scope="module")
def worker():
    w = Worker(WorkerConfig(name="res", listen="tcp://127.0.0.1:*", num_threads=1), TOKEN)
    thread = threading.Thread(target=w.run_forever, daemon=True)
    thread.start()
    yield w
    w.stop.set()
    thread.join(5)


def test_a_worker_samples_on_request_and_sends_the_samples_after_a_time(worker):
    assert not worker.device.resources.sampling  # nobody asked yet: nothing runs
    with WorkerClient(worker.address, TOKEN) as client:
        start = time.time()
        first = client.resources(since_unix_s=start, interval_s=0.02)
        assert first.sampling and first.num_cpus == os.cpu_count() and not first.has_gpu
        time.sleep(0.3)
        samples = client.resources(since_unix_s=start, interval_s=0.02, stop=True)
    assert not samples.sampling and not worker.device.resources.sampling
    times = samples.times_unix_s
    assert len(times) >= 5 and (np.diff(times) > 0).all() and times[0] > start
    assert ((samples.cpu_percent >= 0) & (samples.cpu_percent <= 100 * os.cpu_count())).all()
    assert (samples.rss_bytes > 10e6).all()  # this test process, numpy and onnxruntime loaded
    assert np.isnan(samples.gpu_util_percent).all() and samples.clock_offset_s == 0.0


def _raw(worker, header) -> messages.Message:
    context = zmq.Context()
    try:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(worker.address)
        sock.send_multipart(codec.encode(header, TOKEN))
        assert sock.poll(5000), "no reply"
        return codec.decode(sock.recv_multipart(), TOKEN)
    finally:
        context.destroy(linger=0)


@pytest.mark.parametrize(("fields", "named"), [
    ({"interval_s": NAN}, "interval_s is nan"), ({"interval_s": 0.0}, "interval_s is 0.0"),
    ({"interval_s": 1e9}, "interval_s is 1000000000.0"), ({"interval_s": -INF}, "interval_s is -inf"),
    ({"since_unix_s": NAN}, "since_unix_s is nan"), ({"since_unix_s": -1.0}, "since_unix_s is -1.0"),
    ({"since_unix_s": INF}, "since_unix_s is inf"),
])
def test_a_resources_request_out_of_range_gets_a_malformed_reply_and_the_worker_serves_on(worker, fields,
                                                                                          named):
    reply = _raw(worker, messages.Resources(**fields)).header
    assert isinstance(reply, messages.ErrorReply) and reply.code == ErrorCode.MALFORMED
    assert reply.problem == f"resources {named}" and reply.fix.startswith("use ")
    assert _raw(worker, messages.Health()).header.data["name"] == "res"


def test_a_resources_request_of_the_wrong_types_is_malformed(worker):
    import msgspec

    header = {**msgspec.to_builtins(messages.Resources()), "interval_s": "fast", "stop": "yes"}
    reply = _raw_bytes(worker, msgspec.msgpack.encode(header)).header
    assert isinstance(reply, messages.ErrorReply) and reply.code == ErrorCode.MALFORMED


def _raw_bytes(worker, header_bytes: bytes) -> messages.Message:
    context = zmq.Context()
    try:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(worker.address)
        sock.send_multipart([codec.pack_head(TOKEN, header_bytes)])
        assert sock.poll(5000), "no reply"
        return codec.decode(sock.recv_multipart(), TOKEN)
    finally:
        context.destroy(linger=0)


def _reply(data=None, **series) -> messages.Message:
    arrays = {"time_unix_s": np.array([1.0, 2.0]), "cpu_percent": np.array([50.0, 150.0]),
              "rss_bytes": np.array([1e8, 1e8]), "gpu_util_percent": np.array([NAN, 30.0]),
              "gpu_memory_bytes": np.array([NAN, 1e9])}
    arrays.update(series)
    data = {"interval_s": 0.1, "num_cpus": 2, "now_unix_s": 5.0, "sampling": True, **(data or {})}
    return messages.Message(messages.Done(data=data), arrays=arrays)


@pytest.mark.parametrize(("data", "series", "problem"), [
    ({"num_cpus": 0}, {}, "num_cpus is 0"), ({"interval_s": NAN}, {}, "interval_s is nan"),
    ({"now_unix_s": None}, {}, "now_unix_s is None"),
    ({}, {"cpu_percent": np.array([50.0, 201.0])}, "a cpu_percent sample from w is 201.0"),
    ({}, {"time_unix_s": np.array([1.0, NAN])}, "a time_unix_s sample from w is nan"),
    ({}, {"rss_bytes": np.array([-1.0, 1.0])}, "a rss_bytes sample from w is -1.0"),
    ({}, {"gpu_util_percent": np.array([NAN, INF])}, "a gpu_util_percent sample from w is inf"),
    ({}, {"cpu_percent": np.array([1.0])}, "no cpu_percent series"),
    ({}, {"rss_bytes": np.array([1, 2], dtype=np.int64)}, "no rss_bytes series"),
    ({}, {"time_unix_s": np.zeros(7000)}, "no time_unix_s series"),
])
def test_the_client_checks_every_number_of_a_resources_reply(data, series, problem):
    assert _resource_samples(_reply(), "w", 5.0, 5.0).has_gpu  # the unchanged reply is fine
    with pytest.raises(TransportError) as caught:
        _resource_samples(_reply(data, **series), "w", 5.0, 5.0)
    assert problem in caught.value.problem


def test_the_client_shifts_a_worker_clock_that_differs_by_more_than_the_round_trip():
    shifted = _resource_samples(_reply({"now_unix_s": 105.0}), "w", 4.99, 5.01)
    assert shifted.clock_offset_s == pytest.approx(100.0) and shifted.times_unix_s.tolist() == [-99.0, -98.0]
    assert _resource_samples(_reply({"now_unix_s": 5.005}), "w", 4.99, 5.01).clock_offset_s == 0.0


class DownSession:
    """A session whose one worker does not answer (nothing listens at its address)."""

    dead_devices = frozenset()

    def __init__(self) -> None:
        self.addresses = {"gone": "tcp://127.0.0.1:9"}

    def worker_client(self, device: str, timeout_s: float) -> WorkerClient:
        return WorkerClient(self.addresses[device], TOKEN, timeout_s=0.2, name=device)


def test_a_worker_that_stops_answering_loses_its_gauges_and_metrics_still_render():
    metrics = Metrics()
    metrics.set_resources("gone", {"cpu_percent": 12.0, "rss_bytes": 3e8})
    assert metric(metrics.render(), "splitinfer_worker_rss_bytes", device="gone") == 3e8
    poller = ResourcePoller(DownSession(), metrics, 0.1)
    poller.poll()
    text = metrics.render().decode()
    assert "splitinfer_worker_cpu_percent{" not in text and "splitinfer_worker_rss_bytes{" not in text
    assert "splitinfer_requests_total" in text
    poller.stop()


def test_a_bench_keeps_the_samples_of_its_window_timed_from_its_start():
    from splitinfer.runtime.bench_resources import _series
    from splitinfer.runtime.wire.client import ResourceSamples

    times = np.array([99.9, 100.05, 100.1, 100.2, 100.25, 100.4])  # the window: 100.0 to 100.2
    gpu = np.array([NAN, NAN, 10.0, 20.0, 30.0, NAN])
    samples = ResourceSamples(times, np.arange(6.0), np.full(6, 5e8), gpu, gpu * 1e8, 0.1, True, 4, "GPU 0")
    series = _series(samples, 100.0, 100.2)
    assert series.times_s == pytest.approx((0.05, 0.1, 0.2, 0.25))  # and the one covering the end
    assert series.cpu_percent == (1.0, 2.0, 3.0, 4.0) and series.rss_bytes == (500_000_000,) * 4
    assert series.gpu_util_percent == () and series.gpu == ""  # a GPU reading missing: no GPU series
    inside = _series(samples, 100.07, 100.2)
    assert inside.gpu_util_percent == (10.0, 20.0, 30.0) and inside.gpu_memory_bytes == (10**9, 2 * 10**9,
                                                                                          3 * 10**9)
    empty = _series(samples, 200.0, 201.0)
    assert empty.times_s == () and empty.note.startswith("no samples in the bench's 1 s")
