"""Cutting a model into the blocks a profile (and every plan made from it) numbers.

A profile records how its blocks were formed: the model's sha256, its input shapes,
``max_cut_tensors`` and ``max_blocks``. :func:`cut_as_profiled` forms the same blocks
again, or says why it cannot; deploy, refinement and the report all go through it::

    blocks = cut_as_profiled("resnet18.onnx", load_profile("profile.json"))
    part = extract_segment(blocks.model, blocks.analysis, 0, 3)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import onnx

from splitinfer.errors import ModelError, ShapeError
from splitinfer.graph import Analysis, Model, load_model
from splitinfer.graph.analysis import DEFAULT_MAX_BLOCKS, DEFAULT_MAX_CUT_TENSORS
from splitinfer.graph.exit_cuts import analyze_at_exits
from splitinfer.graph.exits import Exit, read_exits
from splitinfer.graph.model import ModelSource
from splitinfer.graph.shapes import as_flags
from splitinfer.graph.sizes import describe_size
from splitinfer.profile.schema import Profile


@dataclass(frozen=True)
class Blocks:
    """A model cut into the blocks a profile and its plans number."""

    model: Model
    analysis: Analysis
    exits: tuple[Exit, ...] = ()  # early exits with their rules: a block ends at each


def _other_model(profile: Profile, name: str, sha256: str) -> ModelError:
    info = profile.model
    return ModelError(f"the profile was made for model {info.name} ({info.sha256[:12]}), not {name} "
                      f"({sha256[:12]})", "give the model file the profile was made of, or profile this one")


def _check_model(model: Model, profile: Profile) -> None:
    info = profile.model
    if model.sha256 != info.sha256:
        raise _other_model(profile, model.name, model.sha256)
    have = {s.name: tuple(s.shape) for s in model.inputs}
    for name, shape in info.input_shapes.items():
        if name in have and have[name] != tuple(shape):
            raise ShapeError(f"model input {name!r} has shape {have[name]}, the profile was made with "
                             f"{tuple(shape)}", "load the model with the profile's input shapes")
    missing = [size for size in info.sizes if {n: tuple(d) for n, d in size.items()} not in model.sizes]
    if missing:
        raise ShapeError(f"the profile serves the input size {describe_size(missing[0])}, the model as "
                         "loaded does not", "load the model with the profile's other sizes (sizes=)")


def _check_cuts(analysis: Analysis, profile: Profile) -> None:
    here = [b.cut_bytes for b in analysis.blocks]
    there = [b.cut_bytes for b in profile.blocks]
    if len(here) != len(there):
        raise ModelError(f"the model splits into {len(here)} blocks here, the profile has {len(there)}",
                         "re-profile the model with this version of splitinfer")
    if here != there:
        first = next(i for i, (a, b) in enumerate(zip(here, there, strict=True)) if a != b)
        raise ModelError(f"the model's block {first} ends at another cut here ({here[first]} bytes cross "
                         f"it) than in the profile ({there[first]} bytes)",
                         "re-profile the model with this version of splitinfer")


def check_as_profiled(blocks: Blocks, profile: Profile) -> None:
    """ModelError (ShapeError for input shapes) unless ``blocks`` are the model and blocks of ``profile``."""
    _check_model(blocks.model, profile)
    _check_cuts(blocks.analysis, profile)


def load_as_profiled(source: ModelSource, profile: Profile) -> Model:
    """Load ``source`` with the input shapes ``profile`` recorded. Another model may not take them at
    all: ModelError naming it then; ShapeError naming the profile's shapes (no command-line flag:
    the user gave none) when the profile's own model does not take them."""
    try:
        own = profile.model.input_shapes
        others = [size for size in profile.model.sizes if size != own]  # their dims stay symbolic
        return load_model(source, input_shapes=own or None, fixed_inputs=profile.model.fixed_inputs or None,
                          sizes=others or None)
    except ShapeError as e:
        sha256 = _sha256_of(source)
        if sha256 is not None and sha256 != profile.model.sha256:
            raise _other_model(profile, "the model given", sha256) from None
        problem = as_flags(e.problem, input_shape="the profile's input shape")
        raise ShapeError(problem, "give the model file the profile was made of, or profile this model "
                                  "again (splitinfer profile MODEL --input-shape ...)") from None


def _sha256_of(source: ModelSource) -> str | None:
    """The sha256 ``load_model`` gives ``source`` (of its serialized bytes); None if unreadable."""
    if isinstance(source, onnx.ModelProto):
        return hashlib.sha256(source.SerializeToString()).hexdigest()
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(bytes(source)).hexdigest()
    try:
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()
    except OSError:
        return None


def cut_as_profiled(model: Model | ModelSource, profile: Profile | None) -> Blocks:
    """Load ``model`` (with the profile's input shapes) and form its blocks as ``profile`` records.

    Without a profile: the default block settings, nothing to check. ModelError (ShapeError for
    input shapes) when the model, its input shapes or its blocks are not those of the profile.
    """
    if profile is None:
        loaded = model if isinstance(model, Model) else load_model(model)
        exits = read_exits(loaded)  # those its metadata declares
        analysis = analyze_at_exits(loaded, exits, DEFAULT_MAX_CUT_TENSORS, DEFAULT_MAX_BLOCKS)
        return Blocks(loaded, analysis, exits)
    info = profile.model
    loaded = model if isinstance(model, Model) else load_as_profiled(model, profile)
    _check_model(loaded, profile)  # before cutting: another model may not even cut the same way
    analysis = analyze_at_exits(loaded, info.exits, info.max_cut_tensors, info.max_blocks)
    _check_cuts(analysis, profile)
    return Blocks(loaded, analysis, profiled_exits(profile, loaded))


def profiled_exits(profile: Profile, model: Model) -> tuple[Exit, ...]:
    """The early exits the profile measured, with the rules and thresholds it measured them under."""
    if profile.exits:
        return tuple(Exit(e.output, e.rule, e.threshold, e.rule_path) for e in profile.exits)
    return read_exits(model, list(profile.model.exits)) if profile.model.exits else ()
