"""``plan --scission``: every option of Scission's ``scission_predict.py``, on its shipped benchmark data.

Every expected line is Scission's own (the published top 5 of its README) or worked out here by hand
from the fixture's numbers: block seconds summed below, links from network_stats.csv (raspi4 -> edge
66.7 ms, raspi4 -> cloud 100 ms, both 1.6 Mbit/s = 200,000 B/s; edge -> cloud 20 ms at 50 Mbit/s =
6,250,000 B/s). A limit only removes scenarios, so under a limit the ranking is the one without it
less what breaks the limit. Each query was also run through scission_predict.py itself (b765b2b),
which printed the same lines.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from helpers.cli import one_error_line, run_cli

from splitinfer.profile.scission import load_benchmarks

DATA = Path(__file__).parents[2] / ".." / "shared" / "data" / "scission"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"Scission fixture data not found at {DATA}")

QUERY = ["-d", "!-1", "-e", "10", "-c", "16"]  # the README's query
PUBLISHED = [  # its output in Scission's README
    "[1] 9.0106s - 2.4087MB - Device(raspi4) = 0 - 6, Edge(vm2Core) = 7 - 11, Cloud(6700k(GPU)) = 12 - 25",
    "[2] 9.0594s - 2.4087MB - Device(raspi4) = 0 - 6, Edge(2500) = 7 - 11, Cloud(6700k(GPU)) = 12 - 25",
    "[3] 9.0721s - 2.4087MB - Device(raspi4) = 0 - 6, Edge(vm2Core) = 7 - 11, Cloud(6700k(NoGPU)) = 12 - 25",
    "[4] 9.1209s - 2.4087MB - Device(raspi4) = 0 - 6, Edge(2500) = 7 - 11, Cloud(6700k(NoGPU)) = 12 - 25",
    "[5] 9.1511s - 3.2115MB - Device(raspi4) = 0 - 6, Edge(vm2Core) = 7 - 12, Cloud(6700k(GPU)) = 13 - 25",
]
LOADED = "[+] 5 systems loaded : 1 device, 2 edge, 2 cloud"  # device-raspi4, edge-2500, edge-vm2Core, ...
NO_RESULTS = "No results for the specified configuration"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Scission's graph is written to the current folder
    return tmp_path


def scission(capsys, *extra) -> tuple[int, str, str]:
    return run_cli(capsys, "plan", "--scission", DATA, "network_stats.csv", "vgg19", *extra)


def ranked(out: str) -> list[str]:
    return [line for line in out.splitlines() if re.match(r"\[\d+\] ", line)]


def renumbered(lines: list[str]) -> list[str]:
    return [re.sub(r"^\[\d+\]", f"[{i}]", line) for i, line in enumerate(lines, start=1)]


def seconds(system: str, first: int, last: int) -> float:
    """The fixture's seconds of vgg19's blocks first..last (indices, inclusive) on ``system``."""
    blocks = {s.name: s.blocks for s in load_benchmarks(DATA, "vgg19")}[system]
    return sum(b.seconds for b in blocks[first : last + 1])


def test_headlines_results_and_the_graph_as_scission_prints_them(capsys, in_tmp):
    code, out, err = scission(capsys, *QUERY)
    assert code == 0, err
    # The graph is named MODEL-round(best, 2)s: round(9.0106, 2) = 9.01.
    assert out.splitlines() == [LOADED, "[+] vgg19 results", *PUBLISHED, "[+] Graph created: vgg19-9.01s"]
    png = (in_tmp / "vgg19-9.01s.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > height > 500  # 20 x 10 inches at 100 dpi, cut to its content


def test_the_graph_has_a_bar_per_block_and_per_hop():
    pytest.importorskip("matplotlib")
    from splitinfer.plan.scission import parse_criteria, rank_scission
    from splitinfer.profile.scission import load_network_stats
    from splitinfer.report.scission import scission_graph

    systems = load_benchmarks(DATA, "vgg19")
    network = load_network_stats(DATA / "network_stats.csv")
    criteria = {"device": parse_criteria("!-1"), "edge": parse_criteria("10"), "cloud": parse_criteria("16")}
    best = rank_scission(systems, network, criteria, result_count=1)[0]
    ax = scission_graph(best.scenario, systems, network).axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    # Device = 0 - 6 (blocks "0-1", 2 .. 6), hop, Edge = 7 - 11, hop, Cloud = 12 - 25.
    assert labels == ["0-1", *map(str, range(2, 7)), "COMM.", *map(str, range(7, 12)), "COMM.",
                      *map(str, range(12, 26))]
    heights = [p.get_height() for p in ax.patches]
    # raspi4 -> vm2Core: 66.7 ms + 1,605,760 B / 200,000 B/s = 66.7 + 8028.8 = 8095.5 ms;
    # vm2Core -> 6700k(GPU): 20 ms + 802,944 B / 6,250,000 B/s = 20 + 128.47 = 148.47 ms.
    assert heights[6] == pytest.approx(8095.5) and heights[12] == pytest.approx(148.47104)
    assert heights[0] == pytest.approx(seconds("raspi4", 0, 0) * 1000)
    assert ax.get_yscale() == "log" and [t.get_text() for t in ax.get_legend().get_texts()] == [
        "Device", "Edge", "Cloud"]


def test_without_matplotlib_one_line_says_so(capsys, in_tmp, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    code, out, _ = scission(capsys, *QUERY, "--result-count", "1")
    assert code == 0
    assert out.splitlines() == [LOADED, "[+] vgg19 results", PUBLISHED[0], "[+] Graph not created: "
                                "matplotlib is not installed (pip install 'splitinfer[report]')"]
    assert not list(in_tmp.glob("*.png"))


def test_result_count(capsys):
    assert ranked(scission(capsys, *QUERY, "--result-count", "2")[1]) == PUBLISHED[:2]
    # -d "6,!7": the device ends at Keras layer 6; -e "11,!12": the edge at 11, the cloud does the rest.
    # Only the systems are left to choose: 2 edges x 2 clouds = 4 scenarios, all printed of the 10 asked.
    assert ranked(scission(capsys, "-d", "6,!7", "-e", "11,!12", "--result-count", "10")[1]) == PUBLISHED[:4]


def test_input_size(capsys):
    # -d -1: the device runs nothing and sends the input itself, -i MB x 10^6 bytes at 200,000 B/s.
    # -i 1: 1,000,000 / 200,000 = 5 s. Cloud alone: 0.1 s ping + 5 s + its 25 blocks (GPU 0.00865 s,
    # NoGPU 0.13264 s); the edge alone: 0.0667 s + 5 s + vm2Core's 25 blocks (0.30469 s).
    gpu, nogpu, vm2 = seconds("6700k(GPU)", 0, 24), seconds("6700k(NoGPU)", 0, 24), seconds("vm2Core", 0, 24)
    assert [f"{t:.4f}" for t in (0.1 + 5 + gpu, 0.1 + 5 + nogpu, 0.0667 + 5 + vm2)] == [
        "5.1086", "5.2326", "5.3714"]
    code, out, _ = scission(capsys, "-d", "-1", "-i", "1", "--result-count", "3")
    unused = "Device(raspi4) = -1 - -1"
    assert code == 0 and ranked(out) == [
        f"[1] 5.1086s - 1.0000MB - {unused}, Edge(None) = -1 - -1, Cloud(6700k(GPU)) = 0 - 25",
        f"[2] 5.2326s - 1.0000MB - {unused}, Edge(None) = -1 - -1, Cloud(6700k(NoGPU)) = 0 - 25",
        f"[3] 5.3714s - 1.0000MB - {unused}, Edge(vm2Core) = 0 - 25, Cloud(None) = -1 - -1",
    ]
    assert out.splitlines()[-1] == "[+] Graph created: vgg19-5.11s"
    # The default, 0.15 MB: 150,000 / 200,000 = 0.75 s, so 0.1 + 0.75 + 0.00865 = 0.8586 s.
    assert f"{0.1 + 0.75 + gpu:.4f}" == "0.8586"
    assert ranked(scission(capsys, "-d", "-1", "--result-count", "1")[1]) == [
        "[1] 0.8586s - 0.1500MB - Device(raspi4) = -1 - -1, Edge(None) = -1 - -1, Cloud(6700k(GPU)) = 0 - 25"]


# At most 0.1 MB (100,000 B) sent by the device: no scenario without it (its input is 150,000 B), and of
# its blocks' outputs only those of blocks 22-24 (16,512, 16,512, 4,128 B). All on raspi4: 2.7347 s, sends
# nothing. Device to layer 23 (blocks 0-22: 2.68467 s), 16,512 B to an edge (0.0667 + 0.08256 s) that runs
# blocks 23-24 (vm2Core 0.00782 s, 2500 0.00900 s): 2.8418 s and 2.8429 s; every other split adds a hop.
DEVICE_LINES = [
    "[1] 2.7347s - 0.0000MB - Device(raspi4) = 0 - 25, Edge(None) = -1 - -1, Cloud(None) = -1 - -1",
    "[2] 2.8418s - 0.0165MB - Device(raspi4) = 0 - 23, Edge(vm2Core) = 24 - 25, Cloud(None) = -1 - -1",
    "[3] 2.8429s - 0.0165MB - Device(raspi4) = 0 - 23, Edge(2500) = 24 - 25, Cloud(None) = -1 - -1",
]


def test_device_upload(capsys):
    base = seconds("raspi4", 0, 22) + 0.0667 + 16512 / 200000
    assert [f"{t:.4f}" for t in (seconds("raspi4", 0, 24), base + seconds("vm2Core", 23, 24),
                                 base + seconds("2500", 23, 24))] == ["2.7347", "2.8418", "2.8429"]
    assert ranked(scission(capsys, "--device-upload", "0.1", "--result-count", "3")[1]) == DEVICE_LINES
    # The README's best sends 1,605,760 B from the device: within 1.6058 MB, not within 1.6057 (below).
    out = scission(capsys, *QUERY, "--device-upload", "1.6058", "--result-count", "2")[1]
    assert ranked(out) == PUBLISHED[:2]


def test_edge_upload(capsys):
    # An edge followed by no cloud sends nothing (Scission counts 0 B), so --edge-upload 0 keeps only
    # those: with the device and the edge both used (-d !-1 -e !-1), DEVICE_LINES [2] and [3].
    code, out, _ = scission(capsys, "-d", "!-1", "-e", "!-1", "--edge-upload", "0", "--result-count", "2")
    assert code == 0 and ranked(out) == renumbered(DEVICE_LINES[1:])
    # -e !-1 -c !-1, raspi4 unused: it sends the 150,000 B input to vm2Core (0.0667 + 0.75 s), which sends
    # its last block's output to the cloud. Unlimited, the best two end vm2Core at layer 22 or 21 and send
    # 100,480 B: over 0.1 MB. Within it: vm2Core to layer 23 (blocks 0-22, 0.29688 s), 16,512 B
    # (0.02 + 0.00264 s), GPU blocks 23-24 (0.00055 s); to layer 24 (0.30000 s), then GPU block 24
    # (0.00029 s) or NoGPU block 24 (0.00103 s).
    hops = 0.0667 + 150000 / 200000 + 0.02 + 16512 / 6250000
    to_23, to_24 = seconds("vm2Core", 0, 22), seconds("vm2Core", 0, 23)
    totals = (hops + to_23 + seconds("6700k(GPU)", 23, 24), hops + to_24 + seconds("6700k(GPU)", 24, 24),
              hops + to_24 + seconds("6700k(NoGPU)", 24, 24))
    assert [f"{t:.4f}" for t in totals] == ["1.1368", "1.1396", "1.1404"]
    code, out, _ = scission(capsys, "-e", "!-1", "-c", "!-1", "--edge-upload", "0.1", "--result-count", "3")
    sent, unused = "0.1665MB", "Device(raspi4) = -1 - -1"
    assert code == 0 and ranked(out) == [
        f"[1] 1.1368s - {sent} - {unused}, Edge(vm2Core) = 0 - 23, Cloud(6700k(GPU)) = 24 - 25",
        f"[2] 1.1396s - {sent} - {unused}, Edge(vm2Core) = 0 - 24, Cloud(6700k(GPU)) = 25 - 25",
        f"[3] 1.1404s - {sent} - {unused}, Edge(vm2Core) = 0 - 24, Cloud(6700k(NoGPU)) = 25 - 25",
    ]


# The README's top 5: the device runs blocks 0-5 (0.68083 s); the edge vm2Core 6-10 (0.08126 s), 2500 6-10
# (0.13006 s), vm2Core 6-11 ([5], 0.09375 s); the cloud GPU 11-24 (0.00450 s), NoGPU 11-24 (0.06601 s),
# GPU 12-24 ([5], 0.00413 s). Compute (no transfers): [1] 0.76659, [2] 0.81539, [3] 0.82810, [4] 0.87690,
# [5] 0.77871 s.


def test_device_time(capsys):
    # Seconds: the all-on-device DEVICE_LINES [1] computes 2.7347 s on raspi4, [2] and [3] 2.68467 s.
    code, out, _ = scission(capsys, "--device-upload", "0.1", "--device-time", "2.7", "--result-count", "2")
    assert code == 0 and ranked(out) == renumbered(DEVICE_LINES[1:])
    # Percent: the device's share 0.68083 / compute: [1] 88.8%, [2] 83.5%, [3] 82.2%: within 85%, [2], [3].
    assert [round(0.68083 / c * 100, 1) for c in (0.76659, 0.81539, 0.82810)] == [88.8, 83.5, 82.2]
    out = scission(capsys, *QUERY, "--device-time", "85%", "--result-count", "2")[1]
    assert ranked(out) == renumbered(PUBLISHED[1:3])
    assert out.splitlines()[-1] == "[+] Graph created: vgg19-9.06s"


def test_edge_time(capsys):
    # Seconds: 2500's 0.13006 s breaks 0.1 s ([2], [4]); vm2Core's 0.08126 and 0.09375 s do not.
    out = scission(capsys, *QUERY, "--edge-time", "0.1", "--result-count", "3")[1]
    assert ranked(out) == renumbered([PUBLISHED[0], PUBLISHED[2], PUBLISHED[4]])
    # Percent: [1] 0.08126 / 0.76659 = 10.6%, [2] 16.0%, [3] 9.8%, [4] 14.8%, [5] 12.0%: within 11%, [1], [3].
    assert [round(e / c * 100, 1) for e, c in ((0.08126, 0.76659), (0.13006, 0.81539), (0.08126, 0.82810),
                                               (0.13006, 0.87690), (0.09375, 0.77871))] == [
        10.6, 16.0, 9.8, 14.8, 12.0]
    out = scission(capsys, *QUERY, "--edge-time", "11%", "--result-count", "2")[1]
    assert ranked(out) == renumbered([PUBLISHED[0], PUBLISHED[2]])


def test_cloud_time(capsys):
    # Seconds: NoGPU's 0.06601 s breaks 0.01 s ([3], [4]); GPU's 0.00450 and 0.00413 s do not.
    expected = renumbered([PUBLISHED[0], PUBLISHED[1], PUBLISHED[4]])
    assert ranked(scission(capsys, *QUERY, "--cloud-time", "0.01", "--result-count", "3")[1]) == expected
    # Percent: GPU [1] 0.00450 / 0.76659 = 0.59%, [2] 0.55%, [5] 0.53%; NoGPU [3] 7.97%, [4] 7.53%.
    assert ranked(scission(capsys, *QUERY, "--cloud-time", "1%", "--result-count", "3")[1]) == expected


@pytest.mark.parametrize("limit", [
    ["--device-upload", "1.6057"],  # the device ends before layer 10: it sends at least 1,605,760 B
    ["--edge-upload", "0.8"],  # the edge ends at layer 10-15 and sends at least 802,944 B to the cloud
    ["--cloud-time", "0"],  # -c 16 needs the cloud, and every block takes it some time
])
def test_no_results_is_scissions_message_and_exit_0(capsys, in_tmp, limit):
    code, out, err = scission(capsys, *QUERY, *limit)
    assert (code, out, err) == (0, f"{LOADED}\n{NO_RESULTS}\n", "")
    assert not list(in_tmp.glob("*.png"))


@pytest.mark.parametrize(("extra", "line"), [
    (["--device-time", "soon"], "error: --device-time 'soon' is neither seconds nor a percentage. give "),
    (["--edge-time", "-5%"], "error: --edge-time is -5.0. use a finite number >= 0"),
    (["--cloud-time", "nan"], "error: --cloud-time is nan"),
    (["--device-upload", "-1"], "error: --device-upload is -1.0. use a finite number >= 0"),
    (["--edge-upload", "inf"], "error: --edge-upload is inf"),
    (["-i", "-0.5"], "error: --input is -0.5"),
    (["-d", "3,,4"], "error: empty item in the device criteria '3,,4'"),
    (["--general", "--edge-time", "1"], "error: --edge-time applies to Scission's ranking, not to --general"),
])
def test_bad_scission_options_are_one_line_and_exit_2(capsys, extra, line):
    code, out, err = scission(capsys, *extra)
    assert code == 2 and out == "" and one_error_line(err).startswith(line)


def test_scission_options_need_scission(capsys, in_tmp):
    code, _, err = run_cli(capsys, "plan", in_tmp / "profile.json", "--device-upload", "1")
    assert code == 2
    assert one_error_line(err) == ("error: --device-upload is an option of Scission's files, and no "
                                   "--scission was given. add --scission DIR NETWORK_CSV MODEL, or drop it")
