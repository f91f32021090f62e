"""From a plan to a running pipeline: cut the model as the plan says, deploy the stages, re-plan on failure.

::

    from splitinfer import deploy
    with deploy("plan.json", "cluster.yaml", "resnet18.onnx", profile="profile.json") as session:
        (logits,) = session.run(None, {"image": x})
        print(session.plan.latency_s, session.last_timing.latency_s)

The plan numbers blocks; the blocks are formed exactly as the profiler formed
them (the profile records the input shapes, ``max_cut_tensors`` and
``max_blocks``), so stage k gets blocks ``first_block..last_block`` of the same
analysis. With a profile the session re-plans when a device fails: it solves the
same objective again without the dead devices and moves pending requests to the
new stages. Without a profile there is no re-plan: requests on a dead device
fail with a WorkerError.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import onnx

from splitinfer.cluster import Cluster, load_cluster
from splitinfer.errors import ModelError, PlanError, SchemaError, ShapeError, read_file
from splitinfer.graph import Analysis, Model, analyze, extract_segment, load_model
from splitinfer.plan import Constraints, Plan, constraints_from_json, describe_stages, plan_from_json, solve
from splitinfer.profile.problem import build_problem
from splitinfer.profile.schema import Profile, load_profile
from splitinfer.runtime.pipeline import StageSpec
from splitinfer.runtime.session import Session, SessionOptions, deploy_stages

log = logging.getLogger("splitinfer.deploy")

PlanSource = Plan | str | Path
ClusterSource = Cluster | str | Path
ModelSource = Model | str | Path | bytes | onnx.ModelProto
ProfileSource = Profile | str | Path

DEFAULT_MAX_CUT_TENSORS = 4
DEFAULT_MAX_BLOCKS = 64


@dataclass(frozen=True)
class Blocks:
    """A model cut into the blocks a plan numbers."""

    model: Model
    analysis: Analysis


def read_plans(path: str | Path) -> list[Plan]:
    """Every plan in a plan.json file, best first."""
    return plan_from_json(read_file(path, "plan file",
                                    "check the path (write one with `splitinfer plan ... -o plan.json`)",
                                    PlanError))


def load_plan(source: PlanSource, rank: int = 1) -> Plan:
    """A Plan as is, or the plan of ``rank`` (1 = best) from a plan.json file."""
    if isinstance(source, Plan):
        return source
    path = Path(source)
    plans = read_plans(path)
    if not plans:
        raise SchemaError(f"plan file {path} has no plans", "write it with `splitinfer plan ... -o`")
    chosen = [p for p in plans if p.rank == rank] or (plans[rank - 1:rank] if rank >= 1 else [])
    if not chosen:
        raise PlanError(f"plan file {path} has no plan of rank {rank}",
                        f"pick a rank between 1 and {len(plans)}")
    return chosen[0]


def _profile(source: ProfileSource | None) -> Profile | None:
    if source is None or isinstance(source, Profile):
        return source
    return load_profile(source)


def _check_shapes(model: Model, wanted: Mapping[str, Sequence[int]]) -> None:
    have = {s.name: tuple(s.shape) for s in model.inputs}
    for name, shape in wanted.items():
        if name in have and have[name] != tuple(shape):
            raise ShapeError(f"model input {name!r} has shape {have[name]}, the profile was made with "
                             f"{tuple(shape)}", "load the model with the profile's input shapes")


def cut_blocks(model: ModelSource, profile: Profile | None = None) -> Blocks:
    """Load ``model`` and form its blocks as ``profile`` records (defaults without a profile).

    ModelError when the model is not the one the profile was made of.
    """
    shapes = dict(profile.model.input_shapes) if profile is not None else {}
    loaded = model if isinstance(model, Model) else load_model(model, input_shapes=shapes or None)
    _check_shapes(loaded, shapes)
    if profile is None:
        return Blocks(loaded, analyze(loaded, DEFAULT_MAX_CUT_TENSORS, DEFAULT_MAX_BLOCKS))
    if profile.model.sha256 != loaded.sha256:
        raise ModelError(f"the profile was made for model {profile.model.name} "
                         f"({profile.model.sha256[:12]}), not {loaded.name} ({loaded.sha256[:12]})",
                         "deploy the model file the profile was made of, or profile this one")
    analysis = analyze(loaded, profile.model.max_cut_tensors, profile.model.max_blocks)
    if analysis.num_blocks != len(profile.blocks):
        raise ModelError(f"the model splits into {analysis.num_blocks} blocks here, the profile has "
                         f"{len(profile.blocks)}", "re-profile the model with this version of splitinfer")
    return Blocks(loaded, analysis)


def check_plan(plan: Plan, blocks: Blocks, cluster: Cluster) -> None:
    """The plan must be of this model and cover its blocks 0..n-1 in order on the cluster's devices."""
    sha = plan.meta.get("model_sha256")
    if sha and sha != blocks.model.sha256:
        raise ModelError(f"the plan was made for model {plan.meta.get('model', '?')} ({sha[:12]}), not "
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


def build_stages(plan: Plan, blocks: Blocks) -> list[StageSpec]:
    """One StageSpec per plan stage: the partition of its blocks, placed on its device."""
    stages = []
    for k, stage in enumerate(plan.stages):
        part = extract_segment(blocks.model, blocks.analysis, stage.first_block, stage.last_block)
        stages.append(StageSpec(k, stage.device, part.to_bytes(), part.inputs, part.outputs))
    return stages


class Replanner:
    """The ``replan(excluded)`` callback: solve the plan's objective again without the excluded devices.

    It sets ``session.plan`` to each new plan; the session deploys exactly the stages returned
    last, so ``session.plan`` matches ``session.stages`` whenever the session is ready.
    InfeasibleError (no device left that can run a block) propagates: the session then fails
    its requests with that reason.
    """

    def __init__(self, plan: Plan, blocks: Blocks, profile: Profile, cluster: Cluster,
                 constraints: Constraints | None = None) -> None:
        self.plan = plan
        self.constraints = constraints or Constraints()
        self.blocks = blocks
        self.profile = profile
        self.cluster = cluster
        self.current = plan  # the plan of the stages returned last
        self.session: Session | None = None  # set once the session exists
        # A plan picked from a Pareto front is re-planned for the front's first axis: latency.
        self.objective = "latency" if plan.objective.startswith("pareto") else plan.objective

    def __call__(self, excluded: frozenset[str]) -> list[StageSpec]:
        problem = build_problem(self.profile, self.cluster)
        excludes = tuple(sorted(set(self.constraints.excludes) | excluded))
        constraints = dataclasses.replace(self.constraints, excludes=excludes)
        (new,) = solve(problem, self.objective, constraints, top_k=1)
        new = _stamp(new, self.plan.meta)
        log.warning("re-planned without %s: %s", sorted(excluded), describe_stages(new))
        stages = build_stages(new, self.blocks)
        self.current = new
        if self.session is not None:
            self.session.plan = new
        return stages


def _stamp(plan: Plan, meta: Mapping[str, str]) -> Plan:
    return msgspec.structs.replace(plan, meta={**meta, **plan.meta})


def deploy(plan: PlanSource, cluster: ClusterSource, model: ModelSource, *,
           profile: ProfileSource | None = None, token: bytes | None = None,
           options: SessionOptions | None = None, rank: int = 1, constraints: Constraints | None = None,
           **overrides: Any) -> Session:
    """Deploy ``plan`` (a Plan, or plan.json: the plan of ``rank``) of ``model`` onto ``cluster``.

    ``model``: a path, bytes, ModelProto or a loaded :class:`~splitinfer.graph.Model`.
    ``profile`` (a Profile or profile.json): how the blocks were formed, checked against the
    model's sha256, and the costs to re-plan with when a device fails (without it: no re-plan).
    ``constraints``: what a re-plan must still respect (default: those recorded in the plan's
    meta by ``splitinfer plan``, else none).
    ``token``, ``options`` and keyword overrides (``timeout_s=5``, ...): see
    :func:`~splitinfer.runtime.deploy_stages`. Returns a running :class:`Session` with
    ``session.plan`` (the current plan) and ``session.model`` (the loaded model); close it
    (or use ``with``) to stop the workers.
    """
    chosen = load_plan(plan, rank)
    the_cluster = cluster if isinstance(cluster, Cluster) else load_cluster(cluster)
    the_profile = _profile(profile)
    blocks = cut_blocks(model, the_profile)
    check_plan(chosen, blocks, the_cluster)
    stages = build_stages(chosen, blocks)
    replan = None
    if the_profile is not None:
        if constraints is None and "constraints" in chosen.meta:
            constraints = constraints_from_json(chosen.meta["constraints"])
        replan = Replanner(chosen, blocks, the_profile, the_cluster, constraints)
    session = deploy_stages(stages, the_cluster, token=token, replan=replan, options=options, **overrides)
    if replan is not None:  # a device may already have failed: the replanner knows the plan now deployed
        replan.session = session
        session.plan = replan.current
    else:
        session.plan = chosen
    session.model = blocks.model
    return session
