"""Decoders exported from Hugging Face transformers are accepted (issue 20, item 1): loaded with no shapes,
split over three real workers, they generate what transformers generated, token for token.

The fixtures (tests/fixtures/, written by benchmarks/export_hf_decoder.py: torch's TorchScript exporter,
seeded random weights) are a GPT-2 with ``attention_mask`` and ``position_ids`` inputs and a Llama with
grouped-query attention and an ``attention_mask``; beside each, the torch model's own greedy tokens and
logits. Only onnx and ONNX Runtime are needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import run_cli
from helpers.decoders import decoder_stages
from helpers.runtime_models import local_cluster

from splitinfer.generation.reference import whole_model_step
from splitinfer.generation.sampling import Sampling
from splitinfer.generation.sampling import generate as reference_generate
from splitinfer.graph import Model, load_model
from splitinfer.runtime import deploy_stages
from splitinfer.runtime.generate import generate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# each fixture's inputs but its pasts
DECODERS = {"hf_gpt2": ["input_ids", "attention_mask", "position_ids"],
            "hf_llama": ["input_ids", "attention_mask"]}
LAYERS = 2


def _made_from(model: Model, name: str) -> set[str]:
    """The tensors computed from model input ``name`` (itself among them)."""
    index = model.graph_index
    made, frontier = {name}, [name]
    while frontier:
        for node in index.consumers.get(frontier.pop(), []):
            for out in index.nodes[node].output:
                if out and out not in made:
                    made.add(out)
                    frontier.append(out)
    return made


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_a_hugging_face_decoder_over_three_workers_generates_what_transformers_did(name):
    path = FIXTURES / f"{name}.onnx"
    torch_run = np.load(FIXTURES / f"{name}_greedy.npz")
    model = load_model(path)  # no shapes: a decoder loads at its prefill and decode steps
    assert [s.name for s in model.inputs if not s.name.startswith("past_key_values.")] == DECODERS[name]
    assert len(model.state) == 2 * LAYERS
    stages = decoder_stages(model, by_layer=True)
    # each layer's cache on its own stage, the head on the third
    assert [sorted({past.split(".")[1] for past, _ in s.state}) for s in stages] == [["0"], ["1"], []]
    # the mask reaches the second stage: what the model made of it crosses the cut
    assert {s.name for s in stages[1].inputs} & _made_from(model, "attention_mask")

    sampling = Sampling(max_new_tokens=len(torch_run["tokens"]))
    whole = list(reference_generate(whole_model_step(path), torch_run["prompt"], sampling))
    with deploy_stages(stages, local_cluster(["a", "b", "c"]), timeout_s=30) as session:
        assert [s.name for s in session.inputs] == DECODERS[name]
        got = list(generate(session, torch_run["prompt"], sampling))
    tokens = torch_run["tokens"].tolist()
    assert [t.id for t in got] == tokens
    assert [t for t, _ in whole] == tokens
    logits = np.stack([t.logits for t in got])
    # float32 sums in another order (torch's kernels, ONNX Runtime's): 1e-4 on logits of about 6
    np.testing.assert_allclose(logits, torch_run["logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(logits, np.stack([row for _, row in whole]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_inspect_loads_a_hugging_face_decoder_with_no_shapes(capsys, name):
    code, out, err = run_cli(capsys, "inspect", FIXTURES / f"{name}.onnx", "--json")
    assert code == 0, err
    sizes = json.loads(out)["model"]["sizes"]
    assert sizes[0]["past_key_values.0.key"][2] == 0 and len(sizes) >= 2  # a prefill, then decode steps
    for size in sizes:  # the mask covers the past and the new tokens
        assert size["attention_mask"] == [1, size["past_key_values.0.key"][2] + size["input_ids"][1]]
