"""One exception hierarchy for everything splitinfer raises on purpose.

Every error carries the *problem* and the *fix*, so the CLI can print one
line that tells the user what went wrong and what to do about it.
"""

from __future__ import annotations

from pathlib import Path


class SplitinferError(Exception):
    """Base class. ``str(err)`` is one line: the problem, then the fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        problem = self.problem.rstrip(".")
        return f"{problem}. {self.fix}" if self.fix else f"{problem}."


class ModelError(SplitinferError):
    """The model file or proto cannot be loaded or is not valid ONNX."""


class ShapeError(ModelError):
    """Input shapes are missing, dynamic without a value, or contradict the model."""


class CutError(SplitinferError):
    """A requested cut does not exist or does not separate the graph."""


class VerifyError(SplitinferError):
    """Partitions do not reproduce the whole model."""


class SchemaError(SplitinferError):
    """A splitinfer file (profile, plan, manifest, cluster) is malformed or of another version."""


class ClusterError(SplitinferError):
    """cluster.yaml names unknown devices, bad links or impossible settings."""


class ProfileError(SplitinferError):
    """A profile is inconsistent: missing blocks, negative or NaN times."""


class PlanError(SplitinferError):
    """The planner got inconsistent input (unknown device, bad constraint)."""


class InfeasibleError(PlanError):
    """No plan satisfies the constraints; the message names the conflicting one."""


class TransportError(SplitinferError):
    """A message could not be encoded, decoded or delivered."""


class WorkerError(SplitinferError):
    """A worker refused or failed a request (the reply carries its reason)."""


class DeadlineError(SplitinferError, TimeoutError):
    """A request did not complete before its deadline."""


class AuthError(WorkerError):
    """A worker refused a message without the shared token."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (ONNX Runtime's and YAML's are long), at most 300
    characters; the exception's type name when it has no message."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def read_file(path: str | Path, what: str, fix: str, error: type[SplitinferError] = SplitinferError) -> bytes:
    """The bytes of ``path``, or ``error`` with one line: "cannot read {what} {path}: {reason}", ``fix``."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}", fix) from None
