"""ONNX Runtime sessions for the graph layer (shape probing and verification)."""

from __future__ import annotations

from collections.abc import Sequence

import onnxruntime as ort

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def create_session(
    model_bytes: bytes,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    optimize: bool = True,
    num_threads: int = 0,
) -> ort.InferenceSession:
    """A quiet session on serialized model bytes.

    ``optimize=False`` skips graph rewrites: used when the session runs once
    (shape probing), where optimizing would cost more than it saves.
    ``num_threads=0`` lets ONNX Runtime pick.
    """
    options = ort.SessionOptions()
    # Fatal only: failures come back as exceptions that splitinfer words itself.
    options.log_severity_level = 4
    options.intra_op_num_threads = num_threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, sess_options=options, providers=list(providers))
