"""`splitinfer generate`: a decoder profiled, planned across two workers and generating, as a user runs it;
the tokens equal the whole model's greedy ones, from token ids or from text through a tokenizer (issue 20,
item 3)."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers.cli import TWO_DEVICES, one_error_line, run_cli
from helpers.text import SMALL_VOCAB, save_tokenizer

from splitinfer import zoo
from splitinfer.generation.reference import whole_model_step
from splitinfer.generation.sampling import Sampling
from splitinfer.generation.sampling import generate as reference_generate
from splitinfer.generation.tokenizer import load_tokenizer

PROMPT = [5, 17, 42, 7]
TEXT = "karé 🦊 the quick brown fox"


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generate")
    zoo.save("gpt2", folder / "gpt2.onnx", small=True)
    (folder / "cluster.yaml").write_text(yaml.safe_dump(TWO_DEVICES))
    save_tokenizer(folder)  # tokenizer.json: as many ids as the model's logits
    (folder / "big").mkdir()
    save_tokenizer(folder / "big", SMALL_VOCAB + 1)  # one id past them
    (folder / "bad.json").write_text('{"model": "none"}')
    return folder


def _profile_and_plan(capsys, folder):
    code, _, err = run_cli(capsys, "profile", folder / "gpt2.onnx", "--cluster", folder / "cluster.yaml",
                           "--budget-s", "0.3", "--max-blocks", "6", "-o", folder / "profile.json")
    assert code == 0, err
    profile = json.loads((folder / "profile.json").read_text())
    last = len(profile["blocks"]) - 1
    code, _, err = run_cli(capsys, "plan", folder / "profile.json", "--cluster", folder / "cluster.yaml",
                           "--pin", "0=a", "--pin", f"{last}=b", "-o", folder / "plan.json")
    assert code == 0, err


def _want(prompt, n):
    return [t for t, _ in reference_generate(whole_model_step(zoo.build_small("gpt2")), prompt,
                                             Sampling(max_new_tokens=n))]


def test_generate_streams_the_whole_models_greedy_tokens(capsys, planned):
    _profile_and_plan(capsys, planned)
    profile = json.loads((planned / "profile.json").read_text())
    assert len(profile.get("other_sizes", [])) == 2  # decode steps after two pasts, beside the prefill
    code, out, err = run_cli(capsys, "generate", planned / "plan.json", "--prompt-ids", "5,17,42,7",
                             "-n", "20", "--json")
    assert code == 0, err
    figures = json.loads(out)
    want = _want(PROMPT, 20)
    assert figures["tokens"] == want
    assert figures["time_to_first_token_s"] > 0 and figures["time_per_output_token_s"] > 0
    code, out, _ = run_cli(capsys, "generate", planned / "plan.json", "--prompt-ids", "5 17 42 7", "-n", "3")
    assert code == 0 and "3 tokens: first after" in out and " ".join(map(str, want[:3])) in out


def test_generate_from_text_prints_the_text_and_gives_ids_in_json(capsys, planned):
    if not (planned / "plan.json").exists():  # run alone, without the test above
        _profile_and_plan(capsys, planned)
    tok = load_tokenizer(planned / "tokenizer.json")
    ids = tok.encode(TEXT)
    want = _want(ids, 16)
    text_args = ["--prompt", TEXT, "--tokenizer", planned / "tokenizer.json", "-n", "16"]
    code, out, err = run_cli(capsys, "generate", planned / "plan.json", *text_args, "--json")
    assert code == 0, err
    figures = json.loads(out)
    assert figures["prompt_ids"] == ids and figures["tokens"] == want and figures["text"] == tok.decode(want)
    code, out, err = run_cli(capsys, "generate", planned / "plan.json", *text_args)
    assert code == 0, err
    assert out.startswith(tok.decode(want) + "\n") and "16 tokens: first after" in out
    # token ids in, the text out when there is a tokenizer
    code, out, err = run_cli(capsys, "generate", planned / "plan.json", "--prompt-ids",
                             ",".join(map(str, ids)), "--tokenizer", planned / "tokenizer.json", "-n", "16")
    assert code == 0 and out.startswith(tok.decode(want) + "\n"), err
    code, _, err = run_cli(capsys, "generate", planned / "plan.json", "--prompt", TEXT,
                           "--tokenizer", planned / "big" / "tokenizer.json")
    assert code == 2 and "has 1001 token ids, the model's logits cover 1000" in one_error_line(err)
    # --stop: the text ends before the first stop string; the tokens end with the one that completed it
    whole = tok.decode(want)
    stop = whole[len(whole) // 2:len(whole) // 2 + 2]
    code, out, err = run_cli(capsys, "generate", planned / "plan.json", *text_args, "--stop", stop, "--json")
    assert code == 0, err
    figures = json.loads(out)
    assert figures["text"] == whole[:whole.index(stop)] and figures["tokens"] == want[:len(figures["tokens"])]
    assert stop in tok.decode(figures["tokens"]) and stop not in tok.decode(figures["tokens"][:-1])


@pytest.mark.parametrize(("args", "says"), [
    ([], "no prompt given. give --prompt TEXT with --tokenizer FILE, or --prompt-ids"),
    (["--prompt", "hi", "--prompt-ids", "5"], "--prompt and --prompt-ids both give the prompt"),
    (["--prompt", "hi"], "no --tokenizer turns it into token ids"),
    (["--prompt", "hi", "--tokenizer", "{folder}/none.json"], "--tokenizer: cannot read the tokenizer"),
    (["--prompt", "hi", "--tokenizer", "{folder}/bad.json"], "bad.json is not a tokenizer.json"),
    (["--prompt", "", "--tokenizer", "{folder}/tokenizer.json"], "encodes to no tokens"),
    (["--prompt-ids", "5,x"], "is not a list of token ids"),
    (["--prompt-ids", ","], "--prompt-ids is empty"),
    (["--prompt-ids", "5,-1"], "holds a negative id"),
    (["--prompt-ids", "5", "--top-p", "0"], "Sampling.top_p"),
    (["--prompt-ids", "5", "--stop-ids", "q"], "--stop-ids"),
    (["--prompt-ids", "5", "--stop", "Q:"], "--stop is text and no --tokenizer"),
    (["--prompt", "hi", "--tokenizer", "{folder}/tokenizer.json", "--stop", ""], "--stop is empty"),
])
def test_bad_generation_options_are_one_line_and_exit_2(capsys, planned, args, says):
    args = [a.format(folder=planned) for a in args]
    code, _, err = run_cli(capsys, "generate", planned / "plan.json", *args)
    assert code == 2 and says in one_error_line(err)
