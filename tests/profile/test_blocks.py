"""cut_as_profiled: the blocks a profile numbers, formed again, or one clear error saying why not."""

from __future__ import annotations

import msgspec
import pytest

from splitinfer import zoo
from splitinfer.errors import ModelError, ShapeError
from splitinfer.graph import analyze, load_model
from splitinfer.graph.analysis import DEFAULT_MAX_BLOCKS
from splitinfer.profile.blocks import Blocks, check_as_profiled, cut_as_profiled
from splitinfer.profile.profiler import block_infos
from splitinfer.profile.schema import ModelInfo, Profile


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return zoo.build_small("resnet18").SerializeToString()


def _profile_of(data: bytes, *, max_blocks: int, max_cut_tensors: int = 3) -> Profile:
    """A profile of ``data`` with no devices: only how its blocks were formed."""
    model = load_model(data)
    analysis = analyze(model, max_cut_tensors, max_blocks)
    info = ModelInfo(sha256=model.sha256, name="resnet18", max_cut_tensors=max_cut_tensors,
                     max_blocks=max_blocks, input_shapes={s.name: tuple(s.shape) for s in model.inputs})
    return Profile(model=info, blocks=block_infos(analysis), input_bytes=analysis.input_bytes,
                   output_bytes=analysis.output_bytes)


def test_the_blocks_are_formed_with_the_profiles_settings(model_bytes):
    profile = _profile_of(model_bytes, max_blocks=5)
    blocks = cut_as_profiled(model_bytes, profile)
    assert blocks.analysis.num_blocks == 5 and blocks.analysis.max_cut_tensors == 3
    assert [b.cut_bytes for b in blocks.analysis.blocks] == [b.cut_bytes for b in profile.blocks]
    assert cut_as_profiled(blocks.model, profile).analysis == blocks.analysis  # a loaded model too


def test_without_a_profile_the_default_settings_apply(model_bytes):
    blocks = cut_as_profiled(model_bytes, None)
    assert 2 < blocks.analysis.num_blocks <= DEFAULT_MAX_BLOCKS


def test_another_model_is_named_before_it_is_cut(model_bytes, tmp_path):
    profile = _profile_of(model_bytes, max_blocks=5)
    other = zoo.build_small("mobilenetv2")
    # it takes other input shapes than the profile's: still the model is named, not its shapes
    (tmp_path / "other.onnx").write_bytes(other.SerializeToString())
    for source in (other, other.SerializeToString(), tmp_path / "other.onnx", load_model(other)):
        with pytest.raises(ModelError, match=r"profile was made for model resnet18 \(\w{12}\), not "):
            cut_as_profiled(source, profile)


def test_other_blocks_than_the_profiles_are_refused(model_bytes):
    profile = _profile_of(model_bytes, max_blocks=5)
    fewer = msgspec.structs.replace(profile, blocks=profile.blocks[:4])
    with pytest.raises(ModelError, match="splits into 5 blocks here, the profile has 4") as caught:
        cut_as_profiled(model_bytes, fewer)
    assert "re-profile" in caught.value.fix
    moved = list(profile.blocks)
    moved[2] = msgspec.structs.replace(moved[2], cut_bytes=moved[2].cut_bytes + 4)
    with pytest.raises(ModelError, match="block 2 ends at another cut"):
        cut_as_profiled(model_bytes, msgspec.structs.replace(profile, blocks=tuple(moved)))


def test_a_model_loaded_with_other_input_shapes_is_refused(model_bytes):
    profile = _profile_of(model_bytes, max_blocks=5)
    model = load_model(model_bytes)
    (name,) = (s.name for s in model.inputs)
    wider = msgspec.structs.replace(profile.model, input_shapes={name: (2, 3, 32, 32)})
    with pytest.raises(ShapeError, match=f"model input '{name}' has shape"):
        cut_as_profiled(model, msgspec.structs.replace(profile, model=wider))


def test_blocks_already_cut_are_checked_the_same_way(model_bytes):
    profile = _profile_of(model_bytes, max_blocks=5)
    check_as_profiled(cut_as_profiled(model_bytes, profile), profile)
    default = cut_as_profiled(model_bytes, None)
    with pytest.raises(ModelError, match="blocks here, the profile has 5"):
        check_as_profiled(Blocks(default.model, default.analysis), profile)


def test_input_shapes_the_model_does_not_take_name_the_profile_not_a_flag(model_bytes):
    profile = _profile_of(model_bytes, max_blocks=5)
    (name,) = profile.model.input_shapes
    edited = msgspec.structs.replace(profile.model, input_shapes={name: (1, 3, 64, 64)})
    with pytest.raises(ShapeError) as caught:
        cut_as_profiled(model_bytes, msgspec.structs.replace(profile, model=edited))
    assert f"the profile's input shape {name}=1,3,64,64 contradicts the model" in caught.value.problem
    assert "--input-shape" not in caught.value.problem and "profile" in caught.value.fix
