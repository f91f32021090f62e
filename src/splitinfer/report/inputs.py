"""What a report is made of: the profile, the plans, the bench result, and the choices between them.

The bench result is :class:`splitinfer.records.bench.BenchResult`; the report reads
only its fields (plan, num_requests, concurrency, latency and throughput figures,
stages, hops, latencies_s), so any object with those attributes will do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from splitinfer.errors import PlanError
from splitinfer.plan import Hop, Plan, Stage
from splitinfer.profile.schema import Profile

# Colours of devices, in the order they are first seen (tab10 without red, kept for errors).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#aec7e8")
TRANSFER_COLOR = "#b0b0b0"


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows; ``chosen`` is the plan of the timeline and block graph."""

    profile: Profile
    plans: tuple[Plan, ...]
    bench: Any | None
    chosen: Plan | None
    colors: dict[str, str]
    model_label: str

    @property
    def ranked_plans(self) -> tuple[Plan, ...]:
        """The plans to compare side by side: all but the Pareto fronts (or the fronts if only they)."""
        plain = tuple(p for p in self.plans if not p.objective.startswith("pareto"))
        return plain or self.plans

    @property
    def pareto_plans(self) -> tuple[Plan, ...]:
        return tuple(p for p in self.plans if p.objective.startswith("pareto"))


def request_steps(plan: Plan) -> list[Stage | Hop]:
    """The stages and hops of ``plan`` in the order a request meets them: upload, stage, cut, stage, ...,
    return (``plan.hops`` lists every upload, cut and return, cuts in the order of the stages)."""
    cuts = iter([h for h in plan.hops if h.kind == "cut"])
    steps: list[Stage | Hop] = [h for h in plan.hops if h.kind == "upload"]
    for i, stage in enumerate(plan.stages):
        hop = next(cuts, None) if i else None
        steps += [stage] if hop is None else [hop, stage]
    return steps + [h for h in plan.hops if h.kind == "return"]


def hop_s(hop: Hop) -> float:
    """A hop's predicted seconds: on the link, plus compressing and restoring (as a plan's latency counts)."""
    return hop.transfer_s + hop.codec_s


def device_colors(profile: Profile, plans: tuple[Plan, ...]) -> dict[str, str]:
    """A fixed colour per device, the same in every figure."""
    names = list(profile.devices)
    for plan in plans:
        names += [s.device for s in plan.stages] + [h.src for h in plan.hops] + [h.dst for h in plan.hops]
    colors: dict[str, str] = {}
    for name in names:
        if name not in colors:
            colors[name] = PALETTE[len(colors) % len(PALETTE)]
    return colors


def _check_plan(plan: Plan, profile: Profile, where: str) -> None:
    """The plan must place exactly the profile's blocks, and be of the same model when it says which."""
    num = len(profile.blocks)
    covered = [b for s in plan.stages for b in range(s.first_block, s.last_block + 1)]
    if covered != list(range(num)):
        raise PlanError(
            f"{where} ({plan.objective} #{plan.rank}) places blocks 0-{len(covered) - 1}, "
            f"the profile has {num} blocks",
            "report a plan made from this profile (splitinfer plan PROFILE -o plan.json)",
        )
    sha = plan.provenance.model_sha256
    if sha and sha != profile.model.sha256:
        raise PlanError(f"{where} is of model {sha[:12]}, the profile of {profile.model.sha256[:12]}",
                        "report a plan made from this profile (splitinfer plan PROFILE -o plan.json)")


def gather(
    profile: Profile, plans: list[Plan] | None, bench: Any | None, model_label: str = ""
) -> ReportData:
    """Pick the chosen plan (the bench's, else the first listed) and the colours."""
    listed = tuple(plans or ())
    for plan in listed:
        _check_plan(plan, profile, "a plan")
    if bench is not None:
        _check_plan(bench.plan, profile, "the bench's plan")
        sha = getattr(bench, "model_sha256", "")
        if sha and sha != profile.model.sha256:
            raise PlanError(f"the bench ran model {sha[:12]}, the profile is of {profile.model.sha256[:12]}",
                            "report a bench run of a plan made from this profile")
    chosen = bench.plan if bench is not None else listed[0] if listed else None
    every = (*listed, chosen) if chosen is not None else listed
    return ReportData(profile, listed, bench, chosen, device_colors(profile, every),
                      model_label or profile.model.name)
