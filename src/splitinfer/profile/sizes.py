"""A profile made at several input sizes (``splitinfer profile --input-shape`` given per size): one
profile per size, the first holding the others (``Profile.other_sizes``). Plans are made for one size;
the deployment from any of them serves every size, since the partitions keep the dims that differ open
(:mod:`splitinfer.graph.sizes`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import msgspec

from splitinfer.errors import ProfileError, ShapeError
from splitinfer.graph import load_model
from splitinfer.graph.sizes import describe_size
from splitinfer.profile.profiler import PreparedModel, prepare_model
from splitinfer.profile.schema import Profile


def profiled_sizes(profile: Profile) -> list[dict[str, tuple[int, ...]]]:
    """The input sizes ``profile`` has costs for, its own first."""
    return [dict(profile.model.input_shapes), *(dict(o.model.input_shapes) for o in profile.other_sizes)]


def profile_at(profile: Profile, input_shapes: Mapping[str, Sequence[int]] | None) -> Profile:
    """The profile of ``profile``'s model at ``input_shapes`` (None or empty: the profile's own size).

    Names given are compared, the others may be left out. ShapeError listing the profiled sizes when
    none matches (``input_shapes=`` in the message: the command line spells it as its option).
    """
    if not input_shapes:
        return profile
    wanted = {name: tuple(int(d) for d in dims) for name, dims in input_shapes.items()}
    for candidate in (profile, *profile.other_sizes):
        shapes = candidate.model.input_shapes
        unknown = [n for n in wanted if n not in shapes]
        if unknown and shapes:
            raise ShapeError(f"input_shapes= names {unknown[0]!r}, which is not an input of the model",
                             f"the inputs are: {', '.join(shapes)}")
        if all(tuple(shapes.get(n, ())) == dims for n, dims in wanted.items()):
            return candidate
    sizes = "; ".join(describe_size(s) for s in profiled_sizes(profile))
    raise ShapeError(f"the profile has no costs at {describe_size(wanted)}",
                     f"plan for a profiled size ({sizes}), or profile that size too")


def with_other_sizes(main: Profile, others: Sequence[Profile]) -> Profile:
    """``main`` holding ``others`` (profiles of the same blocks at its model's other sizes)."""
    return msgspec.structs.replace(main, other_sizes=tuple(others))


def prepare_other_sizes(main: PreparedModel) -> list[PreparedModel]:
    """``main``'s model prepared at each of its other sizes, cut where ``main`` is cut (the choice of
    cuts weighs bytes, which differ by size: the blocks must not). Their model info names ``main``'s
    model file and fixed inputs; only the input shapes differ."""
    model = main.model
    positions = [c.position for c in main.analysis.cuts]
    prepared = []
    for size in model.sizes[1:]:
        # The loaded model keeps the dims that differ symbolic and is already specialised: load it
        # again at this size (its sha256 is not the file's: the file's is kept below).
        loaded = load_model(model.proto, input_shapes=size, sizes=[s for s in model.sizes if s != size])
        other = prepare_model(loaded, max_blocks=main.info.max_blocks,
                              max_cut_tensors=main.info.max_cut_tensors, cuts_at=positions)
        if [b.nodes for b in other.blocks] != [b.nodes for b in main.blocks]:
            raise ProfileError(f"at {describe_size(size)} the model's blocks hold other nodes than at "
                               f"{describe_size(model.sizes[0])}",
                               "this is a splitinfer bug; report it (profile one size meanwhile)")
        other.info = msgspec.structs.replace(main.info, input_shapes=dict(size))
        prepared.append(other)
    return prepared


def measure_sizes(main: PreparedModel, measure: Callable[[PreparedModel], Profile]) -> Profile:
    """``measure(main)``, holding ``measure`` of ``main`` at each of its model's other sizes."""
    profile = measure(main)
    if len(main.model.sizes) < 2:
        return profile
    return with_other_sizes(profile, [measure(p) for p in prepare_other_sizes(main)])
