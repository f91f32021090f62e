"""write_report and `splitinfer report`: the files, a self-contained page, clear errors on bad input."""

from __future__ import annotations

import base64
import csv
import re

import msgspec
import pytest

from splitinfer import zoo
from splitinfer.cli import main
from splitinfer.errors import ModelError, PlanError, SchemaError
from splitinfer.plan import plan_to_json, with_provenance
from splitinfer.profile.files import save_profile
from splitinfer.report import write_report

FIGURES = ("block_latency", "block_statistics", "plans", "timeline", "block_graph", "pareto", "energy_split",
           "bench_parts", "bench_latency")


def test_full_report_writes_every_figure_and_table(report_dir, profile, plans, bench):
    for stem in FIGURES:
        assert (report_dir / f"{stem}.png").stat().st_size > 1000
        assert (report_dir / f"{stem}.svg").stat().st_size > 1000
    counts = {"blocks.csv": len(profile.blocks), "plans.csv": len(plans),
              "bench.csv": len(bench.stages) + len(bench.hops) + 1}
    for name, num_rows in counts.items():
        with (report_dir / name).open() as f:
            assert len(list(csv.DictReader(f))) == num_rows
    assert (report_dir / "index.html").is_file()


def test_page_is_self_contained_and_embeds_every_figure(report_dir):
    page = (report_dir / "index.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from the net
    assert "<link" not in page and "@import" not in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == len(FIGURES)
    for src, stem in zip(sources, FIGURES, strict=True):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (report_dir / f"{stem}.png").read_bytes()


def test_page_shows_the_plans_and_the_bench_summary(report_dir, plans, bench):
    page = (report_dir / "index.html").read_text()
    assert page.count("<tr>") >= len(plans) + len(bench.stages) + len(bench.hops)
    assert f"{bench.num_requests} requests" in page
    assert "edge[" in page or "cloud[" in page or "camera[" in page


def test_report_of_a_profile_alone_has_the_profile_figures(profile, tmp_path):
    written = []
    index = write_report(profile, tmp_path / "out", on_file=written.append)
    names = sorted(p.name for p in written)
    assert names == sorted(["block_latency.png", "block_latency.svg", "block_statistics.png",
                            "block_statistics.svg", "blocks.csv", "index.html"])
    assert index == tmp_path / "out" / "index.html"
    assert index.read_text().count("<img ") == 2


def test_model_names_each_block_main_op(profile, tmp_path):
    index = write_report(profile, tmp_path, model=zoo.build_small("mobilenetv2"))
    with (index.parent / "blocks.csv").open() as f:
        ops = [row["main_op"] for row in csv.DictReader(f)]
    assert len(ops) == len(profile.blocks) and "Conv" in ops


def test_another_model_than_the_profiled_one_is_refused(profile, tmp_path):
    with pytest.raises(ModelError, match=r"profile was made for model .*, not resnet18"):
        write_report(profile, tmp_path, model=zoo.build_small("resnet18"))


def test_bad_plan_and_bench_files_are_refused(profile, bench, tmp_path):
    with pytest.raises(PlanError, match="cannot read plan file"):
        write_report(profile, tmp_path, plans=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"schema": 9, "plans": []}')
    with pytest.raises(SchemaError, match="schema 9"):
        write_report(profile, tmp_path, plans=tmp_path / "bad.json")
    doc = msgspec.to_builtins(bench)
    doc["schema"] = 7
    (tmp_path / "bench.json").write_bytes(msgspec.json.encode(doc))
    with pytest.raises(SchemaError, match="schema 7"):
        write_report(profile, tmp_path, bench=tmp_path / "bench.json")


def test_plans_and_benches_of_another_model_are_refused(profile, plans, bench, tmp_path):
    fewer = msgspec.structs.replace(profile, blocks=profile.blocks[:-1], devices={})
    with pytest.raises(PlanError, match=f"the profile has {len(profile.blocks) - 1} blocks"):
        write_report(fewer, tmp_path, plans=plans)
    other = with_provenance(plans[0], model_sha256="f" * 64)
    with pytest.raises(PlanError, match="is of model ffffffffffff"):
        write_report(profile, tmp_path, plans=[other])
    with pytest.raises(PlanError, match="the bench ran model ffffffffffff"):
        write_report(profile, tmp_path, bench=msgspec.structs.replace(bench, model_sha256="f" * 64))
    assert not (tmp_path / "index.html").exists()


def test_cli_writes_the_report_and_lists_its_files(profile, plans, tmp_path, capsys):
    save_profile(profile, tmp_path / "profile.json")
    (tmp_path / "plan.json").write_text(plan_to_json(plans[:3]))
    out = tmp_path / "rep"
    args = [str(tmp_path / "profile.json"), "--plan", str(tmp_path / "plan.json"), "-o", str(out)]
    rc = main(["report", *args])
    printed = capsys.readouterr().out
    assert rc == 0
    assert str(out / "index.html") in printed.replace("\n", "")
    for name in ("timeline.png", "plans.csv", "blocks.csv"):
        assert name in printed and (out / name).is_file()


def test_cli_names_a_missing_profile_in_one_line(tmp_path, capsys):
    rc = main(["report", str(tmp_path / "nope.json"), "-o", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "cannot read profile" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "rep").exists()
