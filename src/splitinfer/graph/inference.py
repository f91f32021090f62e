"""The one factory of ONNX Runtime inference sessions: shape probing, verification, profiling, workers.

ONNX Runtime is imported on the first call, not with the graph layer: reading a
profile or a plan (the report, the planner's callers) never loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from splitinfer.errors import ModelError, WorkerError, first_line

if TYPE_CHECKING:
    import onnxruntime as ort

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def check_providers(providers: Sequence[str]) -> None:
    """WorkerError naming the execution providers this ONNX Runtime build does not have."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise WorkerError(f"execution provider(s) {', '.join(missing)} not available on this machine "
                          f"(this ONNX Runtime has {', '.join(available)})",
                          "list only those for this device (providers in cluster.yaml, or --providers)")


def create_inference_session(model_bytes: bytes | memoryview, providers: Sequence[str] = DEFAULT_PROVIDERS,
                             num_threads: int = 0, optimize: bool = True) -> ort.InferenceSession:
    """A quiet inference session on serialized model bytes.

    ``num_threads=0`` lets ONNX Runtime pick. ``optimize=False`` skips graph rewrites:
    used when the session runs once (shape probing), where optimizing would cost more
    than it saves. WorkerError for a provider this machine lacks, ModelError for bytes
    ONNX Runtime cannot load.
    """
    import onnxruntime as ort

    check_providers(providers)
    options = ort.SessionOptions()
    # Fatal only: failures come back as exceptions that splitinfer words itself.
    options.log_severity_level = 4
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1  # partitions run sequentially; a second pool would only spin
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(bytes(model_bytes), sess_options=options, providers=list(providers))
    except Exception as e:  # ORT raises its own untyped errors for any malformed model
        raise ModelError(f"ONNX Runtime cannot load the model: {first_line(e)}",
                         "give a valid standalone ONNX model (check it with `splitinfer inspect`)") from None
    # ORT's Python session keeps the model's bytes for as long as it lives, only to re-create itself on
    # another provider when one fails at run time; splitinfer reports a failed provider instead. Without
    # the fallback the bytes can go: a stage then holds its weights once, not twice.
    session.disable_fallback()
    if getattr(session, "_model_bytes", None) is not None:
        session._model_bytes = None
    return session
