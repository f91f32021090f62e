"""Opening a worker's partition cache (device/_partitions.py): its folder (given, the default one, or a
temporary one), locked for this worker, and the store on it."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splitinfer.errors import SplitinferError, first_line
from splitinfer.runtime.device._partition_files import claim, default_cache_dir, reason
from splitinfer.runtime.device._partitions import PartitionStore
from splitinfer.runtime.wire.messages import MAX_CHUNK_BYTES

log = logging.getLogger("splitinfer.worker")


def open_store(name: str, cache_dir: str | None, max_bytes: int, model_dir: str | None,
               max_frame_bytes: int, providers: Sequence[str] = (),
               optimize_ahead: bool = False) -> PartitionStore:
    """The worker's store: ``cache_dir`` (SplitinferError naming it when it cannot be written or another
    worker holds it), else the default folder, else a temporary one. With ``optimize_ahead``, on the CPU
    provider alone, large partitions are kept as ONNX Runtime optimized them for this CPU
    (device/_partition_optimize.py)."""
    optimize = optimize_ahead and tuple(providers) == ("CPUExecutionProvider",)
    if optimize_ahead and not optimize:
        log.warning("--optimize-ahead is for the CPU provider alone (this worker runs %s): off",
                    ", ".join(providers))
    folder_model = Path(model_dir).expanduser() if model_dir else None
    chunk = min(MAX_CHUNK_BYTES, max_frame_bytes)
    if cache_dir is not None:
        folder = Path(cache_dir).expanduser()
        try:
            lock = claim(folder)
        except OSError as e:
            raise SplitinferError(f"--cache-dir {folder} cannot be used: {reason(e)}",
                                  "give a folder this user can write (made if missing) that no other "
                                  "worker uses") from None
        return _opened(folder, max_bytes, folder_model, chunk, False, lock, optimize)
    try:
        folder = default_cache_dir(name)
        lock = claim(folder)
        return _opened(folder, max_bytes, folder_model, chunk, False, lock, optimize)
    except (OSError, RuntimeError) as e:
        folder = Path(tempfile.mkdtemp(prefix="splitinfer-partitions-"))
        log.warning("partition cache in %s, removed at exit (the default folder: %s)", folder,
                    reason(e) if isinstance(e, OSError) else first_line(e))
        return _opened(folder, max_bytes, folder_model, chunk, True, None, optimize)


def _opened(folder: Path, max_bytes: int, model_dir: Path | None, chunk: int, temporary: bool,
            lock: Any, optimize: bool) -> PartitionStore:
    try:
        return PartitionStore(folder, max_bytes, model_dir=model_dir, max_chunk_bytes=chunk,
                              temporary=temporary, lock=lock, optimize=optimize)
    except BaseException:
        if lock is not None:
            lock.close()
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        raise
