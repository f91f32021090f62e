"""Issue 16's smaller items on the command line: a sane relative difference, tables not cut in a pipe,
a refined plan that names its profile, bench --input-shape, flags (not API arguments) in error lines, the
energy message's power fields, shape fixes without empty advice."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from helpers import graph_models as tm
from helpers.cli import one_error_line, run_cli

from splitinfer import zoo
from splitinfer.cli import main
from splitinfer.cli.runtime_cmds import resolve_deployment
from splitinfer.plan import plan_from_json
from splitinfer.profile.files import load_profile

README = Path(__file__).parents[2] / "README.md"
FAST = ["--budget-s", "0.5", "--max-blocks", "3"]


def _stats(median: float) -> dict:
    return {"median_s": median, "mean_s": median, "p10_s": median, "p90_s": median, "std_s": 0.0, "n": 10}


def _handmade_profile(path: Path) -> Path:
    """Four blocks on camera, edge and cloud, in the documented format."""
    camera = [0.05, 0.2, 0.2, 0.1]
    doc = {
        "schema": 1, "model": {"sha256": "ab" * 32, "name": "handmade"}, "input_bytes": 600_000,
        "output_bytes": 4_000,
        "blocks": [{"index": i, "nodes": [f"n{i}"], "cut_bytes": c, "output_bytes": c, "param_bytes": 10**6}
                   for i, c in enumerate([800_000, 400_000, 100_000, 4_000])],
        "devices": {name: {"blocks": [_stats(t * f) for t in camera], "date": "2026-01-01T00:00:00Z"}
                    for name, f in (("camera", 1.0), ("edge", 0.25), ("cloud", 0.05))},
        "links": [],
    }
    path.write_text(json.dumps(doc))
    return path


def _cluster(path: Path, power: str) -> Path:
    path.write_text(f"""
schema: 1
source: camera
devices:
  - {{name: camera{power}}}
  - {{name: edge}}
  - {{name: cloud}}
links:
  - {{from: camera, to: edge, bandwidth: 80Mbit/s, latency: 2ms}}
  - {{from: edge, to: cloud, bandwidth: 40Mbit/s, latency: 20ms}}
  - {{from: camera, to: cloud, bandwidth: 8Mbit/s, latency: 40ms}}
""")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_fixes")
    for name, build in [("conv", tm.conv_chain), ("dynamic", tm.dynamic), ("early", tm.early_output)]:
        onnx.save(build(), root / f"{name}.onnx")
    return root


def test_split_prints_a_sane_relative_difference_where_outputs_are_near_0(models, tmp_path, capsys,
                                                                           monkeypatch):
    verify_module = importlib.import_module("splitinfer.graph.verify")
    chain = verify_module.run_chain

    def off_by_a_little(*args, **kwargs):  # within tolerance: "ok", also where the reference is 0
        return {name: value + np.float32(1e-6) for name, value in chain(*args, **kwargs).items()}

    monkeypatch.setattr(verify_module, "run_chain", off_by_a_little)
    code, out, err = run_cli(capsys, "split", models / "early.onnx", "--blocks", "2", "-o", tmp_path / "out")
    assert code == 0, err
    assert "max abs diff / max |ref|" in out
    rows = {m[1]: m for m in re.finditer(r"│ (early|final) +│ (\S+) +│ (\S+) +│ (\w+)", out)}
    assert set(rows) == {"early", "final"}  # early is a Relu's output: many exact zeros
    for row in rows.values():
        assert row[4] == "yes" and 5e-7 < float(row[2]) < 2e-6
        assert 0 < float(row[3]) < 1e-5  # element-wise, the zeros made this about 1e301


@pytest.mark.parametrize("args", [["--objective", "pareto"], ["--top", "3"]])
def test_tables_are_not_cut_to_80_columns_in_a_pipe(tmp_path, capsys, monkeypatch, args):
    monkeypatch.delenv("COLUMNS", raising=False)  # captured output is not a terminal: as in a pipe
    profile = _handmade_profile(tmp_path / "profile.json")
    power = ", power: {busy_w: 4, idle_w: 1, radio_w: 2, battery: true}"
    cluster = _cluster(tmp_path / "cluster.yaml", power)
    code, out, err = run_cli(capsys, "plan", profile, "--cluster", cluster, *args)
    assert code == 0, err
    header = next(line for line in out.splitlines() if "latency s" in line)
    assert "stages" in header and "certificate" in header and "energy J" in header
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) > 80


def test_a_refined_plan_names_its_profile_so_run_and_bench_find_it(tmp_path, capsys):
    model = tmp_path / "r18.onnx"
    model.write_bytes(zoo.build_small("resnet18").SerializeToString())
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("devices:\n  - {name: camera, num_threads: 1, slowdown: 4}\n"
                       "  - {name: edge, num_threads: 1}\n"
                       "links:\n  - {from: camera, to: edge, bandwidth: 20Mbit/s, latency: 5ms}\n")
    out, plan_out = tmp_path / "p.json", tmp_path / "plan.json"
    code, _, err = run_cli(capsys, "profile", model, "--cluster", cluster, "-o", out, *FAST,
                           "--refine", "latency", "--plan-output", plan_out)
    assert code == 0, err
    (plan,) = plan_from_json(plan_out.read_text())
    assert (plan.provenance.profile, plan.provenance.cluster) == (str(out), str(cluster))
    assert plan.provenance.model == str(model)
    dep = resolve_deployment(plan_out, None, None, None)  # what run and bench do without flags
    assert dep.profile == load_profile(out) and dep.model.sha256 == plan.provenance.model_sha256
    code, text, err = run_cli(capsys, "run", plan_out)  # no --profile: its 3 blocks deploy as profiled
    assert code == 0, err
    assert "outputs" in text


@pytest.fixture(scope="module")
def dynamic_plan(models, tmp_path_factory):
    """A plan of the dynamic model (profiled at x=1,3,16,16 on this machine as device a) and its
    one-device cluster; the profile is deleted: bench must be told the input shape."""
    root = tmp_path_factory.mktemp("dynamic_plan")
    profile, plan = root / "p.json", root / "plan.json"
    assert main(["profile", str(models / "dynamic.onnx"), "--input-shape", "x=1,3,16,16", "--device-name",
                 "a", "--num-threads", "1", "--budget-s", "0.3", "-o", str(profile)]) == 0
    cluster = {"schema": 1, "devices": [{"name": "a", "num_threads": 1}]}
    (root / "cluster.yaml").write_text(yaml.safe_dump(cluster))
    assert main(["plan", str(profile), "--cluster", str(root / "cluster.yaml"), "-o", str(plan)]) == 0
    return root


def test_bench_takes_the_input_shape_of_a_model_with_dynamic_dims(models, dynamic_plan, capsys):
    capsys.readouterr()
    model = models / "dynamic.onnx"
    plan = dynamic_plan / "plan.json"
    shape = ["--input-shape", "x=1,3,16,16"]
    # with the profile at hand its shapes are used: another shape is refused before deploying
    code, _, err = run_cli(capsys, "bench", plan, "--model", model, "--input-shape", "x=1,3,8,8")
    assert code == 2 and "--input-shape x=1,3,8,8 differs from the shape the profile was made with " \
                          "(x=1,3,16,16)" in one_error_line(err)
    (dynamic_plan / "p.json").unlink()
    code, _, err = run_cli(capsys, "bench", plan, "--model", model, "-n", "3", "--num-warmup", "1")
    assert code == 2 and "add --input-shape x=<batch>,3,<height>,<width>" in one_error_line(err)
    out = dynamic_plan / "bench.json"
    code, _, err = run_cli(capsys, "bench", plan, "--model", model, *shape, "-n", "3", "--num-warmup", "1",
                           "-o", out)
    assert code == 0, err
    assert json.loads(out.read_text())["num_requests"] == 3


@pytest.mark.parametrize(
    ("args", "flags", "api"),
    [
        (["dynamic"], "add --input-shape x=<batch>,3,<height>,<width> with numbers for the <...> dims "
                      "(--batch N fixes a leading batch dim)", "input_shapes="),
        (["conv", "--batch", "2"], "drop --batch, or use --batch 1", "batch="),
        (["conv", "--input-shape", "nope=1,3"], "--input-shape names 'nope', which is not an input",
         "input_shapes="),
    ],
)
def test_error_lines_name_flags_where_the_library_names_arguments(models, capsys, args, flags, api):
    code, _, err = run_cli(capsys, "inspect", models / f"{args[0]}.onnx", *args[1:])
    line = one_error_line(" ".join(err.split()))
    assert code == 2 and flags in line and api not in line


@pytest.mark.parametrize(
    ("given", "fix"),
    [
        ("x=1,3,16", "give 4 dims: --input-shape x=1,3,16,16"),
        ("x=1,3,32,32", "give --input-shape x=1,3,16,16, or leave 'x' out: the model fixes its shape"),
    ],
)
def test_a_fixed_input_gets_no_advice_about_dynamic_dims(models, capsys, given, fix):
    code, _, err = run_cli(capsys, "inspect", models / "conv.onnx", "--input-shape", given)
    line = one_error_line(" ".join(err.split()))
    assert code == 2 and line.endswith(fix) and "<...>" not in line


def test_the_energy_message_names_the_power_fields_the_readme_shows(tmp_path, capsys):
    profile = _handmade_profile(tmp_path / "profile.json")
    cluster = _cluster(tmp_path / "cluster.yaml", "")  # no power figures anywhere
    code, _, err = run_cli(capsys, "plan", profile, "--cluster", cluster, "--objective", "energy")
    line = one_error_line(" ".join(err.split()))
    assert code == 2 and "the energy objective needs a battery-powered device" in line
    readme = README.read_text()
    example = re.findall(r"power: \{([^}]*)\}", readme)[0]  # the first cluster.yaml example
    for field in [f.split(":")[0].strip() for f in example.split(",")] + ["radio_w", "radio_j_per_byte"]:
        assert field in line, field
        assert f"`{field}" in readme, field  # and the README says what each is
