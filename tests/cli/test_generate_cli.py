"""`splitinfer generate`: a decoder profiled, planned across two workers and generating, as a user runs it;
the tokens equal the whole model's greedy ones (issue 20, item 3)."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers.cli import TWO_DEVICES, one_error_line, run_cli

from splitinfer import zoo
from splitinfer.generation.reference import whole_model_step
from splitinfer.generation.sampling import Sampling
from splitinfer.generation.sampling import generate as reference_generate

PROMPT = [5, 17, 42, 7]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generate")
    zoo.save("gpt2", folder / "gpt2.onnx", small=True)
    (folder / "cluster.yaml").write_text(yaml.safe_dump(TWO_DEVICES))
    return folder


def _profile_and_plan(capsys, folder):
    code, _, err = run_cli(capsys, "profile", folder / "gpt2.onnx", "--cluster", folder / "cluster.yaml",
                           "--budget-s", "0.3", "--max-blocks", "6", "-o", folder / "profile.json")
    assert code == 0, err
    profile = json.loads((folder / "profile.json").read_text())
    assert len(profile.get("other_sizes", [])) == 1  # the decode step, beside the prefill
    last = len(profile["blocks"]) - 1
    code, _, err = run_cli(capsys, "plan", folder / "profile.json", "--cluster", folder / "cluster.yaml",
                           "--pin", "0=a", "--pin", f"{last}=b", "-o", folder / "plan.json")
    assert code == 0, err


def test_generate_streams_the_whole_models_greedy_tokens(capsys, planned):
    _profile_and_plan(capsys, planned)
    code, out, err = run_cli(capsys, "generate", planned / "plan.json", "--prompt-ids", "5,17,42,7",
                             "-n", "20", "--json")
    assert code == 0, err
    figures = json.loads(out)
    want = [t for t, _ in reference_generate(whole_model_step(zoo.build_small("gpt2")), PROMPT,
                                             Sampling(max_new_tokens=20))]
    assert figures["tokens"] == want
    assert figures["time_to_first_token_s"] > 0 and figures["time_per_output_token_s"] > 0
    code, out, _ = run_cli(capsys, "generate", planned / "plan.json", "--prompt-ids", "5 17 42 7", "-n", "3")
    assert code == 0 and "3 tokens: first after" in out and " ".join(map(str, want[:3])) in out


@pytest.mark.parametrize(("args", "says"), [
    (["--prompt-ids", "5,x"], "is not a list of token ids"),
    (["--prompt-ids", ","], "--prompt-ids is empty"),
    (["--prompt-ids", "5,-1"], "holds a negative id"),
    (["--prompt-ids", "5", "--top-p", "0"], "Sampling.top_p"),
    (["--prompt-ids", "5", "--stop-ids", "q"], "--stop-ids"),
])
def test_bad_generation_options_are_one_line_and_exit_2(capsys, planned, args, says):
    code, _, err = run_cli(capsys, "generate", planned / "plan.json", *args)
    assert code == 2 and says in one_error_line(err)
