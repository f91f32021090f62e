"""The one ONNX Runtime inference session factory: options, clear errors, and no import cost."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

from splitinfer.errors import ModelError, WorkerError
from splitinfer.graph.inference import create_inference_session


def _relu_bytes() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_session_runs_with_the_threads_asked_for():
    session = create_inference_session(memoryview(_relu_bytes()), num_threads=2, optimize=False)
    assert session.get_session_options().intra_op_num_threads == 2
    (y,) = session.run(None, {"x": np.array([-1, 0, 2], np.float32)})
    np.testing.assert_array_equal(y, [0, 0, 2])


def test_bad_bytes_and_missing_providers_get_one_clear_error():
    with pytest.raises(ModelError, match="ONNX Runtime cannot load the model") as caught:
        create_inference_session(b"not onnx")
    assert "splitinfer inspect" in caught.value.fix
    with pytest.raises(WorkerError, match="NoSuchExecutionProvider not available") as caught:
        create_inference_session(_relu_bytes(), ["NoSuchExecutionProvider", "CPUExecutionProvider"])
    assert "CPUExecutionProvider" in caught.value.problem  # what this machine has instead


def test_importing_the_graph_layer_does_not_load_onnxruntime():
    # A fresh interpreter: this test process has long imported it.
    code = "import sys, splitinfer.graph; print('onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
