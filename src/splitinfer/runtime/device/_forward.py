"""Where a stage's outputs go after a run: the next stage (on this worker: handed over, no serialisation;
else over its link), the coordinator after the last stage, or, when an early exit answered, the
coordinator straight away with that exit's tensor alone (no later stage sees the request)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from splitinfer.runtime.device._stages import DeployedStage
from splitinfer.runtime.wire import codec, messages
from splitinfer.runtime.wire.messages import Message


def forward(stage: DeployedStage, header: messages.Infer, outputs: list[Any], stamp: messages.StageStamp,
            exited: str, *, token: bytes | None, mac_tensors: bool,
            hand_over: Callable[[Message], None]) -> None:
    """Send one request's outputs on (see the module); ``exited``: the exit that answered, or ''."""
    if exited:
        arrays: list[tuple[str, Any]] = [(exited, outputs[0])]
        link = stage.exit_link or stage.reply_link
    else:
        arrays = stage.outgoing(stage.runner.output_names, outputs)  # as they are for a hand-off here
        link = stage.link
    stamps = [*header.stamps, msgspec.structs.replace(stamp, sent_bytes=codec.sent_bytes(arrays))]
    if exited or stage.header.route.to_coordinator:
        out: Any = messages.Outputs(request_id=header.request_id, deployment_id=header.deployment_id,
                                    stamps=stamps, exit=exited)
    else:
        out = messages.Infer(request_id=header.request_id, deployment_id=header.deployment_id,
                             stage=header.stage + 1, deadline_unix_s=header.deadline_unix_s, stamps=stamps,
                             full_depth=header.full_depth, sequence=header.sequence,
                             sequence_start=header.sequence_start)
    if link is None:  # the next stage is on this worker
        hand_over(Message(out, arrays=dict(arrays), sent_unix_s=time.time()))  # handed over, received at once
        return
    frames = codec.encode(out, token, arrays=arrays, sender=link.sender, mac_tensors=mac_tensors,
                          part_bytes=link.part_bytes)
    link.send(frames, codec.payload_bytes(arrays))
