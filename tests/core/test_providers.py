"""Execution providers with options: the text form, cluster.yaml's mapping form, worker flags, and the
session factory's refusals (the real OpenVINO run: benchmarks/bench_openvino.py, in its own venv)."""

from __future__ import annotations

import onnx
import pytest
import yaml
from onnx import helper

from splitinfer.cluster import dump_cluster, parse_cluster
from splitinfer.errors import ClusterError, ModelError, SplitinferError, WorkerError
from splitinfer.graph import inference
from splitinfer.graph.inference import create_inference_session
from splitinfer.providers import parse_provider, provider_names, provider_text
from splitinfer.runtime.device.config import parse_config

HETERO = "OpenVINOExecutionProvider:device_type=HETERO:MYRIAD,CPU;precision=FP16"
HETERO_OPTIONS = {"device_type": "HETERO:MYRIAD,CPU", "precision": "FP16"}


def _relu(opset: int = 17) -> bytes:
    x, y = helper.make_tensor_value_info("x", 1, [2]), helper.make_tensor_value_info("y", 1, [2])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def test_the_text_form_keeps_values_with_colons_and_commas():
    assert parse_provider(HETERO) == ("OpenVINOExecutionProvider", HETERO_OPTIONS)
    assert parse_provider("CPUExecutionProvider") == ("CPUExecutionProvider", {})
    assert provider_text("OpenVINOExecutionProvider", HETERO_OPTIONS) == HETERO
    assert provider_text("X", {"flag": True}) == "X:flag=True"
    assert provider_names([HETERO, "Cpu"]) == ["OpenVINOExecutionProvider", "Cpu"]
    for bad, match in (("", "is not a provider"), ("1abc", "does not start with a provider's name"),
                       ("X:novalue", "is not key=value"), ("X:a=1;a=2", "option 'a' twice")):
        with pytest.raises(SplitinferError, match=match):
            parse_provider(bad)


def test_cluster_yaml_takes_providers_with_options_as_a_mapping():
    cluster = parse_cluster({"devices": [{"name": "ov", "providers": [
        {"name": "OpenVINOExecutionProvider", "options": HETERO_OPTIONS}, "CPUExecutionProvider"]}]})
    assert cluster.device("ov").providers == (HETERO, "CPUExecutionProvider")
    assert parse_cluster(yaml.safe_load(dump_cluster(cluster))) == cluster
    with pytest.raises(ClusterError, match=r"device 'ov' providers 'X:oops': option 'oops' is not key=value"):
        parse_cluster({"devices": [{"name": "ov", "providers": ["X:oops"]}]})


def test_worker_flags_split_plain_lists_and_keep_a_provider_with_options_whole():
    config = parse_config(["--name", "w", "--providers", HETERO,
                           "CPUExecutionProvider,AzureExecutionProvider"])
    assert config.providers == (HETERO, "CPUExecutionProvider", "AzureExecutionProvider")
    with pytest.raises(SplitinferError, match="--providers"):
        parse_config(["--name", "w", "--providers", "X:bad"])


def test_the_factory_refuses_what_onnx_runtime_would_ignore_or_lacks():
    with pytest.raises(WorkerError, match=r"CPUExecutionProvider does not take option\(s\) threads"):
        create_inference_session(_relu(), ["CPUExecutionProvider:threads=2"])
    with pytest.raises(WorkerError, match="OpenVINOExecutionProvider not available on this machine"):
        create_inference_session(_relu(), [HETERO])
    plain = create_inference_session(_relu(), ["CPUExecutionProvider"])
    assert plain.get_providers() == ["CPUExecutionProvider"]


class _Fallback:
    """ONNX Runtime's wrapper when a provider fails to start: it prints why and runs on the CPU."""

    class InferenceSession:
        def __init__(self, data, sess_options=None, providers=()):
            print("*************** EP Error ***************")
            print("EP Error /ort/state.cc:1053 std::shared_ptr<F> Create(const Map&) Invalid EP option: typo")
            print("Falling back to ['CPUExecutionProvider'] and retrying.")

        def get_providers(self):
            return ["CPUExecutionProvider"]


def test_a_provider_that_did_not_start_is_named_with_onnx_runtimes_reason():
    with pytest.raises(WorkerError, match=r"Provider did not start \(Invalid EP option: typo"):
        inference._open(_Fallback, b"", None, [("OpenVINOExecutionProvider", {"typo": "1"})])


def test_an_older_runtime_gets_the_ir_version_it_reads_when_the_opsets_allow():
    refused = "Unsupported model IR version: 14, max supported IR version: 9"
    older = inference._older_ir(_relu(17), refused)
    assert onnx.load_from_string(older).ir_version == 9
    assert inference._older_ir(_relu(21), refused) is None  # opset 21 needs IR 10: no older model
    assert inference._older_ir(_relu(17), "some other failure") is None
    with pytest.raises(ModelError, match="ONNX Runtime cannot load the model"):
        create_inference_session(b"not a model", ["CPUExecutionProvider"])
