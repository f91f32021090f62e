"""The distributed runtime: device workers, the wire between them, launchers, the coordinator.

Rooms (see ARCHITECTURE.md; lower rooms never import higher ones):

- ``wire/``: messages, codec, auth, sockets, links, :class:`WorkerClient`.
- ``device/``: the worker process: IO, compute and control loops, its stage table.
- ``launch/``: :func:`start_workers` for local processes, network namespaces, Ray actors.
- ``coordinator/``: :class:`Session`, pipelines, in-flight requests, heartbeats, recovery, deploy.
- ``bench``, ``gateway``, ``profiling``, ``refine``: tools built on a session.

Public API::

    deploy_stages(stages, cluster, *, token=None, replan=None, plan=None, model=None, ...) -> Session
    Session.run / submit / stream / close, Result, RequestTiming
    StageSpec(index, device, model_bytes, inputs, outputs)
    WorkerClient(address, token)  # health, info, echo, time_partition -> PartitionTiming, probe, ...
    LocalLauncher / launch_local_workers(devices, token)  # the emulated continuum
    start_workers(cluster, token) -> (launcher, addresses)  # any backend
"""

from __future__ import annotations

from splitinfer.profile.partition_timing import PartitionTiming
from splitinfer.runtime.coordinator.deploy import deploy_stages
from splitinfer.runtime.coordinator.pipeline import StageSpec, check_chain
from splitinfer.runtime.coordinator.session import Session, SessionOptions
from splitinfer.runtime.coordinator.timing import HopTiming, RequestTiming, Result, StageTiming
from splitinfer.runtime.launch.local import LocalLauncher, launch_local_workers
from splitinfer.runtime.launch.start import Launcher, start_workers
from splitinfer.runtime.wire.client import WorkerClient
from splitinfer.runtime.wire.link import LinkShaper

__all__ = [
    "HopTiming",
    "Launcher",
    "LinkShaper",
    "LocalLauncher",
    "PartitionTiming",
    "RequestTiming",
    "Result",
    "Session",
    "SessionOptions",
    "StageSpec",
    "StageTiming",
    "WorkerClient",
    "check_chain",
    "deploy_stages",
    "launch_local_workers",
    "start_workers",
]
