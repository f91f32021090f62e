"""The stages a worker hosts: the one owner of the stage table and of the links the stages send on.

Control handlers install and remove stages; the compute path looks them up.
Stages that send to the same place with the same shaping share one link
(reference-counted), so a device's uplink is one emulated wire however many
stages use it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from splitinfer.compression import Compression, parse_compression
from splitinfer.runtime.device._execution import StageRunner
from splitinfer.runtime.device._exits import ExitingRunner
from splitinfer.runtime.device._state import StatefulRunner, end_sequences
from splitinfer.runtime.wire import messages
from splitinfer.runtime.wire.link import LinkSender

# (address, bandwidth_bps, latency_s, to_coordinator, server_key) -> a sender
OpenLink = Callable[[str, float | None, float | None, bool, str], LinkSender]
_LinkKey = tuple[str, float | None, float | None, bool, str]


@dataclass
class DeployedStage:
    """A stage installed on a worker."""

    header: messages.Deploy
    runner: StageRunner | ExitingRunner | StatefulRunner
    link: LinkSender | None  # None: the next stage is on this worker
    reply_link: LinkSender  # to the coordinator, for errors about this stage's requests
    exit_link: LinkSender | None = None  # to the coordinator, shaped as to the sink: early exits' results

    @functools.cached_property
    def compression(self) -> Compression | None:
        """How outputs travel on ``link`` (checked when deployed); None: raw."""
        spec = self.header.route.compression
        return parse_compression(spec) if spec and self.link is not None else None

    def outgoing(self, names: list[str], outputs: list[Any]) -> list[tuple[str, Any]]:
        """The outputs as they go on the link: compressed where the route's compression takes them."""
        compression = self.compression
        if compression is None:
            return list(zip(names, outputs, strict=True))
        return [(name, compression.carry(out)) for name, out in zip(names, outputs, strict=True)]

    @functools.cached_property
    def where(self) -> dict[str, Any]:
        """What error replies about this stage's requests say about where they failed."""
        return {"deployment_id": self.header.deployment_id, "stage": self.header.stage}


class StageTable:
    """Install, remove and look up stages by (deployment id, stage index); safe from any thread."""

    def __init__(self, open_link: OpenLink) -> None:
        self._open_link = open_link
        self._lock = threading.Lock()
        self._stages: dict[tuple[str, int], DeployedStage] = {}
        self._links: dict[_LinkKey, tuple[LinkSender, int]] = {}

    def __len__(self) -> int:
        return len(self._stages)

    def get(self, deployment_id: str, stage: int) -> DeployedStage | None:
        """The installed stage, or None. Lock-free: a dict read is atomic, and this is the hot path."""
        return self._stages.get((deployment_id, stage))

    def install(self, header: messages.Deploy, runner: StageRunner | ExitingRunner | StatefulRunner) -> None:
        """Install a stage (replacing one with the same key) with links to where it sends."""
        route, exit_route = header.route, header.exit_route
        with self._lock:
            link = reply_link = exit_link = None
            try:  # all or nothing: a link that cannot open releases those opened before it
                if route.address is not None:
                    link = self._acquire((route.address, route.bandwidth_bps, route.latency_s,
                                          route.to_coordinator, route.server_key))
                reply_link = self._acquire((header.reply_to, None, None, True, header.reply_key))
                if header.exits and exit_route is not None and exit_route.address is not None:
                    exit_link = self._acquire((exit_route.address, exit_route.bandwidth_bps,
                                               exit_route.latency_s, True, exit_route.server_key))
            except BaseException:
                for opened in (link, reply_link):
                    self._release_link(opened)
                raise
            key = (header.deployment_id, header.stage)
            old = self._stages.get(key)
            self._stages[key] = DeployedStage(header, runner, link, reply_link, exit_link)
            if old is not None:
                self._release(old)

    def remove(self, deployment_id: str) -> int:
        """Remove the stages of one deployment (every stage for ''); returns how many."""
        with self._lock:
            keys = [k for k in self._stages if not deployment_id or k[0] == deployment_id]
            for key in keys:
                self._release(self._stages.pop(key))
        return len(keys)

    def end_sequences(self, deployment_id: str, sequences: list[str]) -> int:
        """Free these sequences' state on the deployment's stages here (device/_state.py); how many."""
        with self._lock:
            runners = [s.runner for k, s in self._stages.items() if k[0] == deployment_id]
        return end_sequences(runners, sequences)

    def close(self) -> None:
        """Drop every stage and close every link."""
        with self._lock:
            self._stages.clear()
            links, self._links = self._links, {}
        for sender, _ in links.values():
            sender.close()

    # ---- links, under _lock --------------------------------------------------------------
    def _acquire(self, key: _LinkKey) -> LinkSender:
        sender, count = self._links.get(key, (None, 0))
        if sender is None:
            sender = self._open_link(*key)
        self._links[key] = (sender, count + 1)
        return sender

    def _release(self, stage: DeployedStage) -> None:
        for link in (stage.link, stage.reply_link, stage.exit_link):
            self._release_link(link)

    def _release_link(self, sender: LinkSender | None) -> None:
        if sender is None:
            return
        for key, (s, count) in list(self._links.items()):
            if s is sender:
                if count <= 1:
                    del self._links[key]
                    s.close()
                else:
                    self._links[key] = (s, count - 1)
