"""How a session deploys, waits and watches its workers (:class:`SessionOptions`), every field checked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from splitinfer.runtime.wire.client import MAX_WAIT_S
from splitinfer.units import check_number


@dataclass(frozen=True)
class SessionOptions:
    """How a session deploys, waits and watches its workers.

    Every duration is a finite number of seconds above 0 and at most a week; SplitinferError
    naming the field otherwise.
    """

    timeout_s: float = 30.0  # default deadline of each request
    heartbeat_interval_s: float = 0.5  # how often each worker is asked for health
    dead_after_s: float = 1.9  # a worker silent this long is dead (noticed within this + 0.05 s)
    deploy_timeout_s: float = 120.0  # building and warming up one stage's ONNX Runtime session
    connect_timeout_s: float = 5.0  # a worker must answer health this fast when the session starts
    startup_timeout_s: float = 60.0  # local worker processes must be ready this fast
    coordinator_host: str | None = None  # address workers use to reach this process (None: found)
    full_depth: bool = False  # every request runs every stage: no early exit answers (for evaluation)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name.endswith("_s"):
                check_number(getattr(self, f.name), f"SessionOptions.{f.name}", low=0, low_open=True,
                             high=MAX_WAIT_S, fix="seconds")
