"""Compressions by name and text form, which dtypes each carries, what a hop costs on the wire, and the
package's place in the layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import splitinfer.compression
from splitinfer.compression import (
    COMPRESSIONS,
    Compressed,
    Fp16,
    Int8,
    Lz4,
    NoCompression,
    Zstd,
    get_compression,
    parse_compression,
    wire_bytes,
)
from splitinfer.errors import PlanError
from splitinfer.types import NUMPY_DTYPES

PACKAGE = Path(splitinfer.compression.__file__).parent


def test_the_names():
    assert COMPRESSIONS == ("none", "fp16", "int8", "lz4", "zstd")


@pytest.mark.parametrize(("text", "expected", "canonical"), [
    ("none", NoCompression(), "none"),
    ("fp16", Fp16(), "fp16"),
    ("int8", Int8(), "int8"),
    ("int8:per_channel", Int8(axis=1), "int8:per_channel:axis=1"),
    ("int8:per_channel:axis=1", Int8(axis=1), "int8:per_channel:axis=1"),
    (" int8 : axis = -1 ", Int8(axis=-1), "int8:per_channel:axis=-1"),
    ("int8:per_channel=false", Int8(), "int8"),
    ("lz4", Lz4(), "lz4"),
    ("lz4:level=9", Lz4(level=9), "lz4:level=9"),
    ("zstd", Zstd(), "zstd"),
    ("zstd:level=-7", Zstd(level=-7), "zstd:level=-7"),
    ("zstd:level=22", Zstd(level=22), "zstd:level=22"),
])
def test_the_text_form_reads_and_writes_back(text, expected, canonical):
    compression = parse_compression(text)
    assert compression == expected
    assert str(compression) == compression.spec == canonical
    assert parse_compression(canonical) == expected


def test_get_compression_takes_the_same_settings():
    assert get_compression("int8", per_channel=True, axis=2) == Int8(axis=2)
    assert get_compression("int8", per_channel=True) == Int8(axis=1)
    assert get_compression("int8", axis=None) == Int8()
    assert get_compression("zstd", level=3) == Zstd(level=3) != Zstd()


@pytest.mark.parametrize(("text", "match"), [
    ("gzip", "unknown compression 'gzip'.*use one of none, fp16, int8, lz4, zstd"),
    ("", "empty"),
    ("int8:per_channel:axis=x", "axis"),
    ("int8:per_channel=false:axis=1", "no axis"),
    ("int8:per_channel=2", "per_channel"),
    ("fp16:level=3", "fp16 has no setting level.*its settings: none"),
    ("lz4:level=17", "level 17.*0 to 16"),
    ("zstd:level=23", "level 23.*-7 to 22"),
    ("zstd:level=true", "level True"),
    ("zstd:level=3:level=4", "setting"),
    ("zstd:Level=3", "setting"),
    ("zstd::", "setting"),
])
def test_a_bad_text_form_is_one_clear_line(text, match):
    with pytest.raises(PlanError, match=match) as info:
        parse_compression(text)
    assert "\n" not in str(info.value) and info.value.fix


def test_get_compression_refuses_unknown_names_and_settings():
    with pytest.raises(PlanError, match="use one of none, fp16, int8, lz4, zstd"):
        get_compression("int4")
    with pytest.raises(PlanError, match=r"no setting speed.*its settings: level"):
        get_compression("lz4", speed=1)


@pytest.mark.parametrize("name", COMPRESSIONS)
def test_which_dtypes_each_accepts(name):
    compression = get_compression(name)
    floats = {"float32", "float64"}
    for dtype in NUMPY_DTYPES:
        expected = dtype in floats if compression.lossy else True
        assert compression.accepts(dtype) is expected
        assert compression.accepts(np.dtype(dtype)) is expected
        assert compression.accepts(np.dtype(dtype).newbyteorder(">")) is expected
    assert compression.accepts(np.float32)
    for other in ("complex64", "object", "float128", np.dtype("U3"), None, 3):
        assert not compression.accepts(other)


@pytest.mark.parametrize("name", ["fp16", "int8"])
@pytest.mark.parametrize("dtype", ["int64", "int8", "uint8", "bool", "float16"])
def test_a_lossy_compression_on_an_integer_or_bool_tensor_is_a_plan_error(name, dtype):
    with pytest.raises(PlanError, match=rf"{name} is lossy.*float32 or float64.*'x' is {dtype}.*lz4"):
        get_compression(name).check(dtype, (1, 3), where="tensor 'x'")
    get_compression(name).check("float32", (1, 3))
    for lossless in ("none", "lz4", "zstd"):
        get_compression(lossless).check(dtype, (1, 3))


def test_int8_checks_its_axis_against_the_shape_at_plan_time():
    compression = parse_compression("int8:per_channel:axis=1")
    compression.check("float32", (1, 64, 7, 7))
    compression.check("float32", None)  # shape unknown yet: the dtype alone is checked
    with pytest.raises(PlanError, match=r"axis 1.*1 dimensions"):
        compression.check("float32", (5,))
    parse_compression("int8:per_channel:axis=-1").check("float32", (5,))


_plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats(allow_nan=False) | st.text(max_size=300) | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=40), inner, max_size=20),
    max_leaves=40)


@given(_plain)
def test_the_params_size_estimate_is_the_msgpack_size(params):
    c = Compressed("none", b"12345", params)
    assert wire_bytes(c) == 5 + len(msgspec.msgpack.encode(params))


def test_long_lists_and_strings_in_params_are_counted_exactly():
    for params in ({"scale": [0.5] * 70000, "zero_point": [200] * 70000},
                   {"s": "x" * 70000, "b": b"y" * 70000, "n": [None] * 20}):
        assert wire_bytes(Compressed("none", b"", params)) == len(msgspec.msgpack.encode(params))


@pytest.mark.parametrize("spec", ["none", "fp16", "int8", "int8:per_channel:axis=1", "lz4", "zstd"])
def test_wire_bytes_counts_the_payload_and_the_params_header(spec):
    arr = np.maximum(np.random.default_rng(0).standard_normal((1, 16, 8, 8), dtype=np.float32), 0)
    c = parse_compression(spec).compress(arr)
    header = len(msgspec.msgpack.encode(c.params))
    assert wire_bytes(c) == len(bytes(c.payload)) + header
    assert header < 100 + 10 * len(c.params.get("scale", ()))  # the params stay small
    expected_ratio = {"none": 1, "fp16": 2, "int8": 4}.get(spec.split(":")[0])
    if expected_ratio:
        assert len(bytes(c.payload)) == arr.nbytes // expected_ratio


def test_the_package_imports_only_what_sits_below_the_runtime():
    allowed = {"numpy", "lz4", "zstandard", "splitinfer.errors", "splitinfer.types", "splitinfer.compression"}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or name == "__future__":
                    continue
                assert any(name == a or name.startswith(a + ".") for a in allowed), f"{path.name}: {name}"
    # And at run time: importing it loads neither ZeroMQ nor ONNX nor the runtime.
    code = ("import sys, splitinfer.compression; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('zmq', 'onnx', 'onnxruntime') "
            "or m.startswith('splitinfer.runtime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
