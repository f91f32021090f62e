"""Why is there no plan? Find the constraint to blame and say how to relax it.

Obvious conflicts are found directly (a block pinned to an excluded device, the
private blocks on a source that cannot run them, no link from the source...).
Otherwise every constraint is relaxed in turn, and the first one whose removal
lets a plan exist is named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from splitinfer.errors import InfeasibleError
from splitinfer.plan.constraint_checks import allowed_matrix
from splitinfer.plan.memory import StageMemory
from splitinfer.plan.problem import Constraints, Instance

Probe = Callable[[Instance, Constraints, str], bool]


def _explain_pin(inst: Instance, cons: Constraints, b: int, d: str) -> InfeasibleError | None:
    if d in cons.excludes:
        return InfeasibleError(f"--pin {b}={d} conflicts with --exclude {d}", "drop one of them")
    if (b, d) in cons.forbids:
        return InfeasibleError(f"--pin {b}={d} conflicts with --forbid {b}={d}", "drop one of them")
    if not np.isfinite(inst.compute_s[b, inst.names.index(d)]):
        return InfeasibleError(
            f"--pin {b}={d}: {d} cannot run block {b} (no time measured there)",
            f"pin block {b} to a device that can run it, or profile it on {d}",
        )
    src = inst.names[inst.source]
    if b < cons.private_blocks and d != src:
        return InfeasibleError(
            f"--pin {b}={d} conflicts with --private-blocks {cons.private_blocks} "
            f"(block {b} stays on the source {src})",
            "drop one of them",
        )
    return None


def _explain_private(inst: Instance, cons: Constraints, b: int) -> InfeasibleError | None:
    src = inst.names[inst.source]
    flag = f"--private-blocks {cons.private_blocks}"
    if src in cons.excludes:
        return InfeasibleError(f"{flag} conflicts with --exclude {src} (the source)", "drop one of them")
    if (b, src) in cons.forbids:
        return InfeasibleError(f"{flag} conflicts with --forbid {b}={src}", "drop one of them")
    if not np.isfinite(inst.compute_s[b, inst.source]):
        return InfeasibleError(
            f"{flag}: the source {src} cannot run block {b} (no time measured there)",
            f"keep fewer blocks private (at most {b}) or profile block {b} on {src}",
        )
    return None


def _explain_block(inst: Instance, cons: Constraints, b: int) -> InfeasibleError:
    pins = sorted({d for bb, d in cons.pins if bb == b})
    if len(pins) > 1:
        return InfeasibleError(
            f"block {b} is pinned to {' and '.join(pins)}", f"keep one --pin for block {b}"
        )
    if not np.isfinite(inst.compute_s[b]).any():
        return InfeasibleError(
            f"block {b} has no measured time on any device", "profile it on at least one device"
        )
    found = _explain_pin(inst, cons, b, pins[0]) if pins else None
    if found is None and b < cons.private_blocks:
        found = _explain_private(inst, cons, b)
    if found is not None:
        return found
    local = allowed_matrix(inst, cons)
    src = inst.names[inst.source]
    if b == 0 and local[0].any() and not (local[0] & np.isfinite(inst.upload_s)).any():
        return InfeasibleError(
            f"no device that may run block 0 is linked from the source {src}",
            f"add a link from {src} in cluster.yaml, or let block 0 run on {src}",
        )
    if b == inst.num_blocks - 1 and local[b].any() and inst.sink is not None:
        sink = inst.names[inst.sink]
        return InfeasibleError(
            f"no device that may run block {b} has a link to the sink {sink}",
            f"add a link to {sink} in cluster.yaml, or set sink: none",
        )
    able = [inst.names[d] for d in np.flatnonzero(np.isfinite(inst.compute_s[b]))]
    return InfeasibleError(
        f"block {b} may run on no device: the devices that can run it "
        f"({', '.join(able)}) are excluded or forbidden",
        f"drop an --exclude or --forbid that covers block {b}",
    )


def local_conflict(
    inst: Instance, cons: Constraints, allowed: np.ndarray, revisits: bool
) -> InfeasibleError | None:
    """An obvious conflict between constraints, or None."""
    for d in cons.requires:
        if d in cons.excludes:
            return InfeasibleError(f"--require {d} conflicts with --exclude {d}", "drop one of them")
    for b in range(inst.num_blocks):
        if not allowed[b].any():
            return _explain_block(inst, cons, b)
    for d in cons.requires:
        if not allowed[:, inst.names.index(d)].any():
            return InfeasibleError(
                f"--require {d}: {d} may run no block under the other constraints",
                f"allow some block on {d}, or drop --require {d}",
            )
    required = len(set(cons.requires))
    if cons.max_stages is not None and required > cons.max_stages:
        return InfeasibleError(
            f"--max-stages {cons.max_stages} leaves no room for the {required} required devices",
            "allow more stages or require fewer devices",
        )
    return None


def _relaxations(
    inst: Instance, cons: Constraints, revisits: bool
) -> list[tuple[str, Instance, Constraints]]:
    rep = dataclasses.replace
    out: list[tuple[str, Instance, Constraints]] = []
    for field, flag in (("pins", "pin"), ("forbids", "forbid")):
        for pair in getattr(cons, field):
            rest = tuple(p for p in getattr(cons, field) if p != pair)
            out.append((f"--{flag} {pair[0]}={pair[1]}", inst, rep(cons, **{field: rest})))
    for field, flag in (("excludes", "exclude"), ("requires", "require")):
        for name in getattr(cons, field):
            rest = tuple(n for n in getattr(cons, field) if n != name)
            out.append((f"--{flag} {name}", inst, rep(cons, **{field: rest})))
    if cons.private_blocks:
        out.append((f"--private-blocks {cons.private_blocks}", inst, rep(cons, private_blocks=0)))
    if cons.max_stages is not None:
        out.append((f"--max-stages {cons.max_stages}", inst, rep(cons, max_stages=None)))
    if not revisits:
        out.append(
            (
                "no revisits (each device hosting one stage; allow with --revisits)",
                inst,
                rep(cons, revisits=True),
            )
        )
    for field, flag in (
        ("max_latency_s", "max-latency"),
        ("min_throughput_rps", "min-throughput"),
        ("max_upload_bytes", "max-upload-bytes"),
        ("max_energy_j", "max-energy"),
    ):
        if getattr(cons, field) is not None:
            out.append((f"--{flag} {getattr(cons, field)}", inst, rep(cons, **{field: None})))
    if np.isfinite(inst.capacity_bytes).any():
        unlimited = np.full(inst.num_devices, np.inf)
        unlimited.setflags(write=False)
        out.append(("the devices' memory capacity", rep(inst, capacity_bytes=unlimited), cons))
    return out


def _memory_detail(inst: Instance) -> str:
    """The device closest to holding the whole model alone: its need against its capacity."""
    whole = StageMemory.of(inst).stage(0, inst.num_blocks - 1)
    limited = [d for d in range(inst.num_devices) if np.isfinite(inst.capacity_bytes[d])]
    if not limited:
        return ""
    d = max(limited, key=lambda d: inst.capacity_bytes[d])
    return (f" (the whole model needs {whole / 1e6:.2f} MB on {inst.names[d]}, which has "
            f"{inst.capacity_bytes[d] / 1e6:.2f} MB)")


def infeasible_error(
    inst: Instance, cons: Constraints, objective: str, revisits: bool, probe: Probe
) -> InfeasibleError:
    """The error to raise when no plan exists, naming the constraint to relax."""
    relaxations = _relaxations(inst, cons, revisits)
    for label, relaxed_inst, relaxed in relaxations:
        if probe(relaxed_inst, relaxed, objective):
            detail = _memory_detail(inst) if label == "the devices' memory capacity" else ""
            return InfeasibleError(
                f"no plan satisfies {label} together with the other constraints{detail}", f"relax {label}"
            )
    free = dataclasses.replace(inst, capacity_bytes=np.full(inst.num_devices, np.inf))
    if not probe(free, Constraints(revisits=True), "latency"):
        return InfeasibleError(
            "no plan exists even without constraints: consecutive blocks cannot run on "
            "linked devices, or no link reaches the source or the sink",
            "add links between the devices in cluster.yaml",
        )
    labels = "; ".join(label for label, _, _ in relaxations)
    return InfeasibleError("no plan satisfies these constraints together", f"relax some of: {labels}")
