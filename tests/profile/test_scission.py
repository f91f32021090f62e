"""Scission's benchmark files: the restricted loader, the network csv, and the published top-5."""

from __future__ import annotations

import os
import pickle
import re
import sys
from pathlib import Path

import pytest

from splitinfer.errors import PlanError, ProfileError, SchemaError
from splitinfer.plan import solve
from splitinfer.plan.scission import parse_criteria, rank_scission
from splitinfer.profile.scission import (
    load_benchmark_file,
    load_benchmarks,
    load_network_stats,
    scission_problem,
)

SHARED = Path(__file__).parents[2] / ".." / "shared"
DATA = SHARED / "data" / "scission"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"Scission fixture data not found at {DATA}")


def published_top5() -> list[str]:
    """The result lines printed in the README of the fixture (Scission's published output)."""
    text = (DATA / "README.md").read_text()
    block = text.split("Published result", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if re.match(r"\[\d+\] ", line)]


@needs_data
def test_published_top5_is_reproduced_exactly():
    systems = load_benchmarks(DATA, "vgg19")
    network = load_network_stats(DATA / "network_stats.csv")
    criteria = {"device": parse_criteria("!-1"), "edge": parse_criteria("10"), "cloud": parse_criteria("16")}
    lines = [r.line(i) for i, r in enumerate(rank_scission(systems, network, criteria), start=1)]
    expected = published_top5()
    assert len(expected) == 5
    assert lines == expected


@needs_data
def test_loader_reads_every_system_and_model():
    systems = load_benchmarks(DATA, "VGG19")  # Scission lower-cases model names
    assert [(s.tier, s.name) for s in systems] == [
        ("cloud", "6700k(GPU)"),
        ("cloud", "6700k(NoGPU)"),
        ("device", "raspi4"),
        ("edge", "2500"),
        ("edge", "vm2Core"),
    ]
    blocks = systems[2].blocks
    assert len(blocks) == 25 and (blocks[0].input_layer, blocks[0].output_layer) == (0, 1)
    # np.save adds a 128-byte header to the raw float32 output: 224*224*64*4 + 128.
    assert blocks[0].output_bytes == 224 * 224 * 64 * 4 + 128
    assert all(b.seconds >= 0 for s in systems for b in s.blocks)


@needs_data
def test_network_stats_are_converted_like_scission():
    network = load_network_stats(DATA / "network_stats.csv")
    link = network[("raspi4", "vm2Core")]
    assert link.ping_s == pytest.approx(0.0667) and link.bandwidth_bps == round(1.6 * 125000)
    assert len(network) == 8


@needs_data
def test_general_model_on_scission_data_matches_its_unconstrained_best():
    """Without criteria and without a result return, the general model finds Scission's best too."""
    systems = load_benchmarks(DATA, "vgg19")
    network = load_network_stats(DATA / "network_stats.csv")
    scission_best = rank_scission(systems, network, {}, result_count=1)[0]
    plan = solve(scission_problem(systems, network, sink=None), "latency")[0]
    assert plan.latency_s == pytest.approx(scission_best.total_s, rel=1e-12)
    with_return = solve(scission_problem(systems, network), "latency")[0]
    assert with_return.latency_s >= plan.latency_s
    assert any(h.kind == "return" for h in with_return.hops) or with_return.stages[-1].device == "raspi4"


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "device-evil.dat"
    bad.write_bytes(pickle.dumps({"vgg19": [_Exploit(marker)]}, protocol=3))
    with pytest.raises(SchemaError) as err:
        load_benchmark_file(bad)
    assert "refusing to load global" in err.value.problem and "system" in err.value.problem
    assert not marker.exists()


def test_other_classes_and_shapes_are_refused(tmp_path):
    path = tmp_path / "edge-x.dat"
    path.write_bytes(pickle.dumps({"vgg19": [Path("/etc")]}, protocol=3))
    with pytest.raises(SchemaError):
        load_benchmark_file(path)
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=3))
    with pytest.raises(SchemaError, match="dict"):
        load_benchmark_file(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(SchemaError):
        load_benchmark_file(path)


def test_layer_benchmarks_from_a_main_module_load(tmp_path, monkeypatch):
    """A file written the way scission_benchmark.py writes it (class in __main__) loads."""

    class LayerBenchmark:  # the shape of Scission's class
        def __init__(self) -> None:
            self.model, self.device = "m", ""
            self.input_layer, self.output_layer = 0, 2
            self.second_prediction, self.output_size = 0.25, 1128

    LayerBenchmark.__module__, LayerBenchmark.__qualname__ = "__main__", "LayerBenchmark"
    monkeypatch.setattr(sys.modules["__main__"], "LayerBenchmark", LayerBenchmark, raising=False)
    path = tmp_path / "device-pi.dat"
    path.write_bytes(pickle.dumps({"m": [LayerBenchmark()]}, protocol=3))
    monkeypatch.delattr(sys.modules["__main__"], "LayerBenchmark")  # the loader must not need it
    blocks = load_benchmark_file(path)["m"]
    assert len(blocks) == 1 and blocks[0].seconds == 0.25 and blocks[0].output_bytes == 1128
    assert (blocks[0].input_layer, blocks[0].output_layer) == (0, 2)


def test_network_csv_errors(tmp_path):
    path = tmp_path / "net.csv"
    path.write_text("source,destination,ping(ms),bandwidth(mbps)\na, b, 10, fast\n")
    with pytest.raises(SchemaError, match="line 2"):
        load_network_stats(path)
    path.write_text("source,destination,ping(ms),bandwidth(mbps)\na, b, 10, 0\n")
    with pytest.raises(ProfileError, match="line 2"):
        load_network_stats(path)
    with pytest.raises(ProfileError, match="cannot read"):
        load_network_stats(tmp_path / "missing.csv")


@needs_data
def test_unknown_model_and_missing_rows_are_clear():
    with pytest.raises(ProfileError, match="no model 'vgg20'") as err:
        load_benchmarks(DATA, "vgg20")
    assert "vgg19" in err.value.fix
    systems = load_benchmarks(DATA, "vgg19")
    with pytest.raises(PlanError, match="no row raspi4,2500"):
        rank_scission(systems, {}, {})
