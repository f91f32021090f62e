"""Where something ran: the machine and the versions of the libraries that decide its timings.

One description for every record that says where it was made: a worker's ``info``
reply, the ``host`` and ``versions`` of a profiled device, the ``host`` of bench.json.
Library versions come from the installed packages' metadata, so describing the host
imports neither ONNX Runtime nor ZeroMQ.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import socket
import threading
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

import splitinfer

# The machine's lasting facts: what a profile keeps of its devices' hosts (free memory changes).
MACHINE_KEYS = ("hostname", "platform", "machine", "processor", "num_cpus", "num_physical_cpus",
                "cpu_freq_mhz", "memory_total_bytes")

# version key -> the distributions that provide it, in order of preference
# (ONNX Runtime ships as several builds of one module).
_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                    "onnxruntime-qnn", "onnxruntime-silicon"),
    "pyzmq": ("pyzmq",),
    "msgspec": ("msgspec",),
}


def _installed_version(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def library_versions() -> dict[str, str]:
    """Versions of Python, splitinfer and the libraries that decide the timings (installed ones only)."""
    versions = {"python": platform.python_version(), "splitinfer": splitinfer.__version__}
    for key, distributions in _DISTRIBUTIONS.items():
        version = _installed_version(distributions)
        if version is not None:
            versions[key] = version
    return versions


def max_num_threads() -> int:
    """The most intra-op threads a device of this machine may ask for: 4 x its logical CPUs.

    More only costs memory (a stack per thread) and time to create the pool.
    """
    return 4 * (os.cpu_count() or 1)


def _cpu_freq_mhz() -> float | None:
    try:
        freq = psutil.cpu_freq()
    except (AttributeError, NotImplementedError, OSError):  # not every platform reports it
        return None
    return None if freq is None else float(freq.current)


def host_info() -> dict[str, Any]:
    """This machine: the :data:`MACHINE_KEYS`, ``memory_available_bytes`` and ``versions``
    (:func:`library_versions`)."""
    memory = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
        "processor": platform.processor(), "num_cpus": os.cpu_count(),
        "num_physical_cpus": psutil.cpu_count(logical=False), "cpu_freq_mhz": _cpu_freq_mhz(),
        "memory_total_bytes": memory.total, "memory_available_bytes": memory.available,
        "versions": library_versions(),
    }


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                      "usmblks", "fsmblks", "uordblks", "fordblks",
                                                      "keepcost")]


@functools.cache
def _libc_call(name: str) -> Callable[..., Any] | None:
    """A function of glibc (``mallinfo2`` needs glibc 2.33 or later), or None where there is none."""
    try:
        call = getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None
    if name == "mallinfo2":
        call.restype = _MallInfo2
    return call


def held_bytes() -> int:
    """The memory this process holds now: the bytes its allocator has handed out (glibc: in use on the
    heap plus mmapped chunks), else its resident memory. Resident memory would miss what a session
    takes from memory the process freed earlier and kept (mobilenetv2's 14 MB of weights: +0 MB
    resident in a process that had built the model, +15.4 MB allocated)."""
    info = _libc_call("mallinfo2")
    if info is None:
        return psutil.Process().memory_info().rss
    m = info()
    return int(m.uordblks + m.hblkhd)


def release_freed_memory() -> None:
    """Hand the heap memory this process freed back to the system (glibc's ``malloc_trim``). A worker
    does so after a deploy: the partition's bytes arrive, are copied for ONNX Runtime and parsed,
    and the freed copies would otherwise stay resident (resnet18: 263 MB resident after its session
    was created, 131 MB after the trim)."""
    trim = _libc_call("malloc_trim")
    if trim is not None:
        trim(0)


# glibc's mallopt parameters (malloc.h), and what a worker fixes them at: (mmap, trim) thresholds in bytes.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_RETURNING = (128 << 10, 128 << 10)  # glibc's defaults: a freed buffer over 128 KiB goes back at once
_KEEPING = (32 << 20, 64 << 20)  # the most glibc's own dynamic thresholds reach: a run's buffers stay
_allocator = {"managed": False, "depth": 0}
_allocator_lock = threading.Lock()


def manage_freed_memory() -> bool:
    """Make this process's allocator (glibc's) keep what it frees, except while
    :func:`returning_freed_memory` says to hand it back: a worker does so at start. False where there is
    no glibc.

    glibc raises its thresholds the first time a large buffer is freed, up to 32 MiB, and from then on a
    freed buffer up to that size stays resident where it was the last thing on its thread's heap, which
    ``malloc_trim`` does not reach: a worker that once took a partition in 4 MiB chunks kept 4 MiB for
    good, and creating a session held the copies of what the process had freed before (resnet18, all 32
    blocks: a deploy peaked at 150 MB, 119 MB with what it freed handed back). Handed back always, every
    run of a stage would fault its buffers in again (mobilenetv2 in two stages: 9% slower), so a worker
    keeps them while it runs stages and hands back while it creates sessions and takes partitions."""
    if not _set_thresholds(_KEEPING):
        return False
    _allocator["managed"] = True
    return True


@contextlib.contextmanager
def returning_freed_memory() -> Iterator[None]:
    """While inside, what the process frees goes back to the system at once, in a process that
    :func:`manage_freed_memory` (else nothing changes): a device's resident memory then follows what its
    stages hold, as the planner predicts it, not what it received or freed before
    (benchmarks/bench_memory.py). Process-wide: a stage running on another thread meanwhile hands its
    buffers back too, for as long as a session is created (milliseconds to seconds, at a deploy)."""
    with _allocator_lock:
        managed = _allocator["managed"]
        if managed:
            _allocator["depth"] += 1
            if _allocator["depth"] == 1:
                _set_thresholds(_RETURNING)
    try:
        yield
    finally:
        if managed:
            with _allocator_lock:
                _allocator["depth"] -= 1
                if _allocator["depth"] == 0:
                    # What was freed away from its heap's top (a chunk received before the last one) is
                    # handed back too.
                    release_freed_memory()
                    _set_thresholds(_KEEPING)


def _set_thresholds(thresholds: tuple[int, int]) -> bool:
    mallopt = _libc_call("mallopt")
    if mallopt is None:
        return False
    mmap_bytes, trim_bytes = thresholds
    return mallopt(_M_MMAP_THRESHOLD, mmap_bytes) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_bytes) == 1


def reset_peak_resident(pid: int | str = "self") -> bool:
    """Start a process's peak resident memory (Linux's VmHWM; this one's by default) afresh from now;
    False where that cannot be done (another system, an old kernel, another user's process)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_resident_bytes(pid: int | str = "self") -> int | None:
    """A process's peak resident memory (this one's by default) since it started or the last
    :func:`reset_peak_resident`; None where the system does not tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cache_root() -> Path:
    """splitinfer's cache folder on this machine (converted models, workers' partitions):
    ``$SPLITINFER_CACHE_DIR``, else ``$XDG_CACHE_HOME/splitinfer``, else ``~/.cache/splitinfer``."""
    root = os.environ.get("SPLITINFER_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "splitinfer"
