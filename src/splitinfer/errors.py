"""One exception hierarchy for everything splitinfer raises on purpose.

Every error carries the *problem* and the *fix*, so the CLI can print one
line that tells the user what went wrong and what to do about it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path


class ErrorCode(StrEnum):
    """The machine-readable reason an error reply carries over the wire (its ``code`` field)."""

    INPUT = "input"  # the request's tensors do not fit the stage (names, dtypes, shapes)
    MODEL = "model"  # the partition cannot be loaded or does not match its stage
    AUTH = "auth"  # the message had no valid token MAC
    REPLAY = "replay"  # a signed message seen before, or sent outside the receiver's time window
    DEADLINE = "deadline"  # the request reached a stage after its deadline
    MALFORMED = "malformed"  # the frames or header cannot be decoded, or say contradicting things
    DTYPE = "dtype"  # a tensor's dtype is not one the wire carries
    SHAPE = "shape"  # a tensor's shape does not match its bytes
    OVERSIZED = "oversized"  # a frame or header is over the receiver's limit
    UNKNOWN_KIND = "unknown_kind"  # the receiver does not handle this kind of message
    UNEXPECTED = "unexpected"  # a reply sent where a request was expected
    UNKNOWN_STAGE = "unknown_stage"  # the worker hosts no such stage
    INTEGRITY = "integrity"  # bytes that do not match their SHA-256 (a partition or a chunk of one)
    MISSING_PARTITION = "missing_partition"  # a deploy names a partition (by hash) the worker does not hold
    STATE_LOST = "state_lost"  # a sequence's step reached a stage that no longer holds its state (cache)
    FAILED = "failed"  # anything else: the worker tried and failed


class SplitinferError(Exception):
    """Base class. ``str(err)`` is one line: the problem, then the fix.

    ``code``: the wire reason when the class alone does not say it (a TransportError's
    ``malformed`` vs ``oversized``); :func:`code_of` reads it, else the class's code.
    """

    def __init__(self, problem: str, fix: str | None = None, *, code: ErrorCode | None = None) -> None:
        self.problem = problem
        self.fix = fix
        self.code = code
        super().__init__(self.line())

    def __reduce__(self) -> tuple:
        # Exceptions pickle as cls(*args): keep problem, fix and code (Ray moves errors between processes).
        return _rebuild, (type(self), self.problem, self.fix, self.code)

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


class InputError(SplitinferError):
    """A request's data cannot be read (an HTTP body that is not an array, bad JSON)."""


class CalibrationNeeded(InputError):
    """Static int8 quantisation was asked for without the real inputs it is calibrated on: the
    command line answers it with its own flag (``--calibration``)."""


def _rebuild(cls: type[SplitinferError], problem: str, fix: str | None,
             code: ErrorCode | None) -> SplitinferError:
    err = cls.__new__(cls)
    SplitinferError.__init__(err, problem, fix, code=code)
    return err


# ---- the one mapping between errors, wire codes and HTTP statuses ---------------------------------
# The exception a receiver raises for an error reply with each code.
ERROR_OF_CODE: dict[ErrorCode, type[SplitinferError]] = {
    ErrorCode.INPUT: ShapeError,
    ErrorCode.MODEL: ModelError,
    ErrorCode.AUTH: AuthError,
    # Not AuthError (which says "use the shared token"): the token was right; a sender meets this
    # only when a message was duplicated or its clock disagrees with the receiver's.
    ErrorCode.REPLAY: TransportError,
    ErrorCode.DEADLINE: DeadlineError,
    ErrorCode.MALFORMED: TransportError,
    ErrorCode.DTYPE: TransportError,
    ErrorCode.SHAPE: TransportError,
    ErrorCode.OVERSIZED: TransportError,
    ErrorCode.UNKNOWN_KIND: TransportError,
    ErrorCode.UNEXPECTED: TransportError,
    ErrorCode.UNKNOWN_STAGE: WorkerError,
    ErrorCode.INTEGRITY: TransportError,
    ErrorCode.MISSING_PARTITION: WorkerError,
    ErrorCode.STATE_LOST: WorkerError,
    ErrorCode.FAILED: WorkerError,
}
# The code an error reply carries for each exception class; the first match wins, so subclasses
# come before their bases (ShapeError is a ModelError, AuthError a WorkerError).
CODE_OF_ERROR: tuple[tuple[type[Exception], ErrorCode], ...] = (
    (ShapeError, ErrorCode.INPUT),
    (InputError, ErrorCode.INPUT),
    (ModelError, ErrorCode.MODEL),
    (AuthError, ErrorCode.AUTH),
    (DeadlineError, ErrorCode.DEADLINE),
    (TransportError, ErrorCode.MALFORMED),
)
# The HTTP status (and the metrics' error kind) for each exception class; first match wins.
HTTP_STATUS_OF_ERROR: tuple[tuple[type[Exception], int, str], ...] = (
    (InputError, 400, "bad_input"),
    (ModelError, 400, "bad_input"),  # and ShapeError: wrong names, dtypes, shapes
    (DeadlineError, 504, "deadline"),
    (SplitinferError, 503, "worker"),  # WorkerError, TransportError, InfeasibleError, ...
)


def code_of(err: BaseException) -> ErrorCode:
    """The wire code for an exception: its own ``code``, else its class's, else ``failed``."""
    code = getattr(err, "code", None)
    if isinstance(code, ErrorCode):
        return code
    return next((c for cls, c in CODE_OF_ERROR if isinstance(err, cls)), ErrorCode.FAILED)


def error_from_code(code: str, problem: str, fix: str | None = None) -> SplitinferError:
    """The exception for an error reply's code (an unknown code, from a newer peer: WorkerError)."""
    try:
        known = ErrorCode(code)
    except ValueError:
        return WorkerError(problem, fix)
    return ERROR_OF_CODE[known](problem, fix, code=known)


def http_status_of(err: BaseException) -> tuple[int, str]:
    """(HTTP status, error kind) for an exception: 400 bad input, 504 deadline, 503 worker, 500 else."""
    return next(((status, kind) for cls, status, kind in HTTP_STATUS_OF_ERROR if isinstance(err, cls)),
                (500, "internal"))


FIRST_LINE_MAX = 300


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (ONNX Runtime's and YAML's are long), at most about
    300 characters, cut after a whole word with "..."; the exception's type name when it has no
    message."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    line = text.splitlines()[0]
    if len(line) <= FIRST_LINE_MAX:
        return line
    cut = line.rfind(" ", 0, FIRST_LINE_MAX)
    return line[:cut if cut > FIRST_LINE_MAX // 2 else FIRST_LINE_MAX].rstrip(" ,;:") + " ..."


def read_file(path: str | Path, what: str, fix: str, error: type[SplitinferError] = SplitinferError) -> bytes:
    """The bytes of ``path``, or ``error`` with one line: "cannot read {what} {path}: {reason}", ``fix``."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}", fix) from None
