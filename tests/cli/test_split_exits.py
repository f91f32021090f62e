"""`splitinfer split --exits`: each exit ends a partition, the manifest says which (issue 17, item 2)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.cli import one_error_line, run_cli

from splitinfer import zoo
from splitinfer.graph.manifest import load_manifest


@pytest.fixture(scope="module")
def exits_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("exits") / "rx.onnx"
    onnx.save(zoo.build_small("resnet18_exits"), path)
    return path


def _run(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("extra", [[], ["--blocks", "4"]])
def test_each_exit_ends_a_partition_and_the_earlier_partitions_alone_make_it(capsys, tmp_path, exits_model,
                                                                             extra):
    code, out, err = run_cli(capsys, "split", exits_model, "--exits", "model", *extra, "-o", tmp_path)
    assert code == 0, err
    manifest = load_manifest(tmp_path)
    ends = {p.exit: p.index for p in manifest.partitions if p.exit is not None}
    assert list(ends) == ["exit1", "exit2"] and ends["exit1"] < ends["exit2"] < len(manifest.partitions) - 1
    assert [e.output for e in manifest.exits] == ["exit1", "exit2"]
    assert manifest.exits[0].rule == "softmax_max"
    assert len(manifest.partitions) > 3 if extra else len(manifest.partitions) == 3
    assert f"exit exit1: partition {ends['exit1']}" in out
    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = dict(zip(["exit1", "exit2", "logits"], _run(exits_model).run(None, {"image": image}), strict=True))
    values = {"image": image}
    for part in manifest.partitions:  # a request that stops at exit k runs partitions 0..k only
        session = _run(manifest.path_of(part.index))
        names = [o.name for o in session.get_outputs()]
        got = session.run(names, {s.name: values[s.name] for s in part.inputs})
        values.update(zip(names, got, strict=True))
        if part.exit is not None:
            np.testing.assert_allclose(values[part.exit], want[part.exit], atol=1e-5)
    np.testing.assert_allclose(values["logits"], want["logits"], atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--exits", "logits"], "exit 'logits' (in --exits) is the model's last output"),
    (["--exits", "exit1,nope"], "exit 'nope' (in --exits) is not an output of the model"),
    (["--exits", "exit1", "--exit-threshold", "1.5"], "is 1.5. use a finite number > 0 and <= 1; "
                                                     "--exit-threshold is the top class's probability"),
    (["--exits", "exit1", "--exit-rule", "entropy", "--exit-threshold", "-1"], "is -1.0"),
    (["--exit-threshold", "0.5", "--blocks", "2"], "--exit-rule and --exit-threshold apply to --exits"),
])
def test_bad_exits_are_one_line_naming_the_option(capsys, tmp_path, exits_model, args, message):
    code, _, err = run_cli(capsys, "split", exits_model, *args, "-o", tmp_path / "parts")
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "parts").exists()


def test_a_cut_that_would_leave_an_exit_inside_a_partition_is_refused(capsys, tmp_path, exits_model):
    # --at a cut before exit1's head and none after it: exit1 and exit2 share the last partitions
    code, _, err = run_cli(capsys, "split", exits_model, "--exits", "model", "--at", "exit2", "-o", tmp_path)
    assert code == 2 and "exit" in one_error_line(err)
