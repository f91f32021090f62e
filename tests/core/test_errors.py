"""The one mapping between exceptions, wire error codes and HTTP statuses."""

from __future__ import annotations

import pickle

import pytest

from splitinfer.errors import (
    ERROR_OF_CODE,
    AuthError,
    DeadlineError,
    ErrorCode,
    InfeasibleError,
    InputError,
    ModelError,
    ShapeError,
    SplitinferError,
    TransportError,
    WorkerError,
    code_of,
    error_from_code,
    http_status_of,
)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_round_trips_through_its_exception(code):
    err = error_from_code(code.value, "the problem", "the fix")
    assert type(err) is ERROR_OF_CODE[code]
    assert code_of(err) is code
    assert (err.problem, err.fix) == ("the problem", "the fix")


@pytest.mark.parametrize(("err", "code"), [
    (ShapeError("p"), ErrorCode.INPUT),
    (InputError("p"), ErrorCode.INPUT),
    (ModelError("p"), ErrorCode.MODEL),
    (AuthError("p"), ErrorCode.AUTH),
    (DeadlineError("p"), ErrorCode.DEADLINE),
    (TransportError("p"), ErrorCode.MALFORMED),
    (TransportError("p", code=ErrorCode.OVERSIZED), ErrorCode.OVERSIZED),
    (WorkerError("p"), ErrorCode.FAILED),
    (ValueError("not ours"), ErrorCode.FAILED),
])
def test_an_exception_gets_the_code_of_its_most_specific_class(err, code):
    assert code_of(err) is code


def test_a_code_from_a_newer_peer_is_a_worker_error():
    err = error_from_code("quantum_flux", "p", None)
    assert type(err) is WorkerError and code_of(err) is ErrorCode.FAILED


@pytest.mark.parametrize(("err", "status", "kind"), [
    (InputError("p"), 400, "bad_input"),
    (ShapeError("p"), 400, "bad_input"),
    (ModelError("p"), 400, "bad_input"),
    (DeadlineError("p"), 504, "deadline"),
    (WorkerError("p"), 503, "worker"),
    (AuthError("p"), 503, "worker"),
    (TransportError("p"), 503, "worker"),
    (InfeasibleError("p"), 503, "worker"),
    (RuntimeError("bug"), 500, "internal"),
])
def test_http_status_of_each_class(err, status, kind):
    assert http_status_of(err) == (status, kind)


def test_errors_pickle_with_problem_fix_and_code():
    err = pickle.loads(pickle.dumps(TransportError("too big", "send less", code=ErrorCode.OVERSIZED)))
    assert type(err) is TransportError and (err.problem, err.fix, err.code) == ("too big", "send less",
                                                                                  ErrorCode.OVERSIZED)
    assert str(err) == "too big. send less"
    deadline = pickle.loads(pickle.dumps(DeadlineError("late")))
    assert isinstance(deadline, TimeoutError) and isinstance(deadline, SplitinferError)
