"""The graph layer: load ONNX models, find cuts and blocks, split, verify.

Knows nothing of devices. Modules: ``model`` (load and check), ``shapes`` (resolve
them), ``stats`` (FLOPs, params, bytes per node), ``topology`` and ``liveness`` (orders
and live tensors), ``analysis`` (cuts and blocks, the block-forming defaults),
``partition`` and ``manifest`` (extract and write partitions), ``verify`` (partitions
against the whole model), ``feeds`` (inputs: generated or read), ``inference`` (the
one ONNX Runtime session factory, loaded lazily), ``blocks`` (which candidate cuts
become block boundaries), ``specialize`` (a model fixed to input values: the control
flow they decide becomes plain nodes), ``dynamic`` (tensors whose size depends on the
input values, which partitions keep open), ``sizes`` (the input sizes a model serves: the
dims that differ stay open too), ``exits`` and ``exit_cuts`` (early exits: their confidence
rules, and the cuts at which each ends a partition); ``_specs`` holds the load's helpers.

Typical use::

    from splitinfer.graph import load_model, analyze, split, verify
    model = load_model("yolo.onnx", input_shapes={"images": (1, 3, 640, 640)})
    analysis = analyze(model)                   # candidate cuts, <= 64 blocks
    parts = split(model, analysis.cuts)         # one partition per block
    assert verify(model, parts).ok
"""

from splitinfer.graph.analysis import Analysis, Block, Cut, analyze
from splitinfer.graph.liveness import count_live_tensors
from splitinfer.graph.manifest import Manifest, ManifestEntry, load_manifest, write_partitions
from splitinfer.graph.model import Model, load_model
from splitinfer.graph.partition import Partition, extract_segment, split
from splitinfer.graph.stats import NodeStats, count_node
from splitinfer.graph.verify import OutputDiff, VerifyReport, run_chain, verify

__all__ = [
    "Analysis",
    "Block",
    "Cut",
    "Manifest",
    "ManifestEntry",
    "Model",
    "NodeStats",
    "OutputDiff",
    "Partition",
    "VerifyReport",
    "analyze",
    "count_live_tensors",
    "count_node",
    "extract_segment",
    "load_manifest",
    "load_model",
    "run_chain",
    "split",
    "verify",
    "write_partitions",
]
