"""``plan --scission DIR NETWORK_CSV MODEL``: Scission's ``scission_predict.py``, option for option.

Its options with their meaning there (``-i`` MB of input, ``--result-count``, the criteria ``-d``
``-e`` ``-c``, the upload limits in MB, the time limits in seconds or ``N%`` of the compute) and its
output line for line: ``[+] N systems loaded : ...``, ``[+] MODEL results``, the ranked lines, its
graph of the best scenario as ``MODEL-SECONDSs.png`` in the current folder (with matplotlib, the
``report`` extra) and ``[+] Graph created: ...``; when nothing fits, ``No results for the specified
configuration`` and exit 0, as Scission. Bad input is one line and exit 2, as everywhere here.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import typer

from splitinfer.errors import PlanError
from splitinfer.plan import Provenance
from splitinfer.plan.problem import Problem
from splitinfer.plan.scission import TIERS, ScissionResult, TierCriteria, parse_criteria, rank_scission
from splitinfer.profile.scission import load_benchmarks, load_network_stats, scission_problem
from splitinfer.units import check_number

_CRITERIA = "N: layer N runs there, !N: not there, -1: tier unused, !-1: used, NAME / !NAME: system (not)"
SCISSION = typer.Option(False, "--scission", help="Read Scission's benchmark files instead.")
GENERAL = typer.Option(False, "--general", help="Scission: plan its data under splitinfer's general model.")
DEVICE = typer.Option(None, "--device", "-d", help=f"Scission: device criteria ({_CRITERIA}).")
EDGE = typer.Option(None, "--edge", "-e", help="Scission: edge criteria (as --device).")
CLOUD = typer.Option(None, "--cloud", "-c", help="Scission: cloud criteria (as --device).")
DEVICE_UPLOAD = typer.Option(None, "--device-upload", help="Scission: most MB (10^6 bytes) the device sends.")
EDGE_UPLOAD = typer.Option(None, "--edge-upload", help="Scission: most MB (10^6 bytes) the edge sends.")
DEVICE_TIME = typer.Option(None, "--device-time", help="Scission: device compute limit: seconds, or N% of "
                           "the total compute time (transfers not counted).")
EDGE_TIME = typer.Option(None, "--edge-time", help="Scission: edge compute limit, as --device-time.")
CLOUD_TIME = typer.Option(None, "--cloud-time", help="Scission: cloud compute limit, as --device-time.")
INPUT = typer.Option(None, "--input", "-i", help="Scission: input size in MB (10^6 bytes), what the device "
                     "sends when it runs no block (default: 0.15).")
RESULT_COUNT = typer.Option(None, "--result-count", help="Scission: how many results (default: 5).")
NO_MATPLOTLIB = "[+] Graph not created: matplotlib is not installed (pip install 'splitinfer[report]')"


def _time_limit(text: str | None, flag: str) -> tuple[float | None, float | None]:
    """``--TIER-time`` as Scission reads it: ``N`` seconds or ``N%`` of the compute: (seconds, percent)."""
    if text is None:
        return None, None
    percent = text.endswith("%")
    try:
        value = float(text[:-1] if percent else text)
    except ValueError:
        raise PlanError(f"{flag} {text!r} is neither seconds nor a percentage",
                        f"give seconds like {flag} 0.5 or a share of the compute like {flag} 20%") from None
    check_number(value, flag, low=0, error=PlanError, fix="seconds, or N% of the total compute time")
    return (None, value) if percent else (value, None)


@dataclasses.dataclass(frozen=True)
class ScissionOptions:
    """The options of ``scission_predict.py`` as ``plan`` received them (None: not given)."""

    device: str | None = None
    device_upload: float | None = None
    device_time: str | None = None
    edge: str | None = None
    edge_upload: float | None = None
    edge_time: str | None = None
    cloud: str | None = None
    cloud_time: str | None = None
    input_mb: float | None = None
    result_count: int | None = None
    general: bool = False

    def _ranking_flags(self) -> dict[str, object]:
        return {"--device": self.device, "--device-upload": self.device_upload,
                "--device-time": self.device_time, "--edge": self.edge, "--edge-upload": self.edge_upload,
                "--edge-time": self.edge_time, "--cloud": self.cloud, "--cloud-time": self.cloud_time,
                "--result-count": self.result_count}

    def check(self, scission: bool) -> None:
        """Before any file is read: each option readable and in range, and given only where it applies;
        else one line naming the flag."""
        if self.result_count is not None:
            check_number(self.result_count, "--result-count", low=1, whole=True, error=PlanError)
        for flag, mb in (("--input", self.input_mb), ("--device-upload", self.device_upload),
                         ("--edge-upload", self.edge_upload)):
            if mb is not None:
                check_number(mb, flag, low=0, error=PlanError, fix="megabytes (10^6 bytes)")
        self.criteria()
        given = [flag for flag, value in self._ranking_flags().items() if value is not None]
        if not scission and (given or self.general or self.input_mb is not None):
            flag = (given or ["--general" if self.general else "--input"])[0]
            raise PlanError(f"{flag} is an option of Scission's files, and no --scission was given",
                            "add --scission DIR NETWORK_CSV MODEL, or drop it")
        if self.general and given:
            raise PlanError(f"{given[0]} applies to Scission's ranking, not to --general",
                            "drop it; --general takes plan's constraints (--pin, --exclude, ...)")

    def criteria(self) -> dict[str, TierCriteria]:
        """Each tier's criteria and limits (MB as Scission converts them: x 1000 x 1000 bytes)."""
        out = {}
        for tier, text, mb, limit in (("device", self.device, self.device_upload, self.device_time),
                                      ("edge", self.edge, self.edge_upload, self.edge_time),
                                      ("cloud", self.cloud, None, self.cloud_time)):
            seconds, percent = _time_limit(limit, f"--{tier}-time")
            upload = None if mb is None else mb * 1000 * 1000
            out[tier] = dataclasses.replace(parse_criteria(text, tier), max_upload_bytes=upload,
                                            max_time_s=seconds, max_time_percent=percent)
        return out


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def _can_draw() -> bool:
    try:
        import matplotlib  # noqa: F401  (the report extra)
    except ImportError:
        return False
    return True


def _graph(best: ScissionResult, systems: list, network: dict, name: str) -> None:
    """Scission's graph of the best scenario as ``name``.png in the current folder."""
    if not _can_draw():
        _say(NO_MATPLOTLIB)
        return
    from splitinfer.report.scission import write_graph

    path = Path(f"{name}.png")
    try:
        write_graph(best.scenario, systems, network, path)
    except OSError as e:
        raise PlanError(f"cannot write the graph {path}: {e.strerror or e}",
                        "run plan --scission from a folder you may write to") from None
    _say(f"[+] Graph created: {name}")


def run_scission(args: list[str], opts: ScissionOptions) -> tuple[Problem, Provenance] | None:
    """``--general``: Scission's data as a problem for the planner. Else Scission's ranking, printed as
    Scission prints it, with its graph; None."""
    folder, network_csv, model = args
    network_path = Path(network_csv)
    if not network_path.exists() and (Path(folder) / network_csv).exists():
        network_path = Path(folder) / network_csv  # Scission reads it relative to the folder
    if not opts.general and _can_draw() and not os.access(".", os.W_OK):
        raise PlanError(f"the current folder {Path.cwd()} is not writable, and Scission's graph goes there",
                        "run plan --scission from a folder you may write to")
    systems = load_benchmarks(folder, model)
    network = load_network_stats(network_path)
    input_mb = 0.15 if opts.input_mb is None else opts.input_mb
    if opts.general:
        provenance = Provenance(model=model, scission_dir=str(folder), network_stats=str(network_path))
        return scission_problem(systems, network, input_mb=input_mb), provenance
    count = {tier: sum(s.tier == tier for s in systems) for tier in TIERS}
    _say(f"[+] {len(systems)} systems loaded : {count['device']} device, {count['edge']} edge, "
         f"{count['cloud']} cloud")
    results = rank_scission(systems, network, opts.criteria(), input_mb=input_mb,
                            result_count=5 if opts.result_count is None else opts.result_count)
    if not results:
        _say("No results for the specified configuration")  # and exit 0, as Scission
        return None
    application = model.lower()
    _say(f"[+] {application} results")
    for rank, result in enumerate(results, start=1):
        _say(result.line(rank))
    _graph(results[0], systems, network, f"{application}-{round(results[0].total_s, 2)}s")
    return None
