"""The coordinator's result inbox: callers read their own results, the background reads the rest."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest
import zmq

from splitinfer.runtime.coordinator._inbox import Inbox


class Harness:
    """A PULL socket read by an Inbox and a PUSH playing the last stage; message = request id."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.pull = self.context.socket(zmq.PULL)
        port = self.pull.bind_to_random_port("tcp://127.0.0.1")
        self.push = self.context.socket(zmq.PUSH)
        self.push.connect(f"tcp://127.0.0.1:{port}")
        self.futures: dict[int, Future] = {}
        self.readers: dict[int, str] = {}  # request id -> name of the thread that dispatched it
        self.lock = threading.Lock()
        self.inbox = Inbox(self.context, self.pull, self.dispatch, lambda: len(self.futures))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.inbox.serve, args=(self.stop,), name="background")
        self.thread.start()

    def dispatch(self, frames, received_unix_s: float) -> None:
        rid = int(bytes(frames[0]))
        if rid == 13:
            raise RuntimeError("a bug while dispatching")
        with self.lock:
            future = self.futures.pop(rid, None)
        self.readers[rid] = threading.current_thread().name
        if future is not None:
            future.set_result(rid)

    def submit(self, rid: int) -> Future:
        future: Future = Future()
        with self.lock:
            self.futures[rid] = future
        self.inbox.submitted()
        return future

    def reply(self, rid: int) -> None:
        self.push.send(str(rid).encode())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.inbox.close()
        self.context.destroy(linger=0)


@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.close()


def test_a_waiting_caller_reads_its_own_result(harness):
    with harness.inbox.waiting():
        future = harness.submit(1)
        harness.reply(1)
        assert harness.inbox.wait(future, 5.0)
    assert future.result() == 1
    assert harness.readers[1] == threading.current_thread().name  # no hand-off through another thread


def test_the_background_reads_results_nobody_waits_for(harness):
    done = threading.Event()
    future = harness.submit(2)
    future.add_done_callback(lambda _: done.set())
    harness.reply(2)
    assert done.wait(5.0)
    assert harness.readers[2] == "background"


def test_a_caller_takes_the_socket_from_the_background(harness):
    unwaited = harness.submit(3)  # the background reads for this one...
    time.sleep(0.05)
    mine = harness.submit(4)
    caller = threading.Thread(target=harness.inbox.wait, args=(mine, 5.0), name="caller")
    caller.start()  # ...until a caller wants the socket
    end = time.monotonic() + 5.0
    while harness.inbox._reader != "caller" and time.monotonic() < end:
        time.sleep(0.001)
    harness.reply(4)
    harness.reply(3)  # read by the caller while it waits
    caller.join(5.0)
    assert mine.result(timeout=5.0) == 4 and unwaited.result(timeout=5.0) == 3
    assert harness.readers[4] == "caller"
    harness.reply(5)  # nobody waits any more: the background takes over again, though nothing is pending
    unwaited_again = harness.submit(6)
    harness.reply(6)
    assert unwaited_again.result(timeout=5.0) == 6
    assert harness.readers[6] == "background"


def test_a_wait_times_out_and_returns_false(harness):
    future = harness.submit(50)
    start = time.monotonic()
    assert not harness.inbox.wait(future, 0.2)
    assert 0.15 < time.monotonic() - start < 1.0


def test_a_future_failed_elsewhere_ends_the_wait(harness):
    future = harness.submit(6)
    threading.Timer(0.1, lambda: future.set_exception(RuntimeError("deadline"))).start()
    start = time.monotonic()
    assert harness.inbox.wait(future, 10.0)
    assert time.monotonic() - start < 1.0
    with pytest.raises(RuntimeError):
        future.result()


def test_many_callers_each_get_their_own_result(harness):
    num = 16
    futures = {}
    errors: list[BaseException] = []

    def caller(rid: int) -> None:
        try:
            with harness.inbox.waiting():
                futures[rid] = harness.submit(rid)
                time.sleep(0.001 * (rid % 3))
                harness_lock.acquire()
                harness.reply(rid)  # one DEALER: sends serialised by a lock
                harness_lock.release()
                assert harness.inbox.wait(futures[rid], 10.0)
            assert futures[rid].result() == rid
        except BaseException as e:
            errors.append(e)

    harness_lock = threading.Lock()
    threads = [threading.Thread(target=caller, args=(100 + k,)) for k in range(num)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors, errors[0]
    assert sorted(futures) == list(range(100, 100 + num))


def test_the_background_reader_outlives_a_failing_dispatch(harness):
    unlucky = harness.submit(13)
    harness.reply(13)  # dispatch raises: logged, and the reader goes on
    later = harness.submit(14)
    harness.reply(14)
    assert later.result(timeout=5.0) == 14
    assert not unlucky.done()
