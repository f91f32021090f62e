"""What shape inference and one run of the model tell of each tensor: the load's helpers.

Inference runs on a *skeleton* (big initializers replaced by typed inputs, so that it never copies
the weights); tensors it leaves unknown are measured by running the model once with them as extra
outputs (``probe_shapes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from splitinfer.errors import SplitinferError
from splitinfer.graph.feeds import cannot_run_error
from splitinfer.graph.inference import create_inference_session
from splitinfer.graph.shapes import read_spec
from splitinfer.graph.specialize import quiet_run
from splitinfer.types import NUMPY_TO_ONNX, ONNX_TO_NUMPY, TensorSpec

# Initializers with more elements than this become typed inputs in the skeleton:
# shape inference only needs the values of small (shape-like) constants.
SKELETON_MAX_ELEMENTS = 1024


def clear_inner_shapes(graph: onnx.GraphProto) -> None:
    # Declared intermediate/output shapes were made for the export's shapes, often
    # symbolic or stale: inference recomputes them from the fixed inputs.
    # The rank stays (the checker wants a shape on outputs); the dims become unknown.
    del graph.value_info[:]
    for out in graph.output:
        if out.type.HasField("tensor_type") and out.type.tensor_type.HasField("shape"):
            for d in out.type.tensor_type.shape.dim:
                d.Clear()


def make_skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    graph = proto.graph
    skel_graph = onnx.GraphProto(name=graph.name)
    skel_graph.node.extend(graph.node)
    skel_graph.input.extend(graph.input)
    skel_graph.output.extend(graph.output)
    skel_graph.sparse_initializer.extend(graph.sparse_initializer)
    input_names = {i.name for i in graph.input}
    for t in graph.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) <= SKELETON_MAX_ELEMENTS:
            skel_graph.initializer.append(t)
        elif t.name not in input_names:
            skel_graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    skeleton = onnx.ModelProto(
        ir_version=proto.ir_version, producer_name=proto.producer_name, domain=proto.domain,
        model_version=proto.model_version,
    )
    skeleton.opset_import.extend(proto.opset_import)
    skeleton.functions.extend(proto.functions)
    skeleton.graph.CopyFrom(skel_graph)
    return skeleton


def collect_specs(
    inferred: onnx.GraphProto, graph: onnx.GraphProto
) -> tuple[dict[str, TensorSpec], set[str]]:
    specs: dict[str, TensorSpec] = {}
    uncuttable: set[str] = set()
    for t in graph.initializer:
        spec = read_spec(helper.make_tensor_type_proto(t.data_type, list(t.dims)), t.name)
        if spec is not None:
            specs[t.name] = spec
    for vi in [*inferred.input, *inferred.value_info, *inferred.output]:
        if vi.name in specs:
            continue
        spec = read_spec(vi.type, vi.name)
        if spec is not None:
            specs[vi.name] = spec
        elif vi.type.WhichOneof("value") not in (None, "tensor_type") or _has_odd_dtype(vi.type):
            uncuttable.add(vi.name)
    return specs, uncuttable


def _has_odd_dtype(tp: onnx.TypeProto) -> bool:
    elem = tp.tensor_type.elem_type
    return elem != 0 and elem not in ONNX_TO_NUMPY


def copy_output_types(inferred: onnx.GraphProto, graph: onnx.GraphProto) -> None:
    by_name = {o.name: o for o in inferred.output}
    for out in graph.output:
        if out.name in by_name and read_spec(by_name[out.name].type, out.name) is not None:
            out.type.CopyFrom(by_name[out.name].type)


def find_gaps(graph: onnx.GraphProto, specs: Mapping[str, TensorSpec], uncuttable: set[str]) -> list[str]:
    gaps = [o for n in graph.node for o in n.output if o and o not in specs and o not in uncuttable]
    return list(dict.fromkeys(gaps))


def probe_shapes(
    proto: onnx.ModelProto, gaps: list[str], specs: dict[str, TensorSpec], uncuttable: set[str],
    feeds: dict[str, np.ndarray], given: Mapping[str, np.ndarray], external_dir: Path | None = None,
) -> None:
    """Run the model once on ``feeds`` with the unknown tensors as extra outputs; read their shapes."""
    graph = proto.graph
    declared = {o.name for o in graph.output}
    extra = [g for g in gaps if g not in declared]
    num_outputs = len(graph.output)
    graph.output.extend(onnx.ValueInfoProto(name=g) for g in extra)
    try:
        session = create_inference_session(proto.SerializeToString(), optimize=False,
                                           external_dir=external_dir)
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, feeds, quiet_run())
    except SplitinferError:
        raise
    except Exception as e:  # ORT raises its own exception types per failure
        what = f"the model (to measure {len(gaps)} tensor shape(s) shape inference left unknown)"
        raise cannot_run_error(e, what, given, feeds) from None
    finally:
        del graph.output[num_outputs:]
    for name, value in zip(names, values, strict=True):
        if name not in gaps:
            continue
        if isinstance(value, np.ndarray) and value.dtype.name in NUMPY_TO_ONNX:
            specs[name] = TensorSpec(name, value.dtype.name, tuple(int(d) for d in value.shape))
            elem = NUMPY_TO_ONNX[value.dtype.name]
            graph.value_info.append(helper.make_tensor_value_info(name, elem, value.shape))
        else:
            uncuttable.add(name)

