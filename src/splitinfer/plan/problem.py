"""Planner input: the problem (costs of blocks, cuts, links, power) and the constraints.

Plain frozen dataclasses in. :func:`prepare` validates them once and builds the
dense arrays every solver works on (an :class:`Instance`), so that all solvers
and the cost model read the same numbers.

Cost model (the single definition; :mod:`splitinfer.plan.cost` evaluates it):

- a plan assigns every block to a device; consecutive blocks on the same device
  form one stage;
- moving X bytes from device a to device b costs ``latency_s + X / bandwidth_bps``
  over the link a->b; a missing link means not connected; blocks that follow each
  other on one device pass their tensors on for free;
- a hop that stays on one device (the input into a first stage on the source, the result
  out of a last stage on the sink) costs that device's ``messaging``: the runtime's own
  fixed cost plus its cost per byte (free when not given). The plan lists such a hop
  when it costs something; it occupies no link;
- *upload*: the input bytes go from the source to the first stage's device;
  *cut*: the cut bytes go from one stage to the next; *return*: the output bytes
  go from the last stage's device to the sink (none when ``sink`` is None);
- memory, as PipeEdge charges it (:mod:`splitinfer.plan.memory` computes it): a stage of blocks
  i..j needs the sum of their ``weight_bytes``, the largest of their ``activation_bytes``, and
  ``in_flight`` x (the bytes entering it + the bytes leaving it: the input or cut i-1, cut j or the
  output; raw, a compressed hop is restored first); a device's need is the sum over the stages it
  hosts (each its own inference session) with the inner cut tensors its stages hold (at most
  ``held_cut_cap_bytes`` per stage), or creating them if more (``created_bytes``, ``moment_bytes``,
  ``shared_moment_bytes``), at most ``capacity_bytes``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from splitinfer.errors import PlanError
from splitinfer.plan.constraints import Constraints as Constraints  # re-exported: its old home
from splitinfer.plan.exits import ExitMix, ExitReturn, check_exits, with_exits
from splitinfer.plan.joins import join_matrix
from splitinfer.plan.watts import block_watts, join_watts

Objective = Literal["latency", "throughput", "energy", "pareto"]
OBJECTIVES: tuple[str, ...] = ("latency", "throughput", "energy", "pareto")
MAX_IN_FLIGHT = 10_000  # requests a stage may be planned to hold at once


@dataclass(frozen=True)
class Power:
    """Power figures of one device, for the energy objective. ``busy_w_blocks``: measured watts per block
    (a join's: ``watts.join_watts``); ``busy_w`` then prices only compressing and restoring tensors."""

    busy_w: float = 0.0  # drawn while computing
    idle_w: float = 0.0  # drawn while the device waits during a request
    radio_w: float = 0.0  # drawn while sending or receiving
    radio_j_per_byte: float = 0.0  # energy per byte sent or received (on top of radio_w)
    battery: bool = False  # counted in the energy objective
    busy_w_blocks: tuple[float, ...] | None = None  # per block, instead of busy_w (None: busy_w for all)


@dataclass(frozen=True)
class DeviceConfiguration:
    """One way to run a device: its seconds per block (None or inf: cannot run there), the joins at
    its inner cuts (``Problem.join_s``; None: none), its power (None: no power figures)."""

    name: str
    compute_s: Sequence[float | None]
    join_s: Sequence[float | None] | None = None
    power: Power | None = None


@dataclass(frozen=True)
class Link:
    """An ordered pair of devices: bytes/s and seconds per transfer."""

    src: str
    dst: str
    bandwidth_bps: float
    latency_s: float = 0.0


@dataclass(frozen=True)
class Messaging:
    """What a hop costs the runtime on one device beyond any link: encoding, the socket, decoding,
    handing the tensors on (measured by the profiler). A hop that stays on the device costs this
    alone; a :class:`Link`'s figures already include it (``profile/problem.py`` adds it to links
    it reads from cluster.yaml)."""

    fixed_s: float = 0.0
    s_per_byte: float = 0.0

    def seconds(self, num_bytes: float) -> float:
        return self.fixed_s + self.s_per_byte * num_bytes


class AtSource:
    """Marker: the sink is the source device (the default)."""

    def __repr__(self) -> str:
        return "AT_SOURCE"


AT_SOURCE = AtSource()


@dataclass(frozen=True, eq=False)
class Problem:
    """Numbers for one model on one set of devices.

    ``compute_s[device][block]``: seconds (None or inf: the block cannot run there;
    a device missing from the mapping runs nothing). ``cut_bytes[b]``: bytes crossing
    the cut between block b and b+1 (``num_blocks - 1`` entries). Memory (module docstring): per
    block ``weight_bytes`` and ``activation_bytes`` (None: 0), ``in_flight`` requests per stage.
    """

    devices: tuple[str, ...]
    compute_s: Mapping[str, Sequence[float | None]]
    cut_bytes: Sequence[int]
    input_bytes: int
    output_bytes: int
    links: Sequence[Link] = ()
    weight_bytes: Sequence[int] | None = None  # per block: its parameters, held by its stage
    activation_bytes: Sequence[int] | None = None  # per block: peak activations while it runs
    capacity_bytes: Mapping[str, int | None] = field(default_factory=dict)  # per device; absent = unlimited
    power: Mapping[str, Power] = field(default_factory=dict)
    source: str | None = None  # None: the first device
    sink: str | AtSource | None = AT_SOURCE  # AT_SOURCE: the source; None: result stays where computed
    # join_s[device][b]: what running blocks b and b + 1 in one stage on that device adds to their two
    # times (negative: one run instead of two, nodes fused across the cut); absent or None: 0.
    join_s: Mapping[str, Sequence[float | None]] = field(default_factory=dict)
    in_flight: int = 1  # requests a stage holds at once: the one it runs and those queued
    messaging: Mapping[str, Messaging] = field(default_factory=dict)  # per device; absent: free
    exits: Sequence[ExitMix] = ()  # early exits and how often each is taken (plan/exits.py)
    # Devices that may run in one of several configurations (plan/configurations.py): solve() then
    # chooses one per device; their own compute_s, join_s and power here are unused.
    configurations: Mapping[str, Sequence[DeviceConfiguration]] = field(default_factory=dict)
    created_bytes: Sequence[int] | None = None  # per block: what creating its session allocates and keeps
    moment_bytes: Sequence[int] | None = None  # per block: ... and holds beyond that for a moment
    shared_moment_bytes: Sequence[int] | None = None  # per block: its share of a stage's session's moment
    held_cut_cap_bytes: float = 0  # the most a stage's inner cut tensors add to its largest activation

    @property
    def num_blocks(self) -> int:
        return len(self.cut_bytes) + 1


@dataclass(frozen=True, eq=False)
class Instance:
    """A validated problem as dense arrays (device index order = ``names``)."""

    names: tuple[str, ...]
    compute_s: np.ndarray  # (L, D); inf = cannot run
    cut_bytes: np.ndarray  # (L-1,) int64
    input_bytes: int
    output_bytes: int
    link_latency_s: np.ndarray  # (D, D); nan = not connected, 0 on the diagonal
    link_bandwidth_bps: np.ndarray  # (D, D); nan = not connected, inf on the diagonal
    weight_bytes: np.ndarray  # (L,) float
    activation_bytes: np.ndarray  # (L,) float
    capacity_bytes: np.ndarray  # (D,) float, inf = unlimited
    power: tuple[Power | None, ...]
    source: int
    sink: int | None
    cut_s: np.ndarray  # (L-1, D, D) transfer time of each cut; inf = not connected, 0 on the diagonal
    upload_s: np.ndarray  # (D,) input from the source to each device (at the source: its messaging)
    return_s: np.ndarray  # (D,) output from each device to the sink (at the sink: its messaging; 0 without)
    # (L-1, D): added to a stage for each of its inner cuts (Problem.join_s); a stage's compute is
    # the sum of its blocks and of its inner joins (cost.stage_s).
    join_s: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    in_flight: int = 1  # requests a stage holds at once (Problem.in_flight)
    # With early exits (plan/exits.py): the seconds above are expected ones; ``reach`` (L + 1,) the
    # fraction of requests reaching each block, ``exits`` what taking each costs, ``full`` the same
    # instance for a request that takes none (the worst path).
    exits: tuple[ExitReturn, ...] = ()
    reach: np.ndarray | None = None
    full: Instance | None = None
    # (L, D) watts computing each block: Power.busy_w_blocks, else busy_w (0 without power); (L-1, D) a join's
    busy_w: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    join_w: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    created_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (L,) Problem.created_bytes
    moment_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (L,) Problem.moment_bytes
    shared_moment_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (L,) Problem's
    held_cut_cap_bytes: float = 0.0  # Problem.held_cut_cap_bytes

    @property
    def num_blocks(self) -> int:
        return self.compute_s.shape[0]

    @property
    def num_devices(self) -> int:
        return self.compute_s.shape[1]

    @property
    def has_energy(self) -> bool:
        return any(p is not None and p.battery for p in self.power)

    def index(self, name: str, what: str) -> int:
        """Device index of ``name``; a PlanError naming ``what`` if unknown."""
        try:
            return self.names.index(name)
        except ValueError:
            raise PlanError(
                f"{what} names unknown device {name!r}", f"use one of: {', '.join(self.names)}"
            ) from None

    def transfer_s(self, src: int, dst: int, num_bytes: float) -> float:
        """Seconds to move ``num_bytes`` from ``src`` to ``dst`` (inf if not connected)."""
        if src == dst:
            return 0.0
        bw = self.link_bandwidth_bps[src, dst]
        if math.isnan(bw):
            return math.inf
        return float(self.link_latency_s[src, dst] + num_bytes / bw)


def _check_number(value: object, where: str, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise PlanError(f"{where} is {value!r}, not a number", "give a number")
    v = float(value)
    if math.isnan(v) or v < 0 or (math.isinf(v) and not allow_inf):
        raise PlanError(f"{where} is {v}", "give a finite number >= 0")
    return v


def _compute_matrix(problem: Problem, names: tuple[str, ...], num_blocks: int) -> np.ndarray:
    table = np.full((num_blocks, len(names)), math.inf)
    for name, times in problem.compute_s.items():
        if name not in names:
            raise PlanError(
                f"compute_s names unknown device {name!r}",
                f"list it in devices or use one of: {', '.join(names)}",
            )
        if len(times) != num_blocks:
            raise PlanError(
                f"compute_s[{name!r}] has {len(times)} blocks, cut_bytes implies {num_blocks}",
                "give one time per block (None where the block cannot run)",
            )
        d = names.index(name)
        for b, t in enumerate(times):
            if t is not None:
                table[b, d] = _check_number(t, f"compute_s[{name!r}][{b}]", allow_inf=True)
    return table


def _link_matrices(problem: Problem, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    num = len(names)
    lat = np.full((num, num), math.nan)
    bw = np.full((num, num), math.nan)
    np.fill_diagonal(lat, 0.0)
    np.fill_diagonal(bw, math.inf)
    for link in problem.links:
        for end in (link.src, link.dst):
            if end not in names:
                raise PlanError(
                    f"link {link.src}->{link.dst} names unknown device {end!r}",
                    f"use one of: {', '.join(names)}",
                )
        if link.src == link.dst:
            raise PlanError(
                f"link {link.src}->{link.dst} connects a device to itself",
                "remove it: a hop within a device costs its messaging, not a link",
            )
        s, d = names.index(link.src), names.index(link.dst)
        if not math.isnan(bw[s, d]):
            raise PlanError(f"link {link.src}->{link.dst} is given twice", "keep one of them")
        rate = _check_number(link.bandwidth_bps, f"link {link.src}->{link.dst} bandwidth_bps", allow_inf=True)
        if rate == 0:
            raise PlanError(
                f"link {link.src}->{link.dst} has zero bandwidth",
                "give a positive bandwidth, or leave the link out if not connected",
            )
        lat[s, d] = _check_number(link.latency_s, f"link {link.src}->{link.dst} latency_s")
        bw[s, d] = rate
    return lat, bw


def _device_index(name: str | None, names: tuple[str, ...], role: str) -> int | None:
    if name is None:
        return None
    if name not in names:
        raise PlanError(f"{role} {name!r} is not a device", f"use one of: {', '.join(names)}")
    return names.index(name)


def prepare(problem: Problem) -> Instance:
    """Validate ``problem`` and build its :class:`Instance`; PlanError names the bad field."""
    names = tuple(problem.devices)
    if not names:
        raise PlanError("the problem has no devices", "give at least one device")
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise PlanError(
            f"device names must be unique non-empty strings, got {list(names)}", "rename the devices"
        )
    num_blocks = problem.num_blocks
    compute = _compute_matrix(problem, names, num_blocks)
    cut = np.array([_check_number(c, f"cut_bytes[{b}]") for b, c in enumerate(problem.cut_bytes)],
                   dtype=np.float64).reshape(-1)
    input_bytes = _check_number(problem.input_bytes, "input_bytes")
    output_bytes = _check_number(problem.output_bytes, "output_bytes")
    lat, bw = _link_matrices(problem, names)
    memory = (_per_block(problem.weight_bytes, "weight_bytes", num_blocks),
              _per_block(problem.activation_bytes, "activation_bytes", num_blocks))
    in_flight = problem.in_flight
    if isinstance(in_flight, bool) or not isinstance(in_flight, int | np.integer) \
            or not 1 <= in_flight <= MAX_IN_FLIGHT:
        raise PlanError(f"in_flight is {in_flight!r}",
                        f"give a whole number of requests, 1 to {MAX_IN_FLIGHT}")
    capacity = np.full(len(names), math.inf)
    for name, cap in problem.capacity_bytes.items():
        d = _device_index(name, names, "capacity_bytes")
        if cap is not None:
            capacity[d] = _check_number(cap, f"capacity_bytes[{name!r}]", allow_inf=True)
    power: list[Power | None] = [None] * len(names)
    busy_w = np.zeros((num_blocks, len(names)))
    for name, p in problem.power.items():
        d = _device_index(name, names, "power")
        for attr in ("busy_w", "idle_w", "radio_w", "radio_j_per_byte"):
            _check_number(getattr(p, attr), f"power[{name!r}].{attr}")
        power[d] = p  # type: ignore[index]
        busy_w[:, d] = block_watts(p.busy_w, p.busy_w_blocks, f"power[{name!r}].busy_w_blocks", num_blocks)
    busy_w.setflags(write=False)
    join_w = join_watts(busy_w, compute)
    source = _device_index(problem.source, names, "source")
    source = 0 if source is None else source
    sink = source if isinstance(problem.sink, AtSource) else _device_index(problem.sink, names, "sink")
    messaging = _messaging(problem, names)
    local = (messaging[source].seconds(input_bytes),
             0.0 if sink is None else messaging[sink].seconds(output_bytes))
    inst = _build_instance(
        names, compute, cut, input_bytes, output_bytes, lat, bw, memory, capacity, tuple(power), source, sink,
        local,
    )
    joins = join_matrix(problem.join_s, names, compute)
    joins.setflags(write=False)
    creation = {what: _per_block(getattr(problem, what), what, num_blocks)
                for what in ("created_bytes", "moment_bytes", "shared_moment_bytes")}
    for arr in creation.values():
        arr.setflags(write=False)
    held = _check_number(problem.held_cut_cap_bytes, "held_cut_cap_bytes")
    inst = dataclasses.replace(inst, join_s=joins, in_flight=int(in_flight), busy_w=busy_w, join_w=join_w,
                               held_cut_cap_bytes=held, **creation)
    return with_exits(inst, check_exits(problem.exits, num_blocks), messaging) if problem.exits else inst


def _messaging(problem: Problem, names: tuple[str, ...]) -> list[Messaging]:
    out = [Messaging()] * len(names)
    for name, m in problem.messaging.items():
        d = _device_index(name, names, "messaging")
        for attr in ("fixed_s", "s_per_byte"):
            _check_number(getattr(m, attr), f"messaging[{name!r}].{attr}")
        out[d] = m  # type: ignore[index]
    return out


def _per_block(values: Sequence[int] | None, what: str, num_blocks: int) -> np.ndarray:
    if values is None:
        return np.zeros(num_blocks)
    if len(values) != num_blocks:
        raise PlanError(f"{what} has {len(values)} entries for {num_blocks} blocks", "give one per block")
    return np.array([_check_number(v, f"{what}[{b}]") for b, v in enumerate(values)], dtype=np.float64)


def _build_instance(
    names: tuple[str, ...],
    compute: np.ndarray,
    cut: np.ndarray,
    input_bytes: float,
    output_bytes: float,
    lat: np.ndarray,
    bw: np.ndarray,
    memory: tuple[np.ndarray, np.ndarray],
    capacity: np.ndarray,
    power: tuple[Power | None, ...],
    source: int,
    sink: int | None,
    local: tuple[float, float] = (0.0, 0.0),
) -> Instance:
    """``local``: the seconds of the upload that stays on the source and of the return that stays on
    the sink (their messaging)."""
    with np.errstate(invalid="ignore"):
        # One formula for every transfer, the same one cost.py uses: latency + bytes / bandwidth.
        cut_s = lat[None, :, :] + cut[:, None, None] / bw[None, :, :]
        upload = lat[source] + input_bytes / bw[source]
        back = (lat[:, sink] + output_bytes / bw[:, sink]) if sink is not None else np.zeros(len(names))
    cut_s = np.where(np.isnan(cut_s), math.inf, cut_s)
    idx = np.arange(len(names))
    cut_s[:, idx, idx] = 0.0
    upload = np.where(np.isnan(upload), math.inf, upload)
    upload[source] = local[0]
    back = np.where(np.isnan(back), math.inf, back)
    if sink is not None:
        back[sink] = local[1]
    for arr in (compute, cut, *memory, capacity, lat, bw, cut_s, upload, back):
        arr.setflags(write=False)
    return Instance(names, compute, cut, int(input_bytes), int(output_bytes), lat, bw, *memory, capacity,
                    power, source, sink, cut_s, upload, back)
