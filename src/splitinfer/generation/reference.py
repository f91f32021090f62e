"""The reference for generation: the whole decoder in one ONNX Runtime session, keeping its own cache.

:func:`whole_model_step` gives a ``run_step`` for :func:`splitinfer.generation.generate`: each call
feeds the new tokens with the *state* (each layer's past keys and values: the presents of the call
before, empty at the prefill) and keeps the presents it returns. What a split model generates is
compared with this. ONNX Runtime is imported only when a session is made here, so that importing
:mod:`splitinfer.generation` loads no model runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from splitinfer.errors import InputError, ModelError
from splitinfer.generation.steps import INPUT_IDS, STEP_INPUTS, step_feeds

PAST, PRESENT = "past_key_values.", "present."
# ONNX Runtime's type names: a past's (float) and a step input's (ids, mask, positions).
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def whole_model_step(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A ``run_step`` over the whole decoder ``model``: an ONNX Runtime session, or a model file (str
    or Path), its bytes or a ModelProto, opened on the CPU with one thread (the same sums each run).

    The model takes ``input_ids`` and, per layer, ``past_key_values.{i}.key``/``.value`` [batch,
    kv_heads, past, head_dim] (kv_heads and head_dim fixed in the model), and returns ``logits`` and
    ``present.{i}.key``/``.value``, as Hugging Face's exports and the zoo's decoders do; an
    ``attention_mask`` (all ones) or ``position_ids`` (past length + t) input is fed too
    (:func:`splitinfer.generation.steps.step_feeds`). Each call
    returns the last position's logits [vocab]; a new ``whole_model_step`` starts a new sequence.
    """
    session = model if hasattr(model, "run") and hasattr(model, "get_inputs") else _session(model)
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    state: dict[str, np.ndarray] = {}
    for name, value in inputs.items():
        if not name.startswith(PAST):
            continue
        shape, dtype = list(value.shape), _DTYPES.get(value.type)
        if len(shape) != 4 or not all(isinstance(d, int) for d in (shape[1], shape[3])) \
                or dtype is None or not np.issubdtype(dtype, np.floating):
            raise ModelError(f"past input {name} is {value.type}{shape}",
                             "a decoder's past is float [batch, kv_heads, past, head_dim], kv_heads and "
                             "head_dim fixed")
        state[name] = np.zeros((1, shape[1], 0, shape[3]), dtype)
    presents = {PRESENT + name[len(PAST):]: name for name in state}
    unknown = set(inputs) - set(state) - STEP_INPUTS
    missing = {INPUT_IDS} - set(inputs) | ({"logits", *presents} - set(outputs))
    dtypes = {name: _DTYPES.get(inputs[name].type) for name in set(inputs) & STEP_INPUTS}
    untyped = sorted(f"{name} ({inputs[name].type})" for name, dtype in dtypes.items() if dtype is None)
    problems = [] if state else ["no past_key_values inputs"]
    if unknown:
        problems.append(f"inputs it cannot feed: {', '.join(sorted(unknown))}")
    if missing:
        problems.append(f"missing {', '.join(sorted(missing))}")
    if untyped:
        problems.append(f"inputs of a type it cannot feed: {', '.join(untyped)}")
    if problems:
        raise ModelError(f"the model is not a decoder with a cache: {'; '.join(problems)}",
                         "give a decoder exported with past key/values (optimum's 'with past'), or a zoo "
                         "decoder (gpt2, llama)")
    fetch = ["logits", *presents]

    def run_step(token_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64).reshape(1, -1)
        if ids.size == 0:
            raise InputError("run_step was given no tokens", "feed the prompt, then one token per step")
        past = next(iter(state.values())).shape[2]
        logits, *new = session.run(fetch, {**step_feeds(ids, past, dtypes), **state})
        for present, value in zip(presents, new, strict=True):
            state[presents[present]] = value
        return logits[0, -1]

    return run_step


def _session(model: Any) -> Any:
    import onnxruntime as ort  # here only: importing splitinfer.generation loads no model runtime

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = str(model)
    if not isinstance(model, str | bytes):
        raise InputError(f"model is {type(model).__name__}",
                         "give an ONNX Runtime session, a model file, its bytes or a ModelProto")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT's own error types: not a model it can run
        raise ModelError(f"ONNX Runtime cannot open the model: {str(e).splitlines()[0]}",
                         "give a valid ONNX decoder") from None
