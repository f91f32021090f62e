"""Replay protection: every signed message kind is accepted once, fresh, and not by a later run.

In process (the guard's rules), at a real worker (each kind it takes; a captured shutdown against a
worker restarted with the same token), at a session's result socket (outputs, error) and at a client
(done, error).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest
import zmq
from helpers.runtime_models import local_cluster, mlp_parts, stages_on, whole_and_parts

from splitinfer.errors import ErrorCode, TransportError, WorkerError, error_from_code
from splitinfer.runtime import WorkerClient, deploy_stages
from splitinfer.runtime.wire import codec, messages, replay
from splitinfer.runtime.wire.replay import START_SKEW_S, ReplayGuard, Sender

TOKEN = b"replay-token-0123456789"
_META = messages.TensorMeta("t0", "float32", (2, 16))
EVERY_SIGNED_KIND = [
    messages.Deploy(deployment_id="d", stage=0, device="w", inputs=[_META], outputs=[_META],
                    route=messages.Route("tcp://127.0.0.1:9", True), reply_to="tcp://127.0.0.1:9"),
    messages.Undeploy(), messages.Info(), messages.TimePartition(),
    messages.Probe(address="tcp://127.0.0.1:9", sizes_bytes=[1]), messages.Shutdown(), messages.Echo(),
    messages.Infer(deployment_id="d", stage=0, deadline_unix_s=2e9), messages.Outputs(deployment_id="d"),
    messages.ErrorReply(code="failed", problem="p"), messages.Done(data={"x": 1})]


def _refused(check) -> TransportError:
    with pytest.raises(TransportError) as e:
        check()
    assert e.value.code == ErrorCode.REPLAY and "replay" in e.value.problem and e.value.fix
    return e.value


@pytest.mark.parametrize("header", EVERY_SIGNED_KIND, ids=lambda h: type(h).__name__)
def test_each_signed_kind_is_accepted_once(header):
    guard = ReplayGuard()
    frames = codec.encode(header, TOKEN)
    guard.check(codec.decode(frames, TOKEN))
    _refused(lambda: guard.check(codec.decode(frames, TOKEN)))
    guard.check(codec.decode(codec.encode(header, TOKEN), TOKEN))  # the same header, sent anew
    assert isinstance(error_from_code("replay", "p"), TransportError)


def _msg(sender: Sender, sent_unix_s: float | None = None) -> messages.Message:
    frames = [codec.pack_head(TOKEN, msgspec.msgpack.encode(messages.Info()), sent_unix_s=sent_unix_s,
                              sender=sender)]
    return codec.decode(frames, TOKEN)


def test_numbers_may_arrive_out_of_order_but_each_only_once():
    guard, sender = ReplayGuard(), Sender()
    batch = [_msg(sender) for _ in range(replay.REORDER_WINDOW + 30)]
    for msg in [*batch[5:20], *batch[:5]]:  # threads sharing a sender may hand them over late
        guard.check(msg)
    for msg in batch[:20]:
        _refused(lambda msg=msg: guard.check(msg))
    guard.check(batch[-1])  # jumps ahead: number 21 now lies behind the window, unseen or not
    assert "behind" in _refused(lambda: guard.check(batch[20])).problem
    guard.check(batch[-2])


def test_messages_outside_the_time_window_are_refused():
    now = time.time()
    guard, sender = ReplayGuard(started_unix_s=now - 2 * replay.REPLAY_WINDOW_S), Sender()
    for sent in (now - replay.REPLAY_WINDOW_S - 1, now + replay.REPLAY_WINDOW_S + 1, float("nan")):
        _refused(lambda sent=sent: guard.check(_msg(sender, sent)))
    guard.check(_msg(sender, now - replay.REPLAY_WINDOW_S + 5))  # old but inside the window


def test_a_new_receiver_refuses_what_was_sent_before_it_started():
    sender, started = Sender(), time.time()
    captured, recent = _msg(sender, started - START_SKEW_S - 0.5), _msg(sender, started - START_SKEW_S / 2)
    guard = ReplayGuard(started_unix_s=started)
    assert "before this receiver started" in _refused(lambda: guard.check(captured)).problem
    guard.check(recent)  # clocks that disagree a little


def test_a_forgotten_sender_cannot_be_replayed_but_may_send_anew():
    guard = ReplayGuard(max_senders=2, started_unix_s=time.time() - 10)
    first, second, third = Sender(), Sender(), Sender()
    now = time.time()
    old = _msg(first, now - 3)
    for msg in (old, _msg(second, now - 2), _msg(third, now - 1)):  # the third pushes the first out
        guard.check(msg)
    _refused(lambda: guard.check(old))
    guard.check(_msg(first))


def test_the_mac_covers_sender_and_sequence_number():
    frames = codec.encode(messages.Info(), TOKEN)
    for offset in (auth_end := codec.HEAD_PREFIX_BYTES - 20, auth_end + 8):  # nonce, then sequence number
        head = bytearray(frames[0])
        head[offset] ^= 1
        assert not codec.decode([bytes(head)], TOKEN).authenticated


def test_a_forked_child_sends_under_new_nonces():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its default sender's nonce, nothing else
        os.write(write, replay.DEFAULT_SENDER.nonce.to_bytes(8, "little"))
        os._exit(0)
    os.close(write)
    child_nonce = int.from_bytes(os.read(read, 8), "little")
    os.close(read)
    os.waitpid(pid, 0)
    assert child_nonce != replay.DEFAULT_SENDER.nonce


# ---- a real worker ------------------------------------------------------------------------------
def _start_worker(tmp: Path) -> tuple[subprocess.Popen, str]:
    token_file = tmp / "token"
    token_file.write_bytes(TOKEN + b"\n")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "splitinfer"), "worker", "--name", "w",
                             "--listen", "tcp://127.0.0.1:*", "--num-threads", "1", "--token-file",
                             str(token_file)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip()
    proc.stdout.close()
    assert line.startswith("READY "), line
    return proc, line.split(" ", 1)[1]


def _reply(sock: zmq.Socket) -> messages.Message:
    assert sock.poll(15_000), "no reply from the worker"
    return codec.decode(sock.recv_multipart(), TOKEN)


def test_a_worker_takes_each_signed_message_once_and_a_restarted_one_ignores_a_captured_shutdown(tmp_path):
    _, parts = whole_and_parts(mlp_parts(1, width=16, batch=2))
    model, inputs, outputs = parts[0]
    x = np.zeros((2, 16), np.float32)
    context = zmq.Context()
    procs = []
    try:
        coordinator = context.socket(zmq.PULL)
        result_address = f"tcp://127.0.0.1:{coordinator.bind_to_random_port('tcp://127.0.0.1')}"
        proc, address = _start_worker(tmp_path)
        procs.append(proc)
        dealer = context.socket(zmq.DEALER)
        dealer.connect(address)
        metas = [[messages.TensorMeta(s.name, s.dtype, s.shape) for s in specs]
                 for specs in (inputs, outputs)]
        deploy = messages.Deploy(request_id=1, deployment_id="rp", stage=0, device="w", inputs=metas[0],
                                 outputs=metas[1], route=messages.Route(result_address, True),
                                 reply_to=result_address)
        cases = [
            codec.encode(deploy, TOKEN, blobs=[model]),
            codec.encode(messages.Infer(request_id=2, deployment_id="rp", stage=0,
                                        deadline_unix_s=time.time() + 30), TOKEN, arrays=[("t0", x)]),
            codec.encode(messages.Info(request_id=3), TOKEN),
            codec.encode(messages.Echo(request_id=4), TOKEN, blobs=[b"hi"]),
            codec.encode(messages.TimePartition(request_id=5, num_warmup=0, min_runs=1, max_runs=1), TOKEN,
                         blobs=[model], arrays=[("t0", x)]),
            codec.encode(messages.Probe(request_id=6, address=address, sizes_bytes=[10], num_repeats=1),
                         TOKEN),
            codec.encode(messages.Undeploy(request_id=7, deployment_id="rp"), TOKEN),
        ]
        for k, frames in enumerate(cases, start=1):
            dealer.send_multipart(frames)
            if k == 2:  # an infer's outputs go to the coordinator
                assert coordinator.poll(15_000) and isinstance(
                    codec.decode(coordinator.recv_multipart(), TOKEN).header, messages.Outputs)
            else:
                assert isinstance(_reply(dealer).header, messages.Done), k
            dealer.send_multipart(frames)  # the replay
            refusal = _reply(dealer).header
            assert isinstance(refusal, messages.ErrorReply) and refusal.code == "replay", (k, refusal)
            assert refusal.request_id == k
        assert not coordinator.poll(200)  # the replayed infer ran nowhere

        shutdown = codec.encode(messages.Shutdown(request_id=8), TOKEN)
        sent_unix_s = codec.decode(shutdown, TOKEN).sent_unix_s
        dealer.send_multipart(shutdown)
        assert isinstance(_reply(dealer).header, messages.Done)
        assert proc.wait(10) == 0
        time.sleep(max(0.0, sent_unix_s + START_SKEW_S + 0.1 - time.time()))
        proc, address = _start_worker(tmp_path)  # the same token, a later run
        procs.append(proc)
        again = context.socket(zmq.DEALER)
        again.connect(address)
        again.send_multipart(shutdown)
        refusal = _reply(again).header
        assert isinstance(refusal, messages.ErrorReply) and refusal.code == "replay", refusal
        with WorkerClient(address, TOKEN) as client:
            assert client.health()["name"] == "w" and proc.poll() is None
            client.shutdown()  # a fresh one works
        assert proc.wait(10) == 0
    finally:
        context.destroy(linger=0)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


# ---- a session's result socket ------------------------------------------------------------------
def test_a_session_refuses_replayed_outputs_and_errors(caplog):
    caplog.set_level(logging.WARNING, logger="splitinfer.session")
    _, parts = whole_and_parts(mlp_parts(1, width=16, batch=2))
    x = np.zeros((2, 16), np.float32)
    with deploy_stages(stages_on(parts, ["a"]), local_cluster(["a"]), token=TOKEN, timeout_s=20) as session:
        context = zmq.Context()
        try:
            push = context.socket(zmq.PUSH)
            push.connect(session.result_address)
            for header in (messages.Outputs(request_id=10**9, deployment_id="old"),
                           messages.ErrorReply(request_id=10**9 + 1, code="failed", problem="old")):
                frames = codec.encode(header, TOKEN)
                push.send_multipart(frames)
                push.send_multipart(frames)  # the replay
            deadline = time.monotonic() + 20

            def refusals() -> list[str]:
                return [r.getMessage() for r in caplog.records if "refused as a replay" in r.getMessage()]
            while len(refusals()) < 2:  # a waiting caller reads the result socket, these too
                assert time.monotonic() < deadline, caplog.records
                session.run(None, {"t0": x})
        finally:
            context.destroy(linger=0)
    assert [("Outputs" in r, "ErrorReply" in r) for r in refusals()] == [(True, False), (False, True)]


# ---- a client's replies ---------------------------------------------------------------------------
def test_a_client_ignores_replayed_replies():
    fake = Sender()  # a stand-in worker's replies
    done = codec.encode(messages.Done(request_id=1, data={"n": "original"}), TOKEN, sender=fake)
    error = codec.encode(messages.ErrorReply(request_id=-1, code="failed", problem="boom"), TOKEN,
                         sender=fake)
    fresh = "fresh"  # encoded when sent: after the later client started
    script = [[done], [error], [error, codec.encode(messages.Done(request_id=3, data={"n": "third"}), TOKEN,
                                                    sender=fake)], [done, fresh], [done]]
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    address = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"

    def serve() -> None:
        for replies in script:
            if not router.poll(15_000):
                return
            identity = router.recv_multipart()[0]
            for frames in replies:
                if frames is fresh:
                    frames = codec.encode(messages.Done(request_id=1, data={"n": "fresh"}), TOKEN,
                                          sender=fake)
                router.send_multipart([identity, *frames])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with WorkerClient(address, TOKEN, timeout_s=15) as client:
            assert client.request(messages.Info()).header.data == {"n": "original"}
            with pytest.raises(WorkerError, match="boom"):
                client.request(messages.Info())
            assert client.request(messages.Info()).header.data == {"n": "third"}  # not "boom" again
        # A later client may be sent a reply captured before it started.
        time.sleep(max(0.0, codec.decode(done, TOKEN).sent_unix_s + START_SKEW_S + 0.1 - time.time()))
        with WorkerClient(address, TOKEN, timeout_s=15) as later:  # its request 1 again
            assert later.request(messages.Info()).header.data == {"n": "fresh"}
        with WorkerClient(address, TOKEN, timeout_s=1) as stale:  # no other answer: it says why
            _refused(lambda: stale.request(messages.Info()))
        thread.join(5)
    finally:
        context.destroy(linger=0)
