"""Request bodies: read within a size and a time limit, parsed into arrays (.npy or JSON), never unpickled."""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
from starlette.requests import Request

from splitinfer.errors import InputError, first_line
from splitinfer.types import NUMPY_TO_ONNX, TensorSpec

NPY_TYPES = ("application/x-npy", "application/octet-stream")
JSON_TYPE = "application/json"
MAX_JSON_DEPTH = 32  # {"inputs": {name: {"data": ...}}} leaves 29 levels for a tensor's data
_NPY_HEADER_MAX_BYTES = 10_000  # numpy's own limit on an .npy header (np.load's max_header_size)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_SCAN_CHUNK = 1 << 20


class BodyTooLarge(InputError):
    """The body is over the gateway's limit (HTTP 413)."""


class BodyTimeout(InputError):
    """The body did not arrive within the gateway's time limit (HTTP 408)."""


async def read_body(request: Request, limit_bytes: int, timeout_s: float) -> bytearray:
    """The whole body, refused as soon as it is known to exceed ``limit_bytes``.

    A declared Content-Length over the limit is refused before anything is read. Otherwise (no
    Content-Length: a chunked body) the body is counted as it streams and refused once it passes the
    limit, so no more than ``limit_bytes`` is ever held; the HTTP server never reads past a declared
    Content-Length. All of it must arrive within ``timeout_s`` (a body shorter than its declared
    length, or a trickle, times out).
    Raises :class:`BodyTooLarge`, :class:`BodyTimeout`, or Starlette's ``ClientDisconnect``.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise _too_large(f"Content-Length {declared}", limit_bytes)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s), contextlib.aclosing(request.stream()) as chunks:
            async for chunk in chunks:
                if len(body) + len(chunk) > limit_bytes:
                    raise _too_large(f"more than {len(body) + len(chunk)} bytes", limit_bytes)
                body += chunk
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {timeout_s:g} s ({len(body)} bytes came)",
                          "send the whole body at once, or ask for a longer --body-timeout") from None
    return body


def _too_large(what: str, limit_bytes: int) -> BodyTooLarge:
    return BodyTooLarge(f"the body has {what}, the limit is {limit_bytes} bytes",
                        "send smaller inputs or raise the gateway's --max-body-bytes")


# ---- .npy -------------------------------------------------------------------------------------------
def parse_npy(body: bytes | bytearray, inputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """One .npy array, for a single-input model: the header is checked against the bytes that follow it
    before any array exists (no allocation from a header's shape), and object arrays are refused."""
    names = [s.name for s in inputs]
    if len(names) != 1:
        raise InputError(f"the model has {len(names)} inputs ({', '.join(names)}), an .npy body holds one",
                         'send JSON: {"inputs": {name: {"dtype", "shape", "data"}}}')
    head = io.BytesIO(bytes(body[: _NPY_HEADER_MAX_BYTES + 16]))
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, TypeError, OSError, EOFError, SyntaxError) as e:
        raise _unreadable(first_line(e)) from None
    if dtype.hasobject:
        raise _unreadable("it holds Python objects, which would need unpickling")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _unreadable(f"its header has shape {shape!r}")
    offset = head.tell()
    need, have = math.prod(shape) * dtype.itemsize, len(body) - offset
    if need != have:
        raise _unreadable(f"its header says shape {list(shape)} of {dtype.name} ({need} bytes), "
                          f"{have} bytes follow it")
    try:
        flat = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=offset)
    except ValueError as e:
        raise _unreadable(first_line(e)) from None
    return {names[0]: flat.reshape(shape[::-1]).transpose() if fortran else flat.reshape(shape)}


def _unreadable(why: str) -> InputError:
    return InputError(f"the body is not a readable .npy array ({why})",
                      "send numpy.save() output of a numeric array")


# ---- JSON -------------------------------------------------------------------------------------------
def json_depth(body: bytes | bytearray) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings do not count), in one
    pass over the bytes: enough to refuse a deep document before any recursive decoder sees it."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for start in range(0, len(brackets), _SCAN_CHUNK):
        codes = np.frombuffer(brackets, np.uint8, count=min(_SCAN_CHUNK, len(brackets) - start), offset=start)
        steps = ((codes >> 1) & 1).astype(np.int64) * 2 - 1  # [ and { (bit 1 set): +1, ] and }: -1
        levels = depth + np.cumsum(steps)
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def _tensor(name: str, item: Any) -> np.ndarray:
    if not isinstance(item, Mapping) or not {"dtype", "shape", "data"} <= set(item):
        raise InputError(f"input {name!r} is not an object with dtype, shape and data",
                         'write it like {"dtype": "float32", "shape": [1, 3], "data": [0.1, 0.2, 0.3]}')
    dtype = item["dtype"]
    if not isinstance(dtype, str) or dtype not in NUMPY_TO_ONNX:
        raise InputError(f"input {name!r} has dtype {dtype!r}",
                         f"use one of: {', '.join(sorted(NUMPY_TO_ONNX))}")
    shape = item["shape"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InputError(f"input {name!r} has shape {str(shape)[:100]}", "give a list of whole numbers >= 0")
    try:
        array = np.asarray(item["data"], dtype=np.dtype(dtype))
        return array.reshape(shape)
    except (ValueError, TypeError, OverflowError) as e:
        raise InputError(f"input {name!r}: data does not fit dtype {dtype} and shape {str(shape)[:100]} "
                         f"({first_line(e)})",
                         "give (nested) lists of numbers with as many values as the shape holds") from None


def parse_json(body: bytes | bytearray) -> dict[str, np.ndarray]:
    """``{"inputs": {name: {"dtype", "shape", "data"}}}`` to arrays; nesting deeper than
    ``MAX_JSON_DEPTH`` is refused before decoding."""
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise InputError(f"the JSON body nests {depth} levels deep, the limit is {MAX_JSON_DEPTH}",
                         'send {"inputs": {name: {"dtype", "shape", "data"}}} with data as nested lists')
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise InputError(f"the body is not valid JSON ({e})", 'send {"inputs": {name: {...}}}') from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), dict) or not doc["inputs"]:
        raise InputError('the JSON body has no "inputs" object',
                         'send {"inputs": {name: {"dtype", "shape", "data"}}}')
    return {str(name): _tensor(str(name), item) for name, item in doc["inputs"].items()}


def encode_tensor(array: np.ndarray) -> dict[str, Any]:
    """An array as ``{"dtype", "shape", "data"}`` (nested lists)."""
    return {"dtype": array.dtype.name, "shape": list(array.shape), "data": array.tolist()}


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as .npy bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
