"""What crosses the network between a coordinator and its workers (no ONNX here).

- ``messages``: the header structs of every message kind, error replies.
- ``codec``: frames <-> :class:`~.messages.Message`, zero-copy tensors, every validation.
- ``auth``: the shared token and the MAC over each message's head.
- ``sockets``: the one ZeroMQ socket factory and the in-process wake-up between threads.
- ``link``: an outgoing link with emulated bandwidth and latency.
- ``client``: :class:`~.client.WorkerClient`, request/reply with one worker.
"""
