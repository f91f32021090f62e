"""Scission's benchmark files as a profile source.

A Scission benchmark folder holds one ``{tier}-{system}.dat`` file per machine
(a pickle of ``{model_name: [LayerBenchmark, ...]}``) and a ``network_stats.csv``
(``source,destination,ping(ms),bandwidth(mbps)``, spaces allowed).

The pickles are read with a restricted unpickler that builds only plain
:class:`ScissionBenchmark` records for ``__main__.LayerBenchmark`` and refuses
every other global, so a crafted file cannot run code.
"""

from __future__ import annotations

import csv
import io
import math
import pickle
from pathlib import Path

from splitinfer.errors import ProfileError, SchemaError, read_file
from splitinfer.plan.problem import AT_SOURCE, AtSource, Link, Problem
from splitinfer.plan.scission import TIERS, ScissionBlock, ScissionLink, ScissionSystem

_FIELDS = ("input_layer", "output_layer", "second_prediction", "output_size")


class ScissionBenchmark:
    """What a pickled ``LayerBenchmark`` holds; nothing else is ever constructed."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError("LayerBenchmark state is not a dict of attributes")
        self.__dict__.update(state)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        if (module, name) == ("__main__", "LayerBenchmark"):
            return ScissionBenchmark
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _block(record: object, where: str) -> ScissionBlock:
    if not isinstance(record, ScissionBenchmark):
        raise SchemaError(
            f"{where} is not a LayerBenchmark", "use a .dat file written by scission_benchmark.py"
        )
    values = {f: getattr(record, f, None) for f in _FIELDS}
    missing = [f for f, v in values.items() if v is None]
    if missing:
        raise SchemaError(
            f"{where} has no {', '.join(missing)}", "use a .dat file written by scission_benchmark.py"
        )
    seconds = values["second_prediction"]
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not seconds >= 0
        or math.isinf(seconds)
    ):
        raise ProfileError(f"{where} has time {seconds!r}", "benchmark it again: times must be >= 0 seconds")
    ints = [values[f] for f in ("input_layer", "output_layer", "output_size")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
        raise SchemaError(f"{where} has non-integer layers or output size", "use an unmodified .dat file")
    return ScissionBlock(values["input_layer"], values["output_layer"], float(seconds), values["output_size"])


def load_benchmark_file(path: str | Path) -> dict[str, tuple[ScissionBlock, ...]]:
    """Blocks per model of one Scission ``.dat`` file, read without running code from it."""
    p = Path(path)
    raw = read_file(p, "Scission benchmark file", "check the path", ProfileError)
    try:
        data = _RestrictedUnpickler(io.BytesIO(raw)).load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        ImportError,
    ) as e:
        raise SchemaError(
            f"{p} is not a Scission benchmark file ({e})", "use a .dat file written by scission_benchmark.py"
        ) from None
    if not isinstance(data, dict):
        raise SchemaError(
            f"{p} does not hold a {{model: [LayerBenchmark]}} dict",
            "use a .dat file written by scission_benchmark.py",
        )
    out = {}
    for model, records in data.items():
        if not isinstance(model, str) or not isinstance(records, list):
            raise SchemaError(
                f"{p}: entry {model!r} is not a model name with a list of blocks",
                "use a .dat file written by scission_benchmark.py",
            )
        out[model] = tuple(_block(r, f"{p.name}: {model} block {i}") for i, r in enumerate(records))
    return out


def load_benchmarks(directory: str | Path, model: str) -> list[ScissionSystem]:
    """The systems of a Scission folder with their blocks for ``model`` (file-name order)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ProfileError(f"{folder} is not a folder", "give the folder that holds the *.dat files")
    files = sorted(f for f in folder.glob("*-*.dat") if f.is_file())
    if not files:
        raise ProfileError(
            f"{folder} has no {{tier}}-{{system}}.dat files", "point to a Scission benchmark folder"
        )
    systems = []
    wanted = model.lower()  # Scission lower-cases the model name
    for f in files:
        tier, name = f.name[: -len(".dat")].split("-", 1)
        if tier.lower() not in TIERS:
            raise ProfileError(
                f"{f.name}: tier {tier!r} is not device, edge or cloud", "name files {tier}-{system}.dat"
            )
        models = load_benchmark_file(f)
        if wanted not in models:
            raise ProfileError(f"{f.name} has no model {model!r}", f"use one of: {', '.join(sorted(models))}")
        systems.append(ScissionSystem(tier.lower(), name, models[wanted]))
    return systems


def load_network_stats(path: str | Path) -> dict[tuple[str, str], ScissionLink]:
    """``network_stats.csv`` as Scission reads it: ping ms / 1000, round(Mbps * 125000) bytes/s."""
    p = Path(path)
    text = read_file(p, "network statistics", "check the path of network_stats.csv", ProfileError).decode()
    rows = list(csv.reader(io.StringIO(text)))
    links = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        try:
            src, dst, ping_ms, mbps = cells
            ping, rate = float(ping_ms), float(mbps)
        except ValueError:
            raise SchemaError(
                f"{p} line {number} is not source,destination,ping(ms),bandwidth(mbps)",
                "fix that line, e.g. raspi4,2500,66.7,1.6",
            ) from None
        if not (ping >= 0 and rate > 0) or math.isinf(ping) or math.isinf(rate):
            raise ProfileError(
                f"{p} line {number}: ping {ping_ms} ms, bandwidth {mbps} Mbit/s",
                "give ping >= 0 and a positive bandwidth",
            )
        links[(src, dst)] = ScissionLink(ping / 1000, round(rate * 125000))
    return links


def scission_problem(
    systems: list[ScissionSystem],
    network: dict[tuple[str, str], ScissionLink],
    *,
    input_mb: float = 0.15,
    sink: str | AtSource | None = AT_SOURCE,
) -> Problem:
    """Scission's data under splitinfer's general model: any order, every system a device.

    The source is the first device-tier system. A link missing in one direction is
    taken to be symmetric (Scission's files list only device -> edge -> cloud rows,
    and the general model may return the result); pairs with no row at all stay
    unconnected.
    """
    order = sorted(systems, key=lambda s: TIERS.index(s.tier))
    names = tuple(s.name for s in order)
    if len(set(names)) != len(names):
        raise ProfileError("two Scission files name the same system", "give every system its own name")
    blocks = order[0].blocks
    links = []
    for (a, b), link in network.items():
        if a in names and b in names and a != b:
            links.append(Link(a, b, float(link.bandwidth_bps), link.ping_s))
            if (b, a) not in network:
                links.append(Link(b, a, float(link.bandwidth_bps), link.ping_s))
    return Problem(
        names,
        {s.name: [b.seconds for b in s.blocks] for s in order},
        [b.output_bytes for b in blocks[:-1]],
        round(input_mb * 1000 * 1000),
        blocks[-1].output_bytes,
        links,
        source=names[0],
        sink=sink,
    )
