"""Export a real transformer text encoder to ONNX, for `splitinfer inspect/split` checks (optional).

Needs torch and transformers (not dependencies of splitinfer): on these machines
`pip install torch==2.13.0 transformers onnxscript` in a separate venv, then
`python benchmarks/export_text_encoder.py` writes two exports (legacy exporter at
opset 14, dynamo exporter at opset 18 with external data) into the current folder.
Then e.g. `splitinfer split minilm_opset18_dynamo.onnx --all --input-shape
input_ids=2,64 --input-shape attention_mask=2,64 -o parts/`.
"""

# Export a Hugging Face transformers BERT (MiniLM-L6 configuration, random weights) to ONNX
# with torch's exporter, dynamic batch and sequence axes: the graph patterns of a real export.
import torch
from transformers import BertConfig, BertModel

torch.manual_seed(0)
cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512)
bert = BertModel(cfg).eval()


class Wrap(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        out = self.m(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


model = Wrap(bert).eval()
ids = torch.randint(0, 30522, (1, 128))
mask = torch.ones(1, 128, dtype=torch.int64)
for opset, dynamo in ((14, False), (18, True)):
    name = f"minilm_opset{opset}_{'dynamo' if dynamo else 'legacy'}.onnx"
    torch.onnx.export(model, (ids, mask), name, input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state", "pooler_output"], opset_version=opset,
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                    "attention_mask": {0: "batch", 1: "seq"},
                                    "last_hidden_state": {0: "batch", 1: "seq"}}, dynamo=dynamo)
    print("wrote", name)
