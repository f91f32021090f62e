"""The partition directory: ``part_0.onnx ...`` and ``manifest.json`` (schema 1).

``manifest.json``::

    {"schema": 1, "model_sha256": "...", "model_name": "resnet50",
     "partitions": [{"index": 0, "file": "part_0.onnx",
                     "inputs": [{"name", "dtype", "shape"}], "outputs": [...],
                     "cut_bytes": 802816, "first_block": 0, "last_block": 3,
                     "num_nodes": 41}, ...]}

Partitions are listed in chain order; ``cut_bytes`` is the bytes of a
partition's outputs; ``first_block``/``last_block`` are null when the cuts
were not block bounds. A partition of a model whose weights are external data
(:mod:`splitinfer.graph.external`) keeps them so: ``part_<k>.onnx`` with its own ``part_<k>.data``
(``data_file``), both in the folder; ONNX Runtime opens it from its path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import msgspec

from splitinfer.errors import SchemaError, SplitinferError
from splitinfer.graph.analysis import Analysis
from splitinfer.graph.exit_cuts import exit_partitions
from splitinfer.graph.exits import Exit
from splitinfer.graph.model import Model
from splitinfer.graph.partition import Partition
from splitinfer.types import TensorSpec

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
_PART_FILE = re.compile(r"part_(\d+)\.(onnx|data)")


class ManifestEntry(msgspec.Struct, frozen=True):
    """One partition file of a split model."""

    index: int
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    cut_bytes: int
    num_nodes: int
    first_block: int | None = None
    last_block: int | None = None
    exit: str | None = None  # the early exit this partition ends at (makes), if any
    data_file: str | None = None  # its external data file (weights of a model with external data), if any


class Manifest(msgspec.Struct, frozen=True):
    """The contents of ``manifest.json``; ``directory`` is where it was read from (not stored)."""

    schema: int
    model_sha256: str
    model_name: str
    partitions: tuple[ManifestEntry, ...]
    num_blocks: int | None = None
    exits: tuple[Exit, ...] = ()  # the early exits, in depth order, with their rules
    directory: str | None = None

    def path_of(self, index: int) -> Path:
        """The .onnx file of partition ``index``."""
        return Path(self.directory or ".") / self.partitions[index].file


def write_partitions(
    partitions: Sequence[Partition], directory: str | Path, model: Model, analysis: Analysis | None = None,
    exits: Sequence[Exit] = (),
) -> Path:
    """Write ``part_<k>.onnx`` files and ``manifest.json`` into ``directory``; return the manifest path.
    ``exits``: the model's early exits, each of which a partition must end at (CutError otherwise).

    Stale ``part_<k>.onnx`` files from an earlier split with more partitions are removed.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SplitinferError(f"cannot make the folder {directory}: {e.strerror or e}",
                              "give a path where a folder can be made (not an existing file)") from None
    ends = {index: name for name, index in exit_partitions(model, exits, partitions).items()} if exits else {}
    entries = []
    for part in partitions:
        name = f"part_{part.index}.onnx"
        try:
            part.save(directory / name)
        except OSError as e:
            raise SplitinferError(f"cannot write {directory / name}: {e.strerror or e}",
                                  "give a folder you may write to") from None
        entries.append(ManifestEntry(
            index=part.index, file=name, inputs=part.inputs, outputs=part.outputs,
            cut_bytes=part.cut_bytes, num_nodes=part.num_nodes,
            first_block=part.first_block, last_block=part.last_block, exit=ends.get(part.index),
            data_file=f"part_{part.index}.data" if part.is_external else None,
        ))
    written = {e.file for e in entries} | {e.data_file for e in entries if e.data_file}
    for stale in directory.glob("part_*.*"):
        if _PART_FILE.fullmatch(stale.name) and stale.name not in written:
            stale.unlink()
    manifest = Manifest(
        schema=SCHEMA_VERSION, model_sha256=model.sha256, model_name=model.name,
        partitions=tuple(entries), num_blocks=len(analysis.blocks) if analysis is not None else None,
        exits=tuple(exits),
    )
    data = msgspec.to_builtins(manifest)
    del data["directory"]
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest (a ``manifest.json`` or the directory holding it); :class:`SchemaError` if bad."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SchemaError(
            f"manifest '{path}' does not exist", "run `splitinfer split MODEL -o DIR` first"
        ) from None
    except (OSError, ValueError) as e:
        raise SchemaError(f"manifest '{path}' is not readable JSON: {e}", "split the model again") from e
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA_VERSION:
        found = raw.get("schema") if isinstance(raw, dict) else None
        raise SchemaError(
            f"manifest '{path}' has schema {found!r}, this splitinfer reads schema {SCHEMA_VERSION}",
            "split the model again with this version of splitinfer",
        )
    raw["directory"] = str(path.parent)
    try:
        manifest = msgspec.convert(raw, Manifest)
    except msgspec.ValidationError as e:
        raise SchemaError(f"manifest '{path}' is malformed: {e}", "split the model again") from e
    if [p.index for p in manifest.partitions] != list(range(len(manifest.partitions))):
        raise SchemaError(f"manifest '{path}' lists partitions out of order", "split the model again")
    return manifest
