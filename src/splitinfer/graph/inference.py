"""The one factory of ONNX Runtime inference sessions: shape probing, verification, profiling, workers.

ONNX Runtime is imported on the first call, not with the graph layer: reading a
profile or a plan (the report, the planner's callers) never loads it.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from splitinfer.errors import ModelError, SplitinferError, WorkerError, first_line
from splitinfer.host import returning_freed_memory
from splitinfer.providers import parse_provider

if TYPE_CHECKING:
    import onnxruntime as ort

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def check_providers(providers: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """The providers (``NAME`` or ``NAME:key=value;...``, ``splitinfer.providers``) as ONNX Runtime takes
    them; WorkerError naming a malformed one or those this ONNX Runtime build does not have."""
    import onnxruntime as ort

    parsed = [parse_provider(p, "execution provider", WorkerError) for p in providers]
    available = ort.get_available_providers()
    missing = [name for name, _ in parsed if name not in available]
    if missing:
        raise WorkerError(f"execution provider(s) {', '.join(missing)} not available on this machine "
                          f"(this ONNX Runtime has {', '.join(available)})",
                          "list only those for this device (providers in cluster.yaml, or --providers)")
    return parsed


def create_inference_session(model_bytes: bytes | memoryview | Path,
                             providers: Sequence[str] = DEFAULT_PROVIDERS, num_threads: int = 0,
                             optimize: bool = True,
                             external_dir: str | Path | None = None) -> ort.InferenceSession:
    """A quiet inference session on serialized model bytes, or on a model file (a ``Path``).

    ``external_dir``: the folder the model's external data locations are relative to (a model loaded
    with its weights on disk, :mod:`splitinfer.graph.external`): ONNX Runtime reads them from there.
    Without it ONNX Runtime looks for them relative to the working directory: give whole models to workers
    (``Partition.to_bytes`` inlines the weights). A model file's external data is looked for in its own
    folder (a worker's cached partition, device/_partition_layout.py): ONNX Runtime memory-maps the
    weights stored there at page-aligned offsets instead of copying them.

    ``num_threads=0`` lets ONNX Runtime pick. ``optimize=False`` skips graph rewrites:
    used when the session runs once (shape probing), where optimizing would cost more
    than it saves. WorkerError for a provider this machine lacks, ModelError for bytes
    ONNX Runtime cannot load. In a worker, what creating the session frees goes back to the system at
    once (:func:`splitinfer.host.returning_freed_memory`): the copies it makes for a moment are not kept.
    """
    with returning_freed_memory():
        return _create(model_bytes, providers, num_threads, optimize, external_dir)


def _create(model_bytes: bytes | memoryview | Path, providers: Sequence[str], num_threads: int,
            optimize: bool, external_dir: str | Path | None) -> ort.InferenceSession:
    import onnxruntime as ort

    parsed = check_providers(providers)
    options = ort.SessionOptions()
    # Fatal only: failures come back as exceptions that splitinfer words itself.
    options.log_severity_level = 4
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1  # partitions run sequentially; a second pool would only spin
    # No memory pattern: with one, each run after the first asks the arena for one block of the planned
    # size, which fits an earlier region or adds one twice as large, so what a stage holds depended on
    # the order its arena grew in (mobilenetv2's block 4 alone: 9 MB touched after its first run, 19 MB
    # after its third; a stage of blocks 0-4, 7-9 MB). Without it every run reuses the first run's
    # allocations, which the profiler measures. The cost: a run allocates its tensors one by one from
    # the arena; back to back the same speed (zoo models, one thread: 0.99-1.01x), runs spaced out as an
    # emulated slow device spaces them up to 4% slower on a model of many small kernels (mobilenetv2).
    options.enable_mem_pattern = False
    if external_dir is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(external_dir))
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    path = model_bytes if isinstance(model_bytes, Path) else None
    data = str(path) if path is not None else bytes(model_bytes)  # ORT opens a file by its name
    try:
        session = _open(ort, data, options, parsed)
    except SplitinferError:
        raise
    except Exception as e:  # ORT raises its own untyped errors for any malformed model
        older = _older_ir(path or data, str(e))  # type: ignore[arg-type]
        if older is None:  # not an older ONNX Runtime build (e.g. OpenVINO's) refusing the IR version
            raise _load_error(e, parsed) from None
        if path is not None:  # the model as bytes now: its external data is still where the file is
            options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                             str(path.parent))
        try:
            session = _open(ort, older, options, parsed)
        except SplitinferError:
            raise
        except Exception as again:
            raise _load_error(again, parsed) from None
    _check_options(session, parsed)
    # ORT's Python session keeps the model's bytes for as long as it lives, only to re-create itself on
    # another provider when one fails at run time; splitinfer reports a failed provider instead. Without
    # the fallback the bytes can go: a stage then holds its weights once, not twice.
    session.disable_fallback()
    if getattr(session, "_model_bytes", None) is not None:
        session._model_bytes = None
    return session


Parsed = list[tuple[str, dict[str, str]]]


def _open(runtime: Any, data: bytes | str, options: Any, parsed: Parsed) -> ort.InferenceSession:
    """The session on the providers asked for. ONNX Runtime's Python wrapper, when a provider fails to
    start (a bad option, a missing driver), prints why and quietly retries on the CPU alone: that would
    profile and run another device than the one declared, so it is an error here, with the reason."""
    providers = [(n, o) if o else n for n, o in parsed]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        session = runtime.InferenceSession(data, sess_options=options, providers=providers)
    started = session.get_providers()
    failed = [n for n, _ in parsed if n not in started]
    if failed:
        # The wrapper prints "EP Error <file>:<line> <the C++ signature>) <the reason>".
        reason = next((line.rsplit(") ", 1)[-1].strip() for line in printed.getvalue().splitlines()
                       if line.startswith("EP Error /")), "no reason given")
        raise WorkerError(f"execution provider {failed[0]} did not start ({reason[-200:]}); ONNX Runtime "
                          f"would have run on {', '.join(started)} instead",
                          "fix its options, or list only the providers this device runs")
    return session


def _load_error(e: BaseException, parsed: list[tuple[str, dict[str, str]]]) -> SplitinferError:
    """A provider that refused its options is the device's problem (WorkerError); else the model's."""
    text = first_line(e)
    with_options = [n for n, o in parsed if o]
    if with_options and any(n.replace("ExecutionProvider", "") in text for n in with_options):
        return WorkerError(f"execution provider {with_options[0]} refused its options: {text}",
                           "give options this provider takes (see its ONNX Runtime documentation)")
    return ModelError(f"ONNX Runtime cannot load the model: {text}",
                      "give a valid standalone ONNX model (check it with `splitinfer inspect`)")


_IR_REFUSED = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")


def _older_ir(data: bytes | Path, message: str) -> bytes | None:
    """The model (its bytes, or its file) with the IR version an older ONNX Runtime build asks for
    (OpenVINO's reads up to 13 while a current onnx writes 14), when its opsets allow that; None when
    the refusal was something else."""
    found = _IR_REFUSED.search(message)
    if found is None:
        return None
    import onnx

    model = onnx.load_from_string(data.read_bytes() if isinstance(data, Path) else data)
    wanted = int(found.group(2))
    if onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True) > wanted:
        return None
    model.ir_version = wanted
    return model.SerializeToString()


def _check_options(session: ort.InferenceSession, parsed: list[tuple[str, dict[str, str]]]) -> None:
    """WorkerError for an option a provider did not take: ONNX Runtime drops unknown ones silently
    (the CPU provider takes none), and a typo would then profile another device than the one meant."""
    taken = session.get_provider_options()
    for name, wanted in parsed:
        # Providers that report their options (CUDA, TensorRT) are checked against them; the CPU takes
        # none; others that report nothing (OpenVINO) check their keys themselves (a failed start above).
        known_options = taken.get(name, {})
        if not wanted or (not known_options and name != "CPUExecutionProvider"):
            continue
        unknown = sorted(set(wanted) - set(known_options))
        if unknown:
            known = ", ".join(sorted(taken.get(name, {}))) or "none"
            raise WorkerError(f"execution provider {name} does not take option(s) {', '.join(unknown)} "
                              f"(it takes: {known})", "drop them, or check their spelling")
