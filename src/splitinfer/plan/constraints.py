"""What a plan must respect: the constraints every solver honours (:mod:`.cost` checks them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def _pairs(value: Mapping[int, str] | Iterable[tuple[int, str]]) -> tuple[tuple[int, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((int(b), str(d)) for b, d in items)


@dataclass(frozen=True)
class Constraints:
    """What a plan must respect. Every field is optional."""

    pins: tuple[tuple[int, str], ...] = ()  # (block, device): the block runs there
    forbids: tuple[tuple[int, str], ...] = ()  # (block, device): the block never runs there
    excludes: tuple[str, ...] = ()  # devices that host no stage
    requires: tuple[str, ...] = ()  # devices that must host a stage
    max_stages: int | None = None
    revisits: bool | None = None  # may a device host several stages; None: yes except for throughput
    private_blocks: int = 0  # the first K blocks stay on the source
    max_latency_s: float | None = None
    min_throughput_rps: float | None = None
    max_upload_bytes: int | None = None  # bytes leaving the source device
    max_energy_j: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pins", _pairs(self.pins))
        object.__setattr__(self, "forbids", _pairs(self.forbids))
        object.__setattr__(self, "excludes", tuple(self.excludes))
        object.__setattr__(self, "requires", tuple(self.requires))
