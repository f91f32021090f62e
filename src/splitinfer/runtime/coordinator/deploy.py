"""From a plan to a running pipeline: cut the model as the plan says, deploy the stages, re-plan on failure.

::

    from splitinfer import deploy
    with deploy("plan.json", "cluster.yaml", "resnet18.onnx", profile="profile.json") as session:
        (logits,) = session.run(None, {"image": x})
        print(session.plan.latency_s, session.last_timing.latency_s)

The plan numbers blocks; the blocks are formed exactly as the profiler formed
them (:func:`~splitinfer.profile.blocks.cut_as_profiled`: the profile records the
input shapes, ``max_cut_tensors`` and ``max_blocks``), so stage k gets blocks
``first_block..last_block`` of the same analysis. With a profile the session
re-plans when a device fails: it solves the same objective again without the
dead devices and moves pending requests to the new stages. A trade-off plan is
replaced by a trade-off plan, within a quality budget (:func:`replan_tradeoffs`),
its stages quantised on the same calibration. Without a profile there is no
re-plan: requests on a dead device fail with a WorkerError.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnx

from splitinfer.cluster import Cluster, load_cluster
from splitinfer.data import Dataset
from splitinfer.errors import ModelError, PlanError, SplitinferError
from splitinfer.graph import Model, Partition, extract_segment
from splitinfer.graph.quantize import quantize_partitions
from splitinfer.plan import Constraints, Plan, Tradeoffs, describe_stages, solve, solve_tradeoffs
from splitinfer.profile.blocks import Blocks, cut_as_profiled
from splitinfer.profile.files import load_profile
from splitinfer.profile.problem import build_problem
from splitinfer.profile.schema import Profile
from splitinfer.profile.sizes import profile_at
from splitinfer.profile.tradeoff_profile import tradeoffs_for_planning
from splitinfer.records.plans import PlanSource, load_plan
from splitinfer.runtime.coordinator._exits import part_ranges, stage_exits
from splitinfer.runtime.coordinator.pipeline import LazyPart, StageSpec, check_chain
from splitinfer.runtime.coordinator.recovery import Replacement, Replan
from splitinfer.runtime.coordinator.session import Session, SessionOptions
from splitinfer.runtime.launch.start import session_token

log = logging.getLogger("splitinfer.deploy")

ClusterSource = Cluster | str | Path
ModelSource = Model | str | Path | bytes | onnx.ModelProto
ProfileSource = Profile | str | Path


def _profile(source: ProfileSource | None) -> Profile | None:
    if source is None or isinstance(source, Profile):
        return source
    return load_profile(source)


def check_plan(plan: Plan, blocks: Blocks, cluster: Cluster) -> None:
    """The plan must be of this model and cover its blocks 0..n-1 in order on the cluster's devices."""
    sha = plan.provenance.model_sha256
    if sha and sha != blocks.model.sha256:
        raise ModelError(f"the plan was made for model {plan.provenance.model or '?'} ({sha[:12]}), not "
                         f"{blocks.model.name} ({blocks.model.sha256[:12]})",
                         "deploy the model file the plan was made for, or plan for this one")
    if not plan.stages:
        raise PlanError("the plan has no stages", "plan again with `splitinfer plan`")
    num = blocks.analysis.num_blocks
    expected = 0
    for stage in plan.stages:
        if stage.first_block != expected or stage.last_block < stage.first_block:
            raise PlanError(f"the plan's stages {describe_stages(plan)} do not cover blocks in order from "
                            f"block {expected}", "plan again with `splitinfer plan`")
        cluster.device(stage.device)
        expected = stage.last_block + 1
    if expected != num:
        raise PlanError(f"the plan covers {expected} blocks, the model has {num} (with the profile's "
                        "block settings)", "deploy with the profile the plan was made from (--profile)")


Calibration = Dataset | np.ndarray | Sequence[Mapping[str, np.ndarray]]


def calibration_feeds(model: Model, calibration: Calibration) -> list[dict[str, np.ndarray]]:
    """Feed dicts of the model's one input from a data set or an array of samples (N first), in
    batches of the model's batch size (32 when it is not fixed); feed dicts pass through."""
    if not isinstance(calibration, Dataset | np.ndarray):
        return [dict(f) for f in calibration]
    if len(model.inputs) != 1:
        raise PlanError(f"the model has {len(model.inputs)} inputs; calibration from samples needs one",
                        "give calibration as feed dicts, one array per input")
    spec = model.inputs[0]
    data = calibration if isinstance(calibration, Dataset) else Dataset(np.asarray(calibration))
    data.check_fits(spec)
    size = spec.shape[0] if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0 else 32
    feeds = [{spec.name: np.ascontiguousarray(b)} for b in data.batches(size, drop_last=True)]
    if not feeds:
        raise PlanError(f"calibration has {len(data)} samples, the model takes batches of {size}",
                        f"give at least {size} samples")
    return feeds


def build_stages(plan: Plan, blocks: Blocks, calibration: Calibration | None = None) -> list[StageSpec]:
    """One StageSpec per plan stage: the partition of its blocks in the stage's precision (int8
    calibrated on ``calibration``'s real intermediate tensors), placed on its device, with the
    compression of the hop into it."""
    parts = [extract_segment(blocks.model, blocks.analysis, s.first_block, s.last_block) for s in plan.stages]
    # A stage making early exits runs as parts, split after each exit's block (runtime/device/_exits.py).
    split_at = stage_exits(plan, blocks)
    ranges = [part_ranges(s.first_block, s.last_block, split_at[k][0]) for k, s in enumerate(plan.stages)]
    pieces = [extract_segment(blocks.model, blocks.analysis, a, b) if len(r) > 1 else parts[k]
              for k, r in enumerate(ranges) for a, b in r]
    precisions = [s.precision for s, r in zip(plan.stages, ranges, strict=True) for _ in r]
    chain: list[bytes | LazyPart] = [_blob(p) for p in pieces]
    if any(p != "fp32" for p in precisions):
        feeds = calibration_feeds(blocks.model, calibration) if calibration is not None else None
        whole = [p.to_bytes() for p in pieces]
        chain = [q.SerializeToString() for q in quantize_partitions(whole, precisions, feeds)]
    # The hop into stage k: the upload for stage 0 (raw when stage 0 runs on the source), else cut k - 1.
    upload = next((h.compression for h in plan.hops if h.kind == "upload"), "none")
    into = [upload, *(h.compression for h in plan.hops if h.kind == "cut")]
    stages, start = [], 0
    for k, (stage, part, r) in enumerate(zip(plan.stages, parts, ranges, strict=True)):
        models, start = chain[start:start + len(r)], start + len(r)
        stages.append(StageSpec(k, stage.device, models[0], part.inputs, part.outputs,
                                compression="" if into[k] == "none" else into[k], exits=split_at[k][1],
                                more_parts=tuple(models[1:]),
                                state=tuple((p.past, p.present) for p in part.state)))
    return stages


def _blob(part: Partition) -> bytes | LazyPart:
    """A partition's bytes; read in only when it is deployed when its weights stay on disk."""
    if not part.is_external:
        return part.to_bytes()
    return LazyPart(part.blob)  # type: ignore[arg-type]  # a bytearray: bytes() would copy the weights


def plan_stages(plan: PlanSource, cluster: Cluster | str | Path, model: ModelSource, *,
                profile: ProfileSource | None = None, rank: int = 1,
                calibration: Calibration | None = None) -> list[StageSpec]:
    """The stages :func:`~splitinfer.runtime.coordinator.deploy.deploy` would deploy for ``plan``
    (cut as ``profile`` formed the blocks; int8 stages calibrated on ``calibration``), for
    :func:`chain_runner` or ``deploy_stages``."""
    chosen = load_plan(plan, rank)
    the_cluster = cluster if isinstance(cluster, Cluster) else load_cluster(cluster)
    # Each device in the configuration the plan chose (its workers start so, its stages deploy so).
    the_cluster = the_cluster.configured(chosen.configurations) if chosen.configurations else the_cluster
    the_profile = _profile(profile)
    blocks = cut_as_profiled(model, the_profile)
    check_plan(chosen, blocks, the_cluster)
    return build_stages(chosen, blocks, calibration)


def replan_tradeoffs(plan: Plan, profile: Profile, devices: Sequence[str]) -> Tradeoffs | None:
    """What a re-plan of ``plan`` may trade when deploy() is given no trade-offs.

    For a trade-off plan and a profile with a ``tradeoffs`` section: every precision the profile
    measured, every compression it timed on all of ``devices`` (any of them may receive a hop), and
    as the quality budget the plan's own predicted quality cost, so the replacement is predicted no
    worse than the plan it replaces. The budget the plan was made under would allow more, but
    plan.json does not record it; the plan's cost is within it, and fp32 with raw hops (cost 0)
    always fits, so a re-plan never fails for quality. None (a plain re-plan: fp32, raw hops) for a
    plan without trade-offs, or a profile without them (said in the log).
    """
    if not plan.has_tradeoffs:
        return None
    section = profile.tradeoffs
    if section is None:
        log.warning("the profile has no trade-offs: a re-plan of %s after a failure will be fp32 with "
                    "raw hops", describe_stages(plan))
        return None
    compressions = [n for n, c in section.compressions.items() if all(d in c.devices for d in devices)]
    return tradeoffs_for_planning(profile, devices, compressions=compressions,
                                  max_quality_drop=plan.quality_cost or 0.0)


class Replanner:
    """The ``replan(excluded)`` callback: solve the plan's objective again without the excluded devices.

    Returns the new stages with their plan; the session swaps both in together, so
    ``session.plan`` matches ``session.stages`` whenever the session is ready.
    InfeasibleError (no device left that can run a block) propagates: the session then fails
    its requests with that reason. With ``tradeoffs`` the new plan chooses precisions and
    compressions too, under their budget, and its int8 stages are calibrated on ``calibration``.
    """

    def __init__(self, plan: Plan, blocks: Blocks, profile: Profile, cluster: Cluster,
                 constraints: Constraints | None = None, *, tradeoffs: Tradeoffs | None = None,
                 calibration: Calibration | None = None) -> None:
        self.plan = plan
        self.constraints = constraints or Constraints()
        self.blocks = blocks
        self.profile = profile
        self.cluster = cluster
        self.tradeoffs = tradeoffs
        self.calibration = calibration
        # A plan picked from a Pareto front is re-planned for the front's first axis: latency.
        self.objective = "latency" if plan.objective.startswith("pareto") else plan.objective

    def __call__(self, excluded: frozenset[str]) -> Replacement:
        # At the size the plan was made for: the costs of the profile's other sizes differ.
        profile = profile_at(self.profile, self.plan.provenance.input_shapes)
        problem = build_problem(profile, self.cluster, in_flight=self.plan.provenance.in_flight,
                                exit_thresholds=self.plan.exit_thresholds)
        excludes = tuple(sorted(set(self.constraints.excludes) | excluded))
        constraints = dataclasses.replace(self.constraints, excludes=excludes)
        if self.tradeoffs is None:
            (new,) = solve(problem, self.objective, constraints, top_k=1)
        else:
            (new,) = solve_tradeoffs(problem, self.tradeoffs, self.objective, constraints, 1)
        # The new plan comes from the same model, profile and cluster, under the same constraints.
        new = msgspec.structs.replace(new, provenance=self.plan.provenance,
                                      exit_thresholds=self.plan.exit_thresholds)
        log.warning("re-planned without %s: %s", sorted(excluded), describe_stages(new))
        return Replacement(tuple(build_stages(new, self.blocks, self.calibration)), new)


def deploy(plan: PlanSource, cluster: ClusterSource, model: ModelSource, *,
           profile: ProfileSource | None = None, token: bytes | None = None,
           options: SessionOptions | None = None, rank: int = 1, constraints: Constraints | None = None,
           calibration: Calibration | None = None, tradeoffs: Tradeoffs | None = None,
           **overrides: Any) -> Session:
    """Deploy ``plan`` (a Plan, or plan.json: the plan of ``rank``) of ``model`` onto ``cluster``.

    ``model``: a path, bytes, ModelProto or a loaded :class:`~splitinfer.graph.Model`.
    ``profile`` (a Profile or profile.json): how the blocks were formed, checked against the
    model's sha256, and the costs to re-plan with when a device fails (without it: no re-plan).
    ``constraints``: what a re-plan must still respect (default: those recorded in the plan's
    provenance by ``splitinfer plan``, else none).
    ``calibration`` (a Dataset, an array of samples or feed dicts): for a trade-off plan with int8
    stages, the real inputs their quantisation is calibrated on (a re-plan's too).
    ``tradeoffs``: what a re-plan may trade, with its quality budget (default for a trade-off plan:
    :func:`replan_tradeoffs` of the profile; a re-plan of a plain plan stays plain).
    ``token``, ``options`` and keyword overrides (``timeout_s=5``, ...): see
    :func:`~splitinfer.runtime.deploy_stages`. Returns a running :class:`Session` with
    ``session.plan`` (the current plan) and ``session.model`` (the loaded model); close it
    (or use ``with``) to stop the workers.
    """
    chosen = load_plan(plan, rank)
    the_cluster = cluster if isinstance(cluster, Cluster) else load_cluster(cluster)
    # Each device in the configuration the plan chose (its workers start so, its stages deploy so).
    the_cluster = the_cluster.configured(chosen.configurations) if chosen.configurations else the_cluster
    the_profile = _profile(profile)
    blocks = cut_as_profiled(model, the_profile)
    check_plan(chosen, blocks, the_cluster)
    stages = build_stages(chosen, blocks, calibration)
    replan = None
    if the_profile is not None:
        if constraints is None:
            constraints = chosen.provenance.constraints
        if tradeoffs is None:
            tradeoffs = replan_tradeoffs(chosen, the_profile, the_cluster.device_names)
        replan = Replanner(chosen, blocks, the_profile, the_cluster, constraints, tradeoffs=tradeoffs,
                           calibration=calibration)
    return deploy_stages(stages, the_cluster, token=token, replan=replan, options=options, plan=chosen,
                         model=blocks.model, **overrides)


def deploy_stages(stages: Sequence[StageSpec], cluster: Cluster, *, token: bytes | None = None,
                  replan: Replan | None = None, options: SessionOptions | None = None,
                  plan: Plan | None = None, model: Model | None = None, **overrides: Any) -> Session:
    """Start local workers, deploy the chain of stages and return a running :class:`Session`.

    ``token``: the shared secret (default: the cluster's ``token_file``, else a random one,
    which only local workers can know). ``replan(excluded_devices)`` returns new stages when
    a device fails (None: requests on a failed device fail). ``options`` (or keyword
    overrides of its fields, e.g. ``timeout_s=5``): see :class:`SessionOptions`. ``plan`` and
    ``model``: what the stages were made from (``session.plan``, ``session.model``).
    """
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(SessionOptions)})
    if unknown:
        raise SplitinferError(f"unknown session option {unknown[0]!r}", "use fields of SessionOptions: " +
                              ", ".join(f.name for f in dataclasses.fields(SessionOptions)))
    options = dataclasses.replace(options or SessionOptions(), **overrides)
    check_chain(stages, cluster)
    token = token if token is not None else session_token(cluster)
    session = Session(cluster, token=token, replan=replan, options=options, plan=plan, model=model)
    try:
        session._start(stages)
    except BaseException:
        session.close()
        raise
    return session
