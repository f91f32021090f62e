"""The files behind a worker's partitions (device/_partitions.py): hashing, the ``--model-dir`` index, the
pending transfers found at start, and the cache folder made, checked writable and locked for one worker."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitinfer.errors import SplitinferError
from splitinfer.host import cache_root

try:
    import fcntl
except ImportError:  # not POSIX: no lock, one worker per folder is then the user's to keep
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("splitinfer.worker")
_READ_BYTES = 1 << 20
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_PENDING = re.compile(r"([0-9a-f]{64})-([0-9]{1,16})\.part")


def sha256_of_file(path: Path) -> str:
    """The SHA-256 (hex) of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(_READ_BYTES):
            digest.update(piece)
    return digest.hexdigest()


@dataclass
class Pending:
    """A transfer under way: its file, the bytes held and (when known) their running hash."""

    size_bytes: int
    path: Path
    held: int
    digest: Any = None  # hashlib's sha256 of the bytes held, None when it must be read back


def pending_transfers(folder: Path) -> OrderedDict[str, Pending]:
    """The transfers left pending in ``folder`` (``SHA-SIZE.part``), least recently sent to first; any other
    file there (a rewrite's that broke off, one longer than its size) removed."""
    pending: OrderedDict[str, Pending] = OrderedDict()
    for path in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns):
        m = _PENDING.fullmatch(path.name)
        size = int(m.group(2)) if m else 0
        if m and size > 0 and path.stat().st_size <= size and m.group(1) not in pending:
            pending[m.group(1)] = Pending(size, path, path.stat().st_size)
        else:
            path.unlink(missing_ok=True)
    return pending


class ModelDir:
    """The ``*.onnx`` files of a folder (not its sub-folders), by SHA-256."""

    def __init__(self, path: Path) -> None:
        if not path.is_dir():
            raise SplitinferError(f"--model-dir {path} is not a folder", "give a folder of .onnx partitions")
        self.path = path
        # file name -> (size, mtime_ns, sha256); filled on the first lookup, not at start-up: hashing a
        # folder of large partitions would hold the worker back before it listens.
        self._seen: dict[str, tuple[int, int, str]] = {}

    def scan(self) -> None:
        """Hash the files added or changed since the last scan; forget those gone."""
        seen: dict[str, tuple[int, int, str]] = {}
        for path in sorted(self.path.glob("*.onnx")):
            try:
                stat = path.stat()
                known = self._seen.get(path.name)
                if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
                    seen[path.name] = known
                elif path.is_file():
                    seen[path.name] = (stat.st_size, stat.st_mtime_ns, sha256_of_file(path))
            except OSError as e:
                log.warning("--model-dir: cannot read %s: %s", path, e.strerror or e)
        self._seen = seen

    def find(self, sha256: str) -> Path | None:
        """The file with this hash, looking at the folder again when none has it."""
        path = self._lookup(sha256)
        if path is None:
            self.scan()
            path = self._lookup(sha256)
        return path

    def _lookup(self, sha256: str) -> Path | None:
        return next((self.path / name for name, (_, _, h) in self._seen.items() if h == sha256), None)

    def __len__(self) -> int:
        return len(self._seen)


def default_cache_dir(name: str) -> Path:
    """``partitions/NAME`` in splitinfer's cache folder (:func:`splitinfer.host.cache_root`)."""
    return cache_root() / "partitions" / (_SAFE_NAME.sub("_", name) or "worker")


def claim(folder: Path) -> Any:
    """Make the folder, check that files can be written there, and lock it for this process."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pending").mkdir(exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
    os.close(fd)
    os.unlink(probe)
    lock = open(folder / ".lock", "a+b")  # noqa: SIM115 (held open while the worker runs)
    if fcntl is not None:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise OSError("another worker uses it") from None
    return lock


def reason(err: OSError) -> str:
    """Why a file operation failed, with the file it failed on."""
    return err.strerror or str(err) if err.filename is None else f"{err.strerror or err} ({err.filename})"


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, None when it cannot be read (gone since)."""
    try:
        return path.read_bytes()
    except OSError:
        return None
