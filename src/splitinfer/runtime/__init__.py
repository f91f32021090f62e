"""The distributed runtime: device workers, the zero-copy wire codec, emulated links, the coordinator.

Public API::

    deploy_stages(stages, cluster, *, token=None, replan=None, ...) -> Session
    Session.run / submit / stream / close, Result, RequestTiming
    StageSpec(index, device, model_bytes, inputs, outputs)
    WorkerClient(address, token)  # health, info, echo, profile, probe, undeploy, shutdown
    LocalLauncher / launch_local_workers(devices, token)  # the emulated continuum
    start_workers(cluster, token) -> (launcher, addresses)  # any backend
"""

from __future__ import annotations

from splitinfer.runtime.client import ProfileResult, WorkerClient
from splitinfer.runtime.launcher import Launcher, LocalLauncher, launch_local_workers, start_workers
from splitinfer.runtime.link import LinkShaper
from splitinfer.runtime.pipeline import StageSpec, check_chain
from splitinfer.runtime.session import Session, SessionOptions, deploy_stages
from splitinfer.runtime.timing import HopTiming, RequestTiming, Result, StageTiming

__all__ = [
    "HopTiming",
    "Launcher",
    "LinkShaper",
    "LocalLauncher",
    "ProfileResult",
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
