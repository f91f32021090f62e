"""Check that a chain of partitions computes what the whole model computes.

A model with tensors whose size depends on the input values (``Model.dynamic_dims``) is checked on
several inputs that give those tensors different sizes: the partitions must take any of them. A model
that serves several input sizes (``Model.sizes``) is checked on an input of each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from splitinfer.errors import ModelError, ShapeError, SplitinferError, VerifyError, first_line
from splitinfer.graph.external import external_bytes
from splitinfer.graph.inference import DEFAULT_PROVIDERS
from splitinfer.graph.model import Model
from splitinfer.graph.partition import Partition
from splitinfer.graph.reference import MIN_WINDOW_BYTES, reference
from splitinfer.graph.sizes import describe_size

ATOL = 1e-4
RTOL = 1e-3
# A model with data-dependent sizes: compared on this many inputs giving different sizes where it can,
# looked for among at most MAX_SEEDS seeded inputs.
NUM_SIZED_INPUTS = 3
MAX_SEEDS = 16


@dataclass(frozen=True)
class OutputDiff:
    """How far one model output of the chain is from the whole model's."""

    name: str
    max_abs: float
    # max_abs over the reference's largest magnitude: an element-wise ratio is meaningless where the
    # reference is ~0 (1e-9 / 1e-300 read 1e291 next to "ok"); inf when the reference is all 0 and
    # the chain's is not.
    max_rel: float
    ok: bool


@dataclass(frozen=True)
class VerifyReport:
    """Per-output differences; ``ok`` when every element is within atol 1e-4 or rtol 1e-3.

    ``sizes``: for a model with data-dependent sizes, one entry per input compared: the shape of each
    varying tensor the partitions hand on (or, when none crosses a cut, of each varying tensor) on it.
    ``input_sizes``: the input shapes compared, one entry each, when the model serves several.
    Each output's difference is the worst over those inputs. ``partitions``: see below.
    """

    outputs: tuple[OutputDiff, ...]
    sizes: tuple[dict[str, tuple[int, ...]], ...] = ()
    input_sizes: tuple[dict[str, tuple[int, ...]], ...] = ()
    # Per partition, its output furthest from the whole model's tensor of that name (fed by the chain):
    # where a difference starts. Informative: ``ok`` is the model outputs'.
    partitions: tuple[OutputDiff, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every output is within tolerance."""
        return all(o.ok for o in self.outputs)

    @property
    def worst(self) -> OutputDiff:
        """The output with the largest absolute difference."""
        return max(self.outputs, key=lambda o: o.max_abs)

    @property
    def max_abs(self) -> float:
        """The largest absolute difference over all outputs."""
        return max((o.max_abs for o in self.outputs), default=0.0)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``ok`` and the per-output differences."""
        data: dict[str, object] = {
            "ok": self.ok,
            "outputs": [o.__dict__ for o in self.outputs],
        }
        if self.sizes:
            data["sizes"] = [{k: list(v) for k, v in run.items()} for run in self.sizes]
        if self.input_sizes:
            data["input_sizes"] = [{k: list(v) for k, v in run.items()} for run in self.input_sizes]
        return data


def run_chain(
    partitions: Sequence[Partition],
    feeds: Mapping[str, np.ndarray],
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    on_outputs: Callable[[Partition, dict[str, np.ndarray]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run partitions one after the other, each fed by the one before; return the last outputs (and every
    partition's presents of state pairs: a past is fed from ``feeds`` to the partition that holds it).

    One partition's inference session at a time; a partition whose weights stay on disk is opened
    with them there (ONNX Runtime reads the files). ``on_outputs(partition, outputs)``: called after each.
    """
    values: dict[str, np.ndarray] = dict(feeds)
    kept: dict[str, np.ndarray] = {}  # the presents of state pairs (graph/state.py): each partition's own
    for part in partitions:
        pasts = {p.past for p in part.state}
        try:
            session = part.inference_session(providers)
            names = [s.name for s in part.outputs]
            results = session.run(names, {s.name: feeds[s.name] if s.name in pasts else values[s.name]
                                          for s in part.inputs})
            del session  # before the next partition's: one partition's weights at a time
        except KeyError as e:
            raise VerifyError(
                f"partition {part.index} needs input {e.args[0]!r}, which nothing before it provides",
                "split the partitions again from the same model",
            ) from e
        except SplitinferError:
            raise
        except Exception as e:  # ORT raises its own exception types per failure
            raise VerifyError(
                f"partition {part.index} fails in ONNX Runtime: {first_line(e)}",
                "this is a splitinfer bug; please report it with the model (--no-verify writes anyway)",
            ) from e
        values = dict(zip(names, results, strict=True))
        if on_outputs is not None:
            on_outputs(part, values)
        presents = {p.present for p in part.state}
        kept.update((n, values.pop(n)) for n in list(values) if n in presents)
    return {**values, **kept}


def _compare(name: str, got: np.ndarray, want: np.ndarray) -> OutputDiff:
    if got.shape != want.shape or got.dtype != want.dtype:
        return OutputDiff(name, float("inf"), float("inf"), False)
    if want.dtype.kind not in "fc":
        same = bool(np.array_equal(got, want))
        return OutputDiff(name, 0.0 if same else float("inf"), 0.0 if same else float("inf"), same)
    # At least 1-d: a model output may be a scalar, and a 0-d array's elements cannot be assigned.
    a, b = np.atleast_1d(got.astype(np.float64)), np.atleast_1d(want.astype(np.float64))
    diff = np.abs(a - b)
    diff[np.isnan(a) & np.isnan(b)] = 0.0
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(b[np.isfinite(b)]).max(initial=0.0))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    ok = bool(np.all((diff <= ATOL) | (diff <= RTOL * np.abs(b))))
    return OutputDiff(name, max_abs, max_rel, ok)


def verify(
    model: Model,
    partitions: Sequence[Partition],
    feeds: Mapping[str, np.ndarray] | None = None,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    window_bytes: int | None = None,
) -> VerifyReport:
    """Run the chain and the whole model on ``feeds`` (default ``model.make_feeds()``) and compare.

    A model whose weights stay on disk is run, as the reference, in windows of at most ``window_bytes`` of
    weights (default: as many as the largest partition holds; :mod:`splitinfer.graph.reference`), so that
    verifying never holds more of them than running one partition does.

    For a model with data-dependent sizes, also on seeded inputs (``model.make_feeds(seed)``), kept
    while they give the varying tensors sizes not seen yet, until NUM_SIZED_INPUTS inputs (fewer
    distinct sizes when MAX_SEEDS seeds find no more); the report says which sizes were seen. For a
    model that serves several input sizes, also on generated inputs at each of the others.
    """
    feeds = dict(feeds) if feeds is not None else model.make_feeds()
    names = [s.name for s in model.outputs]
    watched = _watched(model, partitions)
    cuts = list(dict.fromkeys(s.name for p in partitions[:-1] for s in p.outputs if s.name not in names))
    if window_bytes is None:  # as much as the largest partition holds: the chain needs that anyway
        window_bytes = max([MIN_WINDOW_BYTES, *(external_bytes(p.proto) for p in partitions
                                                if p.is_external)])
    runs = _reference_runs(model, feeds, providers, names, watched, cuts, window_bytes)
    diffs: dict[str, list[OutputDiff]] = {n: [] for n in names}
    steps: list[list[OutputDiff]] = [[] for _ in partitions]
    for run_feeds, values, _ in runs:
        def check(part: Partition, got: dict[str, np.ndarray],
                  values: dict[str, np.ndarray] = values) -> None:
            position = next(i for i, p in enumerate(partitions) if p is part)
            steps[position].extend(_compare(n, np.asarray(v), np.asarray(values[n]))
                                   for n, v in got.items() if n in values)
        got = run_chain(partitions, run_feeds, providers, check)
        missing = [n for n in names if n not in got]
        if missing:
            raise VerifyError(
                f"the last partition does not produce model output {missing[0]!r}",
                "split the partitions again from the same model",
            )
        for n in names:
            diffs[n].append(_compare(n, np.asarray(got[n]), np.asarray(values[n])))
    sizes = tuple(run_sizes for _, _, run_sizes in runs) if watched else ()
    return VerifyReport(tuple(_worst(d) for d in diffs.values()), sizes,
                        tuple(model.sizes) if len(model.sizes) > 1 else (),
                        tuple(max(d, key=lambda x: (not x.ok, x.max_abs)) for d in steps if d))


def _reference_runs(model: Model, feeds: dict[str, np.ndarray], providers: Sequence[str], names: list[str],
                    watched: list[str], cuts: list[str], window_bytes: int) -> list[Run]:
    """The whole model's outputs, and its tensors at the cuts, on every input compared. Its inference
    session (or sessions: graph/reference.py) is gone when this returns, before any partition's is made:
    never two copies of the weights."""
    fetch = list(dict.fromkeys([*names, *watched, *cuts]))
    kept = [*names, *cuts]
    with reference(model, fetch, providers, window_bytes) as run:
        try:
            runs = _pick_inputs(model, feeds, run, kept, watched)
        except SplitinferError:
            raise
        except Exception as e:  # ORT raises its own exception types per failure
            raise ModelError(
                f"ONNX Runtime cannot run the whole model: {first_line(e)}",
                "check the input_shapes= values and that ONNX Runtime supports every op of the model",
            ) from e
        return runs + [_at_size(model, size, run, kept, watched) for size in model.sizes[1:]]


def _at_size(model: Model, size: Mapping[str, tuple[int, ...]],
             run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], names: list[str],
             watched: list[str]) -> Run:
    """A generated input at ``size`` with the whole model's outputs; ShapeError naming the size when the
    model itself does not run there (it holds that dim fixed somewhere: a Reshape to a constant shape)."""
    feeds = model.make_feeds(shapes=size)
    try:
        values = run(feeds)
    except Exception as e:  # ORT's own exception types
        raise ShapeError(f"the model does not run at {describe_size(size)} ({first_line(e)})",
                         "export the model with those dims symbolic all the way through (no shape fixed "
                         "inside), or leave that size out") from None
    return feeds, {n: values[n] for n in names}, {n: tuple(np.shape(values[n])) for n in watched}


def _watched(model: Model, partitions: Sequence[Partition]) -> list[str]:
    """The varying tensors whose sizes pick the inputs: those the partitions hand on, else all."""
    if not model.dynamic_dims:
        return []
    crossing = [s.name for p in partitions for s in (*p.inputs, *p.outputs) if s.name in model.dynamic_dims]
    return list(dict.fromkeys(crossing)) or list(model.dynamic_dims)


# One input compared: the feeds, the whole model's outputs (by name), the watched tensors' shapes.
Run = tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, tuple[int, ...]]]


def _pick_inputs(model: Model, feeds: dict[str, np.ndarray],
                 run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
                 names: list[str], watched: list[str]) -> list[Run]:
    """``feeds`` and, for varying sizes, seeded inputs that show new sizes (then others, to make up
    NUM_SIZED_INPUTS): each with the whole model's outputs and the watched tensors' shapes."""
    def one(f: dict[str, np.ndarray]) -> Run:
        values = run(f)
        return f, {n: values[n] for n in names}, {n: tuple(np.shape(values[n])) for n in watched}
    runs = [one(feeds)]
    if not watched:
        return runs
    spare: list[Run] = []
    seen = {tuple(runs[0][2].values())}
    for seed in range(1, MAX_SEEDS):
        if len(runs) >= NUM_SIZED_INPUTS:
            break
        candidate = one(model.make_feeds(seed))
        key = tuple(candidate[2].values())
        if key in seen:
            spare.append(candidate)
        else:
            seen.add(key)
            runs.append(candidate)
    return runs + spare[:NUM_SIZED_INPUTS - len(runs)]


def _worst(diffs: list[OutputDiff]) -> OutputDiff:
    worst = max(diffs, key=lambda d: (not d.ok, d.max_abs))
    return OutputDiff(worst.name, max(d.max_abs for d in diffs), max(d.max_rel for d in diffs),
                      all(d.ok for d in diffs))
