"""Check that a chain of partitions computes what the whole model computes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from splitinfer.errors import ModelError, VerifyError, first_line
from splitinfer.graph.inference import DEFAULT_PROVIDERS, create_inference_session
from splitinfer.graph.model import Model
from splitinfer.graph.partition import Partition

ATOL = 1e-4
RTOL = 1e-3


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
    """Per-output differences; ``ok`` when every element is within atol 1e-4 or rtol 1e-3."""

    outputs: tuple[OutputDiff, ...]

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
        return {
            "ok": self.ok,
            "outputs": [o.__dict__ for o in self.outputs],
        }


def run_chain(
    partitions: Sequence[Partition],
    feeds: Mapping[str, np.ndarray],
    providers: Sequence[str] = DEFAULT_PROVIDERS,
) -> dict[str, np.ndarray]:
    """Run partitions one after the other, each fed by the one before; return the last outputs."""
    values: dict[str, np.ndarray] = dict(feeds)
    for part in partitions:
        try:
            session = create_inference_session(part.to_bytes(), providers)
            names = [s.name for s in part.outputs]
            results = session.run(names, {s.name: values[s.name] for s in part.inputs})
        except KeyError as e:
            raise VerifyError(
                f"partition {part.index} needs input {e.args[0]!r}, which nothing before it provides",
                "split the partitions again from the same model",
            ) from e
        except Exception as e:  # ORT raises its own exception types per failure
            raise VerifyError(
                f"partition {part.index} fails in ONNX Runtime: {first_line(e)}",
                "this is a splitinfer bug; please report it with the model (--no-verify writes anyway)",
            ) from e
        values = dict(zip(names, results, strict=True))
    return values


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
) -> VerifyReport:
    """Run the chain and the whole model on ``feeds`` (default ``model.make_feeds()``) and compare."""
    feeds = dict(feeds) if feeds is not None else model.make_feeds()
    names = [s.name for s in model.outputs]
    try:
        session = create_inference_session(model.proto.SerializeToString(), providers)
        want = dict(zip(names, session.run(names, feeds), strict=True))
    except Exception as e:  # ORT raises its own exception types per failure
        raise ModelError(
            f"ONNX Runtime cannot run the whole model: {first_line(e)}",
            "check the input_shapes= values and that ONNX Runtime supports every op of the model",
        ) from e
    got = run_chain(partitions, feeds, providers)
    missing = [n for n in names if n not in got]
    if missing:
        raise VerifyError(
            f"the last partition does not produce model output {missing[0]!r}",
            "split the partitions again from the same model",
        )
    return VerifyReport(tuple(_compare(n, np.asarray(got[n]), np.asarray(want[n])) for n in names))
