"""Reading constraints against a prepared instance: the checks, and where each block may run."""

from __future__ import annotations

import math

import numpy as np

from splitinfer.errors import PlanError
from splitinfer.plan.problem import OBJECTIVES, Constraints, Instance


def validate_constraints(inst: Instance, cons: Constraints, objective: str) -> None:
    """PlanError for constraints that cannot be read (unknown device, block out of range)."""
    if objective not in OBJECTIVES:
        raise PlanError(f"unknown objective {objective!r}", f"use one of: {', '.join(OBJECTIVES)}")
    num_blocks = inst.num_blocks
    for flag, pairs in (("pin", cons.pins), ("forbid", cons.forbids)):
        for block, name in pairs:
            inst.index(name, f"--{flag} {block}={name}")
            if not 0 <= block < num_blocks:
                raise PlanError(
                    f"--{flag} {block}={name}: block {block} does not exist",
                    f"blocks are numbered 0 to {num_blocks - 1}",
                )
    for flag, names in (("exclude", cons.excludes), ("require", cons.requires)):
        for name in names:
            inst.index(name, f"--{flag} {name}")
    if cons.max_stages is not None and cons.max_stages < 1:
        raise PlanError(f"--max-stages {cons.max_stages} is below 1", "allow at least one stage")
    if not 0 <= cons.private_blocks <= num_blocks:
        raise PlanError(
            f"--private-blocks {cons.private_blocks} is outside 0..{num_blocks}",
            f"keep between 0 and {num_blocks} blocks on the source",
        )
    for flag, value in (
        ("max-latency", cons.max_latency_s),
        ("min-throughput", cons.min_throughput_rps),
        ("max-upload-bytes", cons.max_upload_bytes),
        ("max-energy", cons.max_energy_j),
    ):
        if value is not None and (math.isnan(value) or value < 0):
            raise PlanError(f"--{flag} {value} is negative or NaN", "give a number >= 0")
    if (objective == "energy" or cons.max_energy_j is not None) and not inst.has_energy:
        raise PlanError(
            "the energy objective needs a battery-powered device with power figures",
            # As the README's cluster.yaml example, and the other radio model too.
            "add power: {busy_w: .., idle_w: .., radio_j_per_byte: .., battery: true} to a device in "
            "cluster.yaml (radio_w: watts while sending or receiving, instead of or with radio_j_per_byte)",
        )


def allowed_matrix(inst: Instance, cons: Constraints) -> np.ndarray:
    """(L, D) bool: where each block may run under the block-local constraints."""
    allowed = np.isfinite(inst.compute_s).copy()
    for name in cons.excludes:
        allowed[:, inst.names.index(name)] = False
    for block, name in cons.forbids:
        allowed[block, inst.names.index(name)] = False
    for block, name in cons.pins:
        keep = np.zeros(inst.num_devices, dtype=bool)
        keep[inst.names.index(name)] = True
        allowed[block] &= keep
    if cons.private_blocks:
        keep = np.zeros(inst.num_devices, dtype=bool)
        keep[inst.source] = True
        allowed[: cons.private_blocks] &= keep
    return allowed
