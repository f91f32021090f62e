"""The figures: drawn from the right numbers, labelled, written as PNG and SVG."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import matplotlib as mpl
import msgspec
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from matplotlib.patches import Rectangle

from splitinfer.plan import Hop, Stage
from splitinfer.report import figures, plan_figures
from splitinfer.report.inputs import TRANSFER_COLOR, device_colors


@pytest.fixture
def colors(profile, plans):
    return device_colors(profile, tuple(plans))


def _labelled(ax) -> None:
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def _bars(ax) -> list[Rectangle]:
    return [p for c in ax.containers if isinstance(c, BarContainer) for p in c.patches]


def test_timeline_steps_follow_the_request_and_add_up_to_the_latency(plans):
    for plan in plans:
        steps = list(plan_figures.timeline_steps(plan))
        assert len(steps) == len(plan.stages) + len(plan.hops)
        assert [s for s, _, _ in steps if isinstance(s, Stage)] == list(plan.stages)
        kinds = [s.kind for s, _, _ in steps if isinstance(s, Hop)]
        assert kinds == sorted(kinds, key=["upload", "cut", "return"].index)
        end = 0.0
        for _, start, dur in steps:
            assert start == pytest.approx(end)
            end = start + dur
        assert end == pytest.approx(plan.latency_s, rel=1e-9)


def test_latency_per_block_draws_each_device_and_picks_log_scale_for_a_wide_spread(profile, colors):
    fig = figures.latency_per_block(profile, colors)
    ax = fig.axes[0]
    _labelled(ax)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == set(profile.devices)
    for name, line in lines.items():
        medians_ms = [s.median_s * 1e3 for s in profile.devices[name].blocks]
        assert list(line.get_ydata()) == pytest.approx(medians_ms)
        assert to_hex(line.get_color()) == colors[name]
    assert ax.get_yscale() == "log"  # camera (slowdown 8) against cloud, tiny blocks against big ones


def test_latency_per_block_stays_linear_for_a_narrow_spread(profile, colors):
    stats = profile.devices["cloud"].blocks[0]
    flat = {"cloud": msgspec.structs.replace(profile.devices["cloud"], blocks=(stats,) * len(profile.blocks))}
    fig = figures.latency_per_block(msgspec.structs.replace(profile, devices=flat), colors)
    assert fig.axes[0].get_yscale() == "linear"


def test_block_statistics_has_three_panels_of_block_figures(profile):
    fig = figures.block_statistics(profile)
    assert len(fig.axes) == 3
    for ax, field in zip(fig.axes, ("flops", "num_params", "output_bytes"), strict=True):
        assert ax.get_ylabel() and ax.get_title(loc="left")
        assert [b.get_height() for b in _bars(ax)] == [getattr(b, field) for b in profile.blocks]
    assert fig.axes[-1].get_xlabel() == "block"


def test_plans_compared_stacks_compute_and_transfer_to_each_plan_latency(plans, colors):
    ranked = [p for p in plans if not p.objective.startswith("pareto")]
    fig = plan_figures.plans_compared(ranked, colors)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_title()
    bars = _bars(ax)
    assert len(bars) == sum(len(p.stages) + len(p.hops) for p in ranked)
    for y, plan in enumerate(ranked):
        row = [b for b in bars if b.get_y() + b.get_height() / 2 == pytest.approx(y)]
        assert sum(b.get_width() for b in row) == pytest.approx(plan.latency_s * 1e3)
        stage_colors = [to_hex(b.get_facecolor()) for b in row if to_hex(b.get_facecolor()) != TRANSFER_COLOR]
        assert stage_colors == [colors[s.device] for s in plan.stages]
    assert [t.get_text() for t in ax.get_yticklabels()] == [plan_figures.plan_label(p) for p in ranked]


def test_timeline_has_a_row_per_device_and_numbers_every_transfer(plans, colors):
    plan = next(p for p in plans if len(p.hops) >= 2)
    fig = plan_figures.timeline(plan, colors)
    ax = fig.axes[0]
    _labelled(ax)
    devices = {s.device for s in plan.stages} | {x for h in plan.hops for x in (h.src, h.dst)}
    assert {t.get_text() for t in ax.get_yticklabels()} == devices
    numbers = [t.get_text() for t in ax.texts if t.get_text().isdigit()]
    assert numbers == [str(i) for i in range(1, len(plan.hops) + 1)]
    key = "\n".join(t.get_text() for t in fig.texts)
    for hop in plan.hops:
        assert f"{hop.kind} {hop.src}\u2192{hop.dst}" in key


def test_block_graph_colours_every_block_by_its_device(profile, plans, colors):
    plan = plans[0]
    fig = figures.block_graph(profile, plan, colors)
    ax = fig.axes[0]
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == len(profile.blocks)
    assert [to_hex(b.get_facecolor()) for b in boxes] == [colors[d] for d in plan.assignment]
    assert ax.get_legend() is not None


def test_block_graph_without_a_plan_is_grey(profile, colors):
    fig = figures.block_graph(profile, None, colors)
    boxes = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert {to_hex(b.get_facecolor()) for b in boxes} == {"#dddddd"}


def test_pareto_fronts_plot_each_front_present(plans):
    front = [p for p in plans if p.objective.startswith("pareto")]
    fig = plan_figures.pareto_fronts(front, plans[0])
    fronts = sorted({p.objective for p in front})
    assert len(fig.axes) == len(fronts)
    for ax in fig.axes:
        _labelled(ax)
    only_upload = [p for p in front if p.objective == "pareto-upload"]
    fig = plan_figures.pareto_fronts(only_upload, None)
    assert len(fig.axes) == 1
    xs = sorted(x for coll in fig.axes[0].collections for x, _ in coll.get_offsets())
    assert xs == pytest.approx(sorted(p.latency_s * 1e3 for p in only_upload))


def test_predicted_vs_measured_pairs_each_stage_and_hop(bench):
    fig = plan_figures.predicted_vs_measured(bench)
    ax = fig.axes[0]
    _labelled(ax)
    predicted, measured = [c for c in ax.containers if isinstance(c, BarContainer)]
    parts = [*bench.stages, *bench.hops]
    assert [b.get_height() for b in predicted] == pytest.approx([p.predicted_s * 1e3 for p in parts])
    assert [b.get_height() for b in measured] == pytest.approx([p.measured_median_s * 1e3 for p in parts])


def test_latency_distribution_counts_every_request(bench):
    fig = plan_figures.latency_distribution(bench)
    ax = fig.axes[0]
    _labelled(ax)
    assert sum(b.get_height() for b in _bars(ax)) == len(bench.latencies_s)
    lines = [line.get_xdata()[0] for line in ax.get_lines()]
    assert any(x == pytest.approx(bench.predicted_latency_s * 1e3) for x in lines)


def test_save_figure_writes_a_png_of_the_drawn_size_and_an_svg(profile, tmp_path):
    fig = figures.block_statistics(profile)
    png, svg = figures.save_figure(fig, tmp_path, "stats")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 500 and height > 300
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert "FLOPs" in svg.read_text()  # text stays text (svg.fonttype none): searchable, small


def test_drawing_leaves_matplotlib_global_state_alone(profile, colors, tmp_path):
    before = dict(mpl.rcParams)
    figures.save_figure(figures.latency_per_block(profile, colors), tmp_path, "lat")
    assert dict(mpl.rcParams) == before
    assert "<text" in (tmp_path / "lat.svg").read_text()  # the report style applied while saving
