"""Export tiny Hugging Face decoders with their cache to ONNX, with transformers' own greedy tokens.

Needs torch and transformers (not dependencies of splitinfer): on these machines, in a separate venv,
`python3.11 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch==2.13.0 transformers onnxscript
onnx numpy`, then `/tmp/hfvenv/bin/python benchmarks/export_hf_decoder.py [OUT_DIR]` (default
tests/fixtures/) writes, per model, `<name>.onnx` (one file, no external data) and `<name>_greedy.npz`:
the prompt, the 24 tokens the torch model chooses greedily step by step with its own cache, and each
step's last-position logits (tests/runtime/test_hf_decoder.py holds splitinfer to them).

- `hf_gpt2`: `GPT2LMHeadModel`, inputs `input_ids`, `attention_mask` [batch, past + seq],
  `position_ids` [batch, seq] and per layer `past_key_values.{i}.key`/`.value`, as optimum exports it.
- `hf_llama`: `LlamaForCausalLM` with grouped-query attention (2 key/value heads for 4 query heads),
  inputs `input_ids`, `attention_mask` and the pasts (positions follow from the past's length).

Outputs: `logits` and `present.{i}.key`/`.value`; batch, sequence and past lengths are dynamic axes.
"""

# Random seeded weights: these fixtures test that splitinfer takes a real export's graph patterns
# (transformers' masks, rotary positions, grouped-query attention as the exporter writes them), not
# what a trained model says.
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import torch
import transformers
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

PROMPT = [5, 17, 42, 7, 99, 3, 12, 8]
NEW_TOKENS = 24
OPSET = 17  # LayerNormalization is one node from 17


class FlatCache(torch.nn.Module):
    """The model with flat tensors in and out: the pasts become a DynamicCache (what transformers 5
    takes), and the cache it returns becomes the presents, layer by layer (key, then value)."""

    def __init__(self, model: torch.nn.Module, layers: int, extra: tuple[str, ...]):
        super().__init__()
        self.model, self.layers, self.extra = model, layers, extra

    def forward(self, input_ids, *rest):
        named = dict(zip(self.extra, rest[:len(self.extra)], strict=True))
        flat = rest[len(self.extra):]
        cache = DynamicCache([(flat[2 * i], flat[2 * i + 1]) for i in range(self.layers)])
        out = self.model(input_ids=input_ids, cache=cache, use_cache=True, **named)
        presents = [t for layer in out.cache.layers for t in (layer.keys, layer.values)]
        return (out.logits, *presents)


def extra_feeds(extra: tuple[str, ...], past: int, seq: int) -> dict[str, torch.Tensor]:
    """What splitinfer feeds beside the ids: a mask of ones over past + new, positions from past."""
    feeds = {"attention_mask": torch.ones(1, past + seq, dtype=torch.int64),
             "position_ids": torch.arange(past, past + seq, dtype=torch.int64)[None, :]}
    return {name: feeds[name] for name in extra}


def export(name: str, model: torch.nn.Module, layers: int, kv_heads: int, head_dim: int,
           extra: tuple[str, ...], out_dir: Path) -> None:
    model = model.eval()
    wrapped = FlatCache(model, layers, extra).eval()
    pasts = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    presents = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    # Traced at batch 2, a past of 5 and 3 new tokens, so that no dynamic axis is mistaken for a constant.
    past_len, seq_len = 5, 3
    args = (torch.randint(0, 1000, (2, seq_len)),
            *[t.repeat(2, 1) for t in extra_feeds(extra, past_len, seq_len).values()],
            *[torch.randn(2, kv_heads, past_len, head_dim) for _ in pasts])
    axes = {"input_ids": {0: "batch", 1: "sequence_length"}, "logits": {0: "batch", 1: "sequence_length"},
            "attention_mask": {0: "batch", 1: "total_sequence_length"},
            "position_ids": {0: "batch", 1: "sequence_length"},
            **{p: {0: "batch", 2: "past_sequence_length"} for p in pasts},
            **{p: {0: "batch", 2: "total_sequence_length"} for p in presents}}
    inputs, outputs = ["input_ids", *extra, *pasts], ["logits", *presents]
    path = out_dir / f"{name}.onnx"
    # The TorchScript exporter, as optimum uses: the shapes it reads are the ones the model's code
    # reads (the mask's length from layer 0's cache), so each later layer's cache is read only by that
    # layer's nodes and the model splits between layers. torch.export (dynamo=True) gave a clean file
    # too, but read a symbolic length from whichever input carried it first (the Llama export:
    # Shape(past_key_values.1.key) at the top), tying every layer's cache into one partition.
    torch.onnx.export(wrapped, args, str(path), input_names=inputs, output_names=outputs,
                      opset_version=OPSET, dynamo=False, dynamic_axes={n: axes[n] for n in inputs + outputs})
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")

    # transformers' reference: the torch model itself, greedy, one step at a time with its own cache.
    ids = torch.tensor([PROMPT])
    cache, tokens, logits, past_n = DynamicCache(), [], [], 0
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            out = model(input_ids=ids, cache=cache, use_cache=True,
                        **extra_feeds(extra, past_n, ids.shape[1]))
            past_n += ids.shape[1]
            cache = out.cache
            row = out.logits[0, -1]
            tokens.append(int(row.argmax()))
            logits.append(row.numpy().astype(np.float32))
            ids = torch.tensor([[tokens[-1]]])
    np.savez(out_dir / f"{name}_greedy.npz", prompt=np.array(PROMPT, np.int64),
             tokens=np.array(tokens, np.int64), logits=np.stack(logits))
    print(f"wrote {out_dir / f'{name}_greedy.npz'}: {tokens}")


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, onnx {onnx.__version__}")
    # Weights drawn 10x wider than transformers' default (0.02): greedy tokens then vary (at 0.02 GPT-2
    # repeats one token) and each step's best logit leads the next by over 0.008, far above float
    # noise, so that a token compared exactly means something. Attention is transformers' default (sdpa),
    # what a model from from_pretrained runs and an export carries.
    torch.manual_seed(0)
    gpt2 = GPT2Config(vocab_size=1000, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                      bos_token_id=999, eos_token_id=999, initializer_range=0.2)
    export("hf_gpt2", GPT2LMHeadModel(gpt2), 2, 4, 16, ("attention_mask", "position_ids"), out_dir)
    torch.manual_seed(0)
    llama = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                        initializer_range=0.2)
    export("hf_llama", LlamaForCausalLM(llama), 2, 2, 16, ("attention_mask",), out_dir)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "tests/fixtures")
