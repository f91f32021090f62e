"""Where a plan came from: its ``provenance`` in ``plan.json``.

Written by whoever writes the plan (``splitinfer plan``, ``profile --refine``, the
demo); read when the plan is used: ``deploy`` checks the model's sha256 and makes a
re-plan after a failure respect the recorded constraints, ``splitinfer run`` and
``bench`` find the profile, cluster and model files it names, the report checks the
model. Schema-1 plan files kept these as free-form ``meta`` strings;
:func:`provenance_from_meta` reads them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgspec

from splitinfer.errors import SchemaError
from splitinfer.plan.problem import Constraints

_REWRITE = "re-plan with this version of splitinfer"


class HopOverhead(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Seconds a hop took beyond its link's latency + bytes / bandwidth (measured by ``refine``)."""

    src: str
    dst: str
    overhead_s: float


class Provenance(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a plan was made from. Empty strings: not recorded."""

    model: str = ""  # the model's file or name
    model_sha256: str = ""
    profile: str = ""  # the profile.json the costs came from
    cluster: str = ""  # the cluster.yaml the devices and links came from
    scission_dir: str = ""  # with --scission: Scission's benchmark folder ...
    network_stats: str = ""  # ... and its network_stats.csv
    constraints: Constraints | None = None  # what the plan respects; a re-plan after a failure does too
    # What ``refine`` measured per link and added to its latency before planning.
    hop_overheads: tuple[HopOverhead, ...] = ()
    # Requests a stage was planned to hold at once (``Problem.in_flight``): a re-plan holds as many.
    in_flight: int = 1
    # The input size the plan was made for, where the profile has several (``plan --input-shape``):
    # the deployment serves every profiled size, and ``bench`` sends this one. Empty: the profile's own.
    input_shapes: dict[str, tuple[int, ...]] = msgspec.field(default_factory=dict)


_CONSTRAINT_FIELDS = frozenset(f.name for f in dataclasses.fields(Constraints))
# Schema-1 meta keys that were plain strings and keep their name.
_TEXT_KEYS = ("model", "model_sha256", "profile", "cluster", "scission_dir", "network_stats")


def check_constraint_fields(doc: Any) -> None:
    """SchemaError for recorded constraints with an unknown field (msgspec ignores those on dataclasses)."""
    if isinstance(doc, dict) and not set(doc) <= _CONSTRAINT_FIELDS:
        unknown = ", ".join(sorted(map(str, set(doc) - _CONSTRAINT_FIELDS)))
        raise SchemaError(f"the plan records unknown constraints: {unknown}", _REWRITE)


def _hop_overheads(text: str) -> tuple[HopOverhead, ...]:
    # Schema 1 wrote "camera->edge 1.23, edge->cloud 0.40" (milliseconds).
    out = []
    for item in filter(None, text.split(", ")):
        link, _, ms = item.rpartition(" ")
        src, arrow, dst = link.partition("->")
        try:
            overhead_s = float(ms) / 1e3
        except ValueError:
            overhead_s = None
        if not (arrow and src and dst) or overhead_s is None:
            raise SchemaError(f"the plan's hop_overhead_ms {text!r} does not parse", _REWRITE)
        out.append(HopOverhead(src, dst, overhead_s))
    return tuple(out)


def _constraints(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise SchemaError(f"the plan's recorded constraints do not parse: {e}", _REWRITE) from None
    if not isinstance(doc, dict):
        raise SchemaError("the plan's recorded constraints are not a JSON object", _REWRITE)
    return doc


def provenance_from_meta(meta: Any) -> dict[str, Any]:
    """A schema-1 plan's ``meta`` strings as a schema-2 ``provenance`` (plain data); unknown keys dropped.

    The constraints were JSON in a string; ``hop_overhead_ms`` a list of links and milliseconds.
    """
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise SchemaError("the plan's meta is not a mapping of strings", _REWRITE)
    doc: dict[str, Any] = {k: meta[k] for k in _TEXT_KEYS if k in meta}
    if "constraints" in meta:
        doc["constraints"] = _constraints(meta["constraints"])
    if "hop_overhead_ms" in meta:
        doc["hop_overheads"] = msgspec.to_builtins(_hop_overheads(meta["hop_overhead_ms"]))
    return doc
