"""Scission's graph of a scenario: each block's time on the tier that runs it, and each hop between.

Drawn as ``scission_predict.py``'s ``create_graph`` draws it: one bar per block (labelled with its
Keras layers, ``a-b`` or ``a``), red on the device, green on the edge, blue on the cloud, a yellow
``COMM.`` bar for each transfer it charges (``ping + bytes / bandwidth``; an edge whose output
Scission counts as 0 bytes has none after it), milliseconds on a log axis, font size 35, 20 x 10
inches; a legend of the tiers used. Made without pyplot, like every figure of the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import ScalarFormatter

from splitinfer.plan.scission import ScissionLink, ScissionScenario, ScissionSystem

STYLE = {"font.size": 35}
Bar = tuple[str, float, str]  # label, milliseconds, colour


def _blocks(system: ScissionSystem, span: tuple[int, int], color: str) -> list[Bar]:
    blocks = system.blocks[span[0] : span[1] + 1]
    return [
        (f"{b.input_layer}-{b.output_layer}" if b.input_layer != b.output_layer else f"{b.input_layer}",
         b.seconds * 1000, color)
        for b in blocks
    ]


def graph_bars(
    scenario: ScissionScenario,
    systems: Sequence[ScissionSystem],
    network: Mapping[tuple[str, str], ScissionLink],
) -> list[Bar]:
    """The bars of Scission's graph of ``scenario``, left to right."""
    by_name = {s.name: s for s in systems}

    def comm(src: str, dst: str, size: float) -> Bar:
        link = network[(src, dst)]
        return ("COMM.", (link.ping_s + size / link.bandwidth_bps) * 1000, "yellow")

    s = scenario
    bars: list[Bar] = []
    if s.device_blocks is not None:
        bars += _blocks(by_name[s.device], s.device_blocks, "r")
    if s.edge is not None and s.edge_blocks is not None:
        bars.append(comm(s.device, s.edge, s.device_sends))
        bars += _blocks(by_name[s.edge], s.edge_blocks, "g")
        if s.edge_sends != 0 and s.cloud is not None:
            bars.append(comm(s.edge, s.cloud, s.edge_sends))
    if s.cloud is not None and s.cloud_blocks is not None:
        if s.edge is None:
            bars.append(comm(s.device, s.cloud, s.device_sends))
        bars += _blocks(by_name[s.cloud], s.cloud_blocks, "b")
    return bars


def scission_graph(
    scenario: ScissionScenario,
    systems: Sequence[ScissionSystem],
    network: Mapping[tuple[str, str], ScissionLink],
) -> Figure:
    """Scission's per-block graph of ``scenario`` (save it under the same style: :func:`write_graph`)."""
    bars = graph_bars(scenario, systems, network)
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(20, 10))
        ax = fig.subplots()
        ax.set_ylabel("Execution time (ms)", labelpad=10)
        ind = np.arange(len(bars))
        ax.bar(ind, [b[1] for b in bars], 0.8, align="center", color=[b[2] for b in bars])
        ax.set_xticks(ind)
        ax.set_xticklabels([b[0] for b in bars], rotation=270, horizontalalignment="center")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        used = [(scenario.device_blocks, "red", "Device"), (scenario.edge_blocks, "green", "Edge"),
                (scenario.cloud_blocks, "blue", "Cloud")]
        ax.legend(handles=[Patch(color=c, label=label) for span, c, label in used if span is not None])
    return fig


def write_graph(
    scenario: ScissionScenario,
    systems: Sequence[ScissionSystem],
    network: Mapping[tuple[str, str], ScissionLink],
    path: Path,
) -> Path:
    """Scission's graph of ``scenario`` written as a PNG at ``path``."""
    fig = scission_graph(scenario, systems, network)
    with mpl.rc_context(STYLE):
        fig.savefig(path, bbox_inches="tight")
    return path
