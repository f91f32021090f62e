"""The plan: ordered stages and the predicted costs, and its ``plan.json`` form.

``plan.json``::

    {"schema": 2, "plans": [{"objective": "latency", "rank": 1,
      "stages": [{"device": "camera", "first_block": 0, "last_block": 6, "compute_s": 0.41}, ...],
      "hops": [{"src": "camera", "dst": "edge", "num_bytes": 802944, "transfer_s": 0.08,
                "kind": "cut"}, ...],
      "latency_s": 1.93, "bottleneck_s": 0.9, "throughput_rps": 1.11, "bytes_sent": 803072,
      "upload_bytes": 802944, "energy_j": null, "gap": null, "bound": 1.93, "solver": "latency-dp",
      "provenance": {"model": "resnet18.onnx", "model_sha256": "...", "profile": "profile.json",
                     "cluster": "cluster.yaml", "scission_dir": "", "network_stats": "",
                     "constraints": {"pins": [[0, "camera"]], ..., "max_latency_s": 0.2, ...},
                     "hop_overheads": [{"src": "camera", "dst": "edge", "overhead_s": 0.0011}]}}]}

A plan with power figures also has ``"energy_split": {"camera": {"compute_j": .., "communication_j": ..,
"idle_j": ..}}``, per battery device (files written before it load with none).
Floats round-trip exactly (shortest repr); an infinite throughput (nothing to do)
is written as the string "inf". Schema-1 files (free-form ``meta`` strings instead of
``provenance``) are still read, and so are schema-2 files written before plans had a ``bound``
(their certificate is read from ``solver`` and ``gap``, which they have).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec

from splitinfer.errors import SchemaError
from splitinfer.plan.provenance import Provenance, check_constraint_fields, provenance_from_meta

PLAN_SCHEMA = 2
OLD_PLAN_SCHEMAS = (1,)  # read, converted on the way in
HopKind = Literal["upload", "cut", "return", "exit"]  # exit: an early exit's result (plan/exits.py)


class Stage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Blocks ``first_block..last_block`` (inclusive) on ``device``."""

    device: str
    first_block: int
    last_block: int
    compute_s: float
    precision: str = "fp32"  # the partition's arithmetic (a trade-off plan may choose fp16 or int8)


class Hop(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One hop: the input upload, a cut, or the result return. ``src == dst``: an upload into a first
    stage on the source, or a return from a last stage on the sink, that stays on the device and
    costs its messaging (``Problem.messaging``): in the latency, not in bytes sent or the bottleneck."""

    src: str
    dst: str
    num_bytes: int  # on the wire (compressed, if it is)
    transfer_s: float  # on the link: latency + bytes / bandwidth (within a device: its messaging)
    kind: HopKind
    compression: str = "none"  # how the cut tensors travel (compressed by the sender, restored by the next)
    codec_s: float = 0.0  # seconds to compress on the sender plus to restore on the receiver


class EnergySplit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One battery device's predicted joules per request, by what it spends them on (they add up to its
    share of the plan's ``energy_j``): computing its stages (and compressing and restoring tensors),
    its radio while it sends or receives (``radio_w`` x those seconds + ``radio_j_per_byte`` x those
    bytes), and idling through the rest of the request's latency."""

    compute_j: float
    communication_j: float
    idle_j: float

    @property
    def total_j(self) -> float:
        return math.fsum((self.compute_j, self.communication_j, self.idle_j))


class Plan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Stages and the predicted breakdown, and how the plan is known to be optimal.

    ``bound``: the best proven lower bound on the figure the objective minimises (``latency_s``;
    ``bottleneck_s`` for throughput; ``energy_j``; ``latency_s`` for a point of a Pareto front, under
    its budget on the other figure), for the plan's rank: on the k-th best value. Exact methods
    (dynamic programming, brute force) prove it equal to the value; a MILP (HiGHS) proves it equal
    when it ends optimal, and when the time limit stops it gives its dual bound, or none (None). A
    trade-off plan's MILP minimises an additive model of latency (or energy, or the bottleneck); the
    plan's figures are re-evaluated exactly and the bound is on that model, which they match.
    ``gap``: the MILP's relative optimality gap, (value - bound) / |value| (0.0: proven optimal;
    more when the time limit stopped it; None without a bound, and for exact methods, which have
    none). :attr:`certificate` says it in words. ``provenance``: what the plan was made from, set by
    whoever writes it (the solvers leave it empty).
    """

    objective: str
    stages: tuple[Stage, ...]
    hops: tuple[Hop, ...]
    latency_s: float
    bottleneck_s: float
    throughput_rps: float
    bytes_sent: int
    upload_bytes: int
    energy_j: float | None = None
    rank: int = 1
    gap: float | None = None
    bound: float | None = None
    solver: str = ""
    provenance: Provenance = msgspec.field(default_factory=Provenance)
    quality_cost: float | None = None  # predicted agreement drop of a trade-off plan (None: fp32, raw)
    # With early exits (plan/exits.py) the figures above are expected values under ``exit_mix`` (early
    # exit -> the fraction of requests it answers); ``full_depth`` is the same plan for a request that
    # takes no exit (its latency: the worst path).
    exit_mix: dict[str, float] = msgspec.field(default_factory=dict)
    full_depth: Plan | None = None
    # Thresholds chosen with the plan (``plan --exit-quality-drop``): deployed instead of the profiled ones.
    exit_thresholds: dict[str, float | None] = msgspec.field(default_factory=dict)  # None: off
    # The configuration of each device it uses that has several (plan/configurations.py; 'default': as
    # declared): device -> its name. Deployed, each device runs in it.
    configurations: dict[str, str] = msgspec.field(default_factory=dict)
    # ``energy_j`` per battery device, split into compute, communication and idle (empty without power
    # figures, and in plan files written before the split).
    energy_split: dict[str, EnergySplit] = msgspec.field(default_factory=dict)

    @property
    def worst_latency_s(self) -> float | None:
        """With early exits, the latency of a request that takes none; None without exits."""
        return self.full_depth.latency_s if self.full_depth is not None else None

    @property
    def compute_s(self) -> float:
        """Seconds of compute over all stages."""
        return math.fsum(s.compute_s for s in self.stages)

    @property
    def transfer_s(self) -> float:
        """Seconds of transfer over all hops (on the links; compressing and restoring apart)."""
        return math.fsum(h.transfer_s for h in self.hops)

    @property
    def codec_s(self) -> float:
        """Seconds spent compressing and restoring cut tensors."""
        return math.fsum(h.codec_s for h in self.hops)

    @property
    def has_tradeoffs(self) -> bool:
        """Does a stage run below fp32 or a hop travel compressed?"""
        lower = any(s.precision != "fp32" for s in self.stages)
        return lower or any(h.compression != "none" for h in self.hops)

    @property
    def certificate(self) -> str:
        """How the plan is known to be optimal (for its rank: the k-th best), from its solver and gap:

        - "exact (dynamic programming)": a DP solver's answer (``solver`` ends in ``-dp``);
        - "exhaustive (brute force)": every assignment tried;
        - "optimal (MILP, gap 0.00%)": HiGHS proved it (bound = value);
        - "within 1.30% (MILP stopped by the time limit)": no plan is better by more than the gap;
        - "heuristic": nothing proven (a MILP stopped with no bound, an unknown solver).
        """
        method = _method(self.solver)
        if method != "milp":
            return {"dp": "exact (dynamic programming)", "bruteforce": "exhaustive (brute force)"}.get(
                method, "heuristic")
        if self.gap is None:
            return "heuristic (MILP stopped by the time limit without a bound)"
        if self.gap == 0:
            return "optimal (MILP, gap 0.00%)"
        return f"within {_percent(self.gap)} (MILP stopped by the time limit)"

    @property
    def certificate_label(self) -> str:
        """:attr:`certificate` for a table: "exact DP", "exhaustive", "MILP gap 0.00%",
        "MILP gap 1.30% (time limit)", "heuristic"."""
        method = _method(self.solver)
        if method != "milp" or self.gap is None:
            return {"dp": "exact DP", "bruteforce": "exhaustive"}.get(method, "heuristic")
        return f"MILP gap {_percent(self.gap)}" + ("" if self.gap == 0 else " (time limit)")

    @property
    def assignment(self) -> tuple[str, ...]:
        """The device of every block, in block order."""
        return tuple(s.device for s in self.stages for _ in range(s.first_block, s.last_block + 1))


def _method(solver: str) -> str:
    """"dp", "bruteforce", "milp" or "" (unknown) from a solver's name ("subset-dp", "milp-pareto", ...)."""
    if solver.endswith("-dp"):
        return "dp"
    if solver == "bruteforce" or solver.startswith("milp"):
        return solver.split("-")[0]
    return ""


def _percent(gap: float) -> str:
    return "<0.01%" if 0 < gap < 5e-5 else f"{gap:.2%}"  # a gap that rounds to 0 was still not closed


def with_provenance(plan: Plan, **fields: Any) -> Plan:
    """``plan`` with these provenance fields set and the others kept (``model=..., cluster=...``)."""
    return msgspec.structs.replace(plan, provenance=msgspec.structs.replace(plan.provenance, **fields))


def describe_stages(plan: Plan) -> str:
    """The stages in one line: ``camera[0-6] -> edge[7-30] -> cloud[31-63]``; a trade-off plan also
    names precisions and compressions: ``camera[0-6] =int8=> edge[7-30]:fp16``, and a compressed
    upload before the first stage: ``camera =int8=> edge[0-30]``; a device in a configuration other than
    as declared: ``camera@powersave[0-6]``."""
    cuts = [h.compression for h in plan.hops if h.kind == "cut"]  # one per pair of stages, in order
    upload = next((h for h in plan.hops if h.kind == "upload" and h.compression != "none"), None)
    parts = [] if upload is None else [f"{upload.src} ={upload.compression}=> "]
    for i, s in enumerate(plan.stages):
        blocks = f"[{s.first_block}" + ("]" if s.first_block == s.last_block else f"-{s.last_block}]")
        precision = "" if s.precision == "fp32" else f":{s.precision}"
        if i:
            compression = cuts[i - 1] if i - 1 < len(cuts) else "none"
            parts.append(" -> " if compression == "none" else f" ={compression}=> ")
        configuration = plan.configurations.get(s.device, "default")
        device = s.device if configuration == "default" else f"{s.device}@{configuration}"
        parts.append(f"{device}{blocks}{precision}")
    return "".join(parts)


def upgrade_plan(doc: Any, schema: int) -> None:
    """Bring one plan, as plain data from a file of plan ``schema``, to the current schema in place.

    Schema 1's ``meta`` strings become the ``provenance``; recorded constraints must have
    known fields. Whatever else is wrong is left for msgspec to report. The bench file,
    which holds a plan, reads its plan through this too.
    """
    if not isinstance(doc, dict):
        return
    if schema == 1:
        doc["provenance"] = provenance_from_meta(doc.pop("meta", {}))
    provenance = doc.get("provenance")
    if isinstance(provenance, dict):
        check_constraint_fields(provenance.get("constraints"))


class _PlanFile(msgspec.Struct, forbid_unknown_fields=True):
    schema: int
    plans: list[Plan]


def plan_to_json(plans: Plan | list[Plan]) -> str:
    """``plan.json`` text for one plan or a ranked list."""
    items = [plans] if isinstance(plans, Plan) else list(plans)
    doc = msgspec.to_builtins({"schema": PLAN_SCHEMA, "plans": items})
    for p in doc["plans"]:
        if p["throughput_rps"] is None or (
            isinstance(p["throughput_rps"], float) and math.isinf(p["throughput_rps"])
        ):
            p["throughput_rps"] = "inf"
    return msgspec.json.format(msgspec.json.encode(doc).decode(), indent=2) + "\n"


def plan_from_json(text: str | bytes) -> list[Plan]:
    """Parse ``plan.json``; SchemaError for another schema version or a malformed file."""
    try:
        doc = msgspec.json.decode(text)
    except msgspec.DecodeError as e:
        raise SchemaError(
            f"plan file is not valid JSON: {e}", "write it with `splitinfer plan ... -o`"
        ) from None
    if not isinstance(doc, dict) or "schema" not in doc:
        raise SchemaError("plan file has no schema field", "write it with `splitinfer plan ... -o`")
    schema = doc["schema"]
    if type(schema) is not int or (schema != PLAN_SCHEMA and schema not in OLD_PLAN_SCHEMAS):
        readable = ", ".join(map(str, (*OLD_PLAN_SCHEMAS, PLAN_SCHEMA)))
        raise SchemaError(
            f"plan file has schema {schema!r}, this splitinfer reads {readable}",
            "re-plan with this version of splitinfer",
        )
    plans = doc.get("plans")
    for p in plans if isinstance(plans, list) else []:
        upgrade_plan(p, schema)
        if isinstance(p, dict) and p.get("throughput_rps") == "inf":
            p["throughput_rps"] = math.inf
    doc["schema"] = PLAN_SCHEMA  # upgraded above
    try:
        return msgspec.convert(doc, _PlanFile).plans
    except msgspec.ValidationError as e:
        raise SchemaError(f"invalid plan file: {e}", "write it with `splitinfer plan ... -o`") from None
