"""``splitinfer profile``: measure a model's blocks on devices and the links between them; show and merge."""

from __future__ import annotations

import contextlib
import platform
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from splitinfer.cli._calibration import calibration_input
from splitinfer.cli._common import check_writable, console, err_console, parse_flag
from splitinfer.cli._exits import ExitRuleOpt, ExitRulePathOpt, ExitsOpt, ExitThresholdOpt, read_exit_options
from splitinfer.cli._model import FixInputs, GivenInputs, Inputs, InputsFile
from splitinfer.cli._profile_tables import (
    devices_table,
    links_table,
    profile_table,
    sizes_table,
    tradeoffs_table,
)
from splitinfer.cluster import load_cluster
from splitinfer.errors import ProfileError
from splitinfer.graph.analysis import DEFAULT_MAX_BLOCKS, DEFAULT_MAX_CUT_TENSORS
from splitinfer.host import max_num_threads
from splitinfer.plan import Plan, describe_stages, plan_to_json, with_provenance
from splitinfer.profile.device import profile_model
from splitinfer.profile.energy_windows import MAX_ENERGY_WINDOW_S
from splitinfer.profile.files import load_profile, merge_profiles, save_profile
from splitinfer.profile.profiler import (
    MAX_BUDGET_S,
    LocalRunner,
    ProfileInterrupted,
    ProfileSettings,
    ProfileWarning,
    prepare_model,
)
from splitinfer.profile.schema import Profile
from splitinfer.profile.sensitivity import MAX_SAMPLES
from splitinfer.profile.timing import MAX_REST_S
from splitinfer.profile.tradeoff_profile import (
    output_compared,
    sensitivity_of,
    split_options,
    time_on_device,
    tradeoff_profile,
    with_tradeoffs,
)
from splitinfer.units import check_number, parse_time_s

HELP = """Measure a model's blocks on devices and the links between them, into profile.json.

[bold]Three forms[/]

  splitinfer profile MODEL [--cluster cluster.yaml] -o profile.json [options]

  splitinfer profile show profile.json

  splitinfer profile merge a.json b.json [...] -o all.json

[bold]Examples[/]

  splitinfer profile r18.onnx --cluster cluster.yaml -o profile.json --budget-s 20

  splitinfer profile bert.onnx --input-shape input_ids=1,128 --input-shape attention_mask=1,128 -o p.json

  splitinfer profile r18.onnx --device-name raspi --num-threads 4 -o raspi.json   # on each device by hand

  splitinfer profile merge raspi.json server.json -o profile.json

  splitinfer profile r18.onnx --cluster cluster.yaml -o p.json --refine latency --plan-output plan.json

  splitinfer profile r18.onnx --calibration val/ --preprocess resize=256,crop=224,norm=imagenet -o p.json

  splitinfer profile r18.onnx --cluster cluster.yaml --calibration val/ --tradeoffs int8,fp16,lz4 -o p.json

  splitinfer profile silero_vad.onnx --fix-input sr=16000 --input x=audio.npy -o p.json

With --cluster, every device is profiled through its worker (local devices are \
started on this machine) and links marked `measure: true` are probed; declared \
links are copied. Without --cluster, this machine is profiled in this process as \
one device: run it on each device and merge the files (Scission's workflow). \
Each block runs as its own partition on the tensors it really gets from the \
calibration input (--calibration x.npz, else seeded generated inputs); the \
whole model is timed too. --calibration takes an .npz with one array per \
input name, or a data set for a single-input model (an image folder, one image, \
an .npz with x, an .npy; images preprocessed as --preprocess says, else to fit \
the input): its first samples make one input batch. --tradeoffs int8,fp16,lz4,zstd \
also measures each block in each precision and each cut compressed: the quality cost of each \
change alone (top-1 agreement drop on up to --limit calibration samples, in this process) and \
its seconds on every device; `plan --max-quality-drop 1%` then chooses among them. \
Ctrl-C writes what was measured so far to -o. \
--refine deploys the best plan, times its segments and hops as they run, and \
re-plans until the plan stops changing (blocks that run faster together, the \
runtime's own cost per hop): its --plan-output is what `splitinfer bench` checks.

Then: `splitinfer plan profile.json --cluster cluster.yaml`.
"""


@contextlib.contextmanager
def _printing_warnings() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProfileWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, ProfileWarning):
                    err_console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _write(profile: Profile, output: Path | None) -> None:
    if output is None:
        return
    try:
        save_profile(profile, output)
    except OSError as e:
        raise ProfileError(f"cannot write {output}: {e.strerror}", "pick a writable path for -o") from None
    console.print(f"wrote {output}", highlight=False)


@contextlib.contextmanager
def _local_bar(device: str) -> Iterator[object]:
    columns = (TextColumn(f"{device:>12}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console) as bars:
        task = bars.add_task("preparing", total=None)

        def update(done: int, total: int, what: str) -> None:
            bars.update(task, completed=done, total=total, description=what)

        yield update


def _sensitivity(prepared: Any, data: Any, options: dict) -> Any:
    """The quality cost of each --tradeoffs option on the calibration data set (in this process:
    quality does not depend on the device); None without --tradeoffs."""
    if not options["tradeoffs"]:
        return None
    precisions, compressions = split_options(options["tradeoffs"].split(","))
    output_compared(prepared.model)  # a model without class scores fails before the bar shows
    with _local_bar("quality") as update:
        return sensitivity_of(prepared, data.x, precisions, compressions,
                              limit=min(options["limit"], len(data)), progress=update)


def _measure(model: Path, cluster: Path | None, options: dict) -> tuple[Profile, Plan | None]:
    # Load, cut and calibrate first: bad input fails here, before any worker starts or bar shows.
    source, calibration, data = calibration_input(model, options)
    given = options.get("exits", (None,) * 4)
    # none given: the exits the model's metadata declares (prepare_model reads them)
    declared = read_exit_options(source, *given) if any(g is not None for g in given) else None
    prepared = prepare_model(source, calibration=calibration, exits=declared,
                             max_blocks=options["max_blocks"], max_cut_tensors=options["max_cut_tensors"])
    settings = ProfileSettings(budget_s=options["budget_s"], pairs=options["pairs"],
                               energy_window_s=options.get("energy_window", 0.0),
                               rest_s=options.get("rest_s"))
    sens = _sensitivity(prepared, data, options)
    source_name = "" if data is None else options["calibration"].name
    if cluster is not None:
        from splitinfer.runtime.profiling import profile_cluster  # the runtime only when needed
        from splitinfer.runtime.refine import refine

        the_cluster = load_cluster(cluster)
        profile = profile_cluster(None, the_cluster, progress=True, settings=settings, prepared=prepared,
                                  tradeoffs=sens, tradeoffs_source=source_name)
        if options["refine"] is None:
            return profile, None
        err_console.print(f"refining the {options['refine']} plan: timing its segments as they run",
                          highlight=False)
        plan, profile = refine(profile, the_cluster, None, options["refine"], prepared=prepared,
                               settings=ProfileSettings(budget_s=options["budget_s"] / 4))
        return profile, with_provenance(plan, cluster=str(cluster), model=prepared.info.name,
                                        model_sha256=prepared.info.sha256)
    if options["refine"] is not None:
        raise ProfileError("--refine needs --cluster", "give the cluster.yaml whose plan to refine")
    name = options["device_name"] or platform.node() or "local"
    with _local_bar(name) as update:
        profile = profile_model(None, device_name=name, providers=tuple(options["providers"]),
                                num_threads=options["num_threads"], progress=update, settings=settings,  # type: ignore[arg-type]
                                prepared=prepared)
    if sens is not None:
        runner = LocalRunner(tuple(options["providers"]), options["num_threads"])
        with _local_bar(name) as update:
            timed = time_on_device(runner, prepared, sens, budget_s=settings.budget_s, settings=settings,
                                   progress=update)
        profile = with_tradeoffs(profile, tradeoff_profile(sens, {name: timed}, source_name))
    return profile, None


def _profile(model: Path, cluster: Path | None, output: Path | None, options: dict) -> None:
    try:
        with _printing_warnings():
            profile, plan = _measure(model, cluster, options)
    except ProfileInterrupted as stopped:
        if stopped.profile is not None and output is not None:
            _write(stopped.profile, output)
            err_console.print("interrupted: wrote what was measured so far (unmeasured blocks are null)")
        raise typer.Exit(130) from None
    console.print(profile_table(profile))
    if profile.other_sizes:
        console.print(sizes_table(profile))
    _write(profile, output)
    if output is None:
        err_console.print("note: not saved; give -o profile.json to keep it", highlight=False)
    if plan is not None:
        console.print(f"refined plan: {describe_stages(plan)}, predicted latency "
                      f"{plan.latency_s * 1000:.2f} ms", highlight=False)
        if options["plan_output"] is not None:
            # The files as given, as `plan -o` records them: `run` and `bench` then find the profile
            # (and through it the model), the cluster, and the model itself where no profile was saved.
            plan = with_provenance(plan, profile=str(output) if output is not None else "", model=str(model),
                                   cluster=str(cluster) if cluster is not None else "")
            options["plan_output"].write_text(plan_to_json([plan]))
            console.print(f"wrote {options['plan_output']}", highlight=False)


def _show(paths: list[str]) -> None:
    if len(paths) != 1:
        raise ProfileError(f"profile show takes one file, got {len(paths)}",
                           "run: splitinfer profile show FILE")
    profile = load_profile(paths[0])
    console.print(profile_table(profile))
    if profile.other_sizes:
        console.print(sizes_table(profile))
    console.print(devices_table(profile))
    if profile.links:
        console.print(links_table(profile))
    if profile.tradeoffs is not None:
        console.print(tradeoffs_table(profile))
    if profile.hop_overhead_s:
        console.print(f"runtime overhead per hop between devices (measured by refinement, added when "
                      f"planning): {profile.hop_overhead_s * 1e3:.2f} ms", highlight=False)
    for name, device in profile.devices.items():  # measured power (profile --energy-window, energy join)
        energy = device.energy
        if energy is not None:
            joules = [j for j in energy.block_j if j is not None]
            console.print(f"{name}: energy windows of {len(energy.windows)} blocks; " + (
                f"joined with {energy.source}: {sum(joules) * 1e3:.3f} mJ per run of every block, idle "
                f"{energy.idle_w:.3f} W" if joules and energy.idle_w is not None
                else "not joined yet (splitinfer energy join)"), highlight=False)


def _merge(paths: list[str], output: Path | None) -> None:
    if len(paths) < 2 or output is None:
        raise ProfileError("profile merge needs two or more files and -o",
                           "run: splitinfer profile merge a.json b.json -o all.json")
    merged = load_profile(paths[0])
    for path in paths[1:]:
        merged = merge_profiles(merged, load_profile(path))
    _write(merged, output)
    console.print(f"{len(merged.devices)} devices: {', '.join(merged.devices)}; {len(merged.links)} links",
                  highlight=False)


def _check_numbers(budget_s: float, num_threads: int, max_blocks: int, max_cut_tensors: int,
                   batch: int | None) -> None:
    """Before anything loads: every numeric option in its range, else one line naming the flag."""
    check_number(budget_s, "--budget-s", low=0, low_open=True, high=MAX_BUDGET_S, error=ProfileError,
                 fix="seconds of timed work per device, e.g. 30")
    check_number(num_threads, "--num-threads", low=0, high=max_num_threads(), whole=True, error=ProfileError,
                 fix="0 = ONNX Runtime's default; at most 4 x this machine's CPUs")
    check_number(max_blocks, "--max-blocks", low=0, whole=True, error=ProfileError,
                 fix="0 = one block per candidate cut")
    check_number(max_cut_tensors, "--max-cut-tensors", low=1, whole=True, error=ProfileError)
    if batch is not None:
        check_number(batch, "--batch", low=1, whole=True, error=ProfileError)


def profile_command(
    args: list[str] = typer.Argument(..., metavar="MODEL | show FILE | merge FILE...",
                                     help="The .onnx model; or `show FILE`; or `merge FILE FILE...`.",
                                     show_default=False),
    cluster: Path | None = typer.Option(None, "--cluster", help="cluster.yaml: profile every device through "
                                        "its worker. Without it: this machine, in this process."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the profile (or the merge) here."),
    input_shape: list[str] | None = typer.Option(None, "--input-shape", metavar="NAME=D1,D2,...",
                                                 help="Fix the shape of a model input (repeat for several)."),
    batch: int | None = typer.Option(None, "--batch", metavar="N", help="Fix a dynamic batch dim to N."),
    max_blocks: int = typer.Option(DEFAULT_MAX_BLOCKS, "--max-blocks", metavar="N",
                                   help="Group nodes into at most N blocks."),
    max_cut_tensors: int = typer.Option(DEFAULT_MAX_CUT_TENSORS, "--max-cut-tensors", metavar="K",
                                        help="A candidate cut has at most K live tensors."),
    calibration: Path | None = typer.Option(None, "--calibration", metavar="DATA",
                                            help="Inputs to profile with: an .npz (one array per input "
                                                 "name), or a data set for a single-input model (image "
                                                 "folder, image, .npz with x, .npy): its first samples. "
                                                 "Default: seeded generated inputs."),
    preprocess: str | None = typer.Option(None, "--preprocess", metavar="SPEC",
                                          help="How --calibration's images become inputs, e.g. resize=256,"
                                               "crop=224,norm=imagenet (default: from the input's shape)."),
    tradeoffs: str | None = typer.Option(None, "--tradeoffs", metavar="LIST",
                                         help="Also measure these trade-offs, e.g. int8,fp16,lz4,zstd: each "
                                              "precision per block and compression per cut, its quality cost "
                                              "on --calibration's data set and its time on every device "
                                              "(then `plan --max-quality-drop`)."),
    pairs: bool = typer.Option(False, "--pairs", help="Also time each pair of adjacent blocks as one "
                               "partition: what a stage saves at each inner cut (fused nodes, one run "
                               "instead of two), which the planner then adds to its stages."),
    energy_window: float = typer.Option(0.0, "--energy-window", metavar="S",
                                        help="Then run each block alone for S seconds and idle as long, "
                                             "recording when: keep a power log running, then `splitinfer "
                                             "energy join` gives joules per block (0 = off)."),
    rest: str | None = typer.Option(None, "--rest", metavar="TIME",
                                    help="Idle before each timed run, e.g. 30ms: how a stage runs that waits "
                                         "for the others (default: 30ms for a decoder with a cache, whose "
                                         "stages idle while one sequence's step is elsewhere; 0 for other "
                                         "models, timed back to back as a loaded pipeline runs them)."),
    limit: int = typer.Option(256, "--limit", metavar="N",
                              help="With --tradeoffs: compare quality on at most N calibration samples."),
    budget_s: float = typer.Option(30.0, "--budget-s", metavar="S",
                                   help="Seconds of timed work per device, shared by its blocks."),
    num_threads: int = typer.Option(0, "--num-threads",
                                    help="Without --cluster: intra-op threads (0 = default)."),
    threads: int | None = typer.Option(None, "--threads", hidden=True, help="Old name of --num-threads."),
    providers: list[str] = typer.Option(["CPUExecutionProvider"], "--providers",
                                        help="Without --cluster: ONNX Runtime providers, in order."),
    device_name: str | None = typer.Option(None, "--device-name", metavar="NAME",
                                           help="Without --cluster: this device's name (default: hostname)."),
    refine_for: str | None = typer.Option(None, "--refine", metavar="OBJECTIVE",
                                          help="With --cluster: plan for OBJECTIVE (latency, throughput, "
                                               "energy), time the plan's segments as they run, re-plan until "
                                               "stable; records the segments in the profile."),
    plan_output: Path | None = typer.Option(None, "--plan-output", metavar="FILE",
                                            help="With --refine: write the refined plan here (plan.json)."),
    inputs: Inputs = None,
    inputs_file: InputsFile = None,
    fix_input: FixInputs = None,
    exits: ExitsOpt = None,
    exit_rule: ExitRuleOpt = None,
    exit_threshold: ExitThresholdOpt = None,
    exit_rule_path: ExitRulePathOpt = None,
) -> None:
    if args[0] == "show" and not Path("show").exists():
        _show(args[1:])
        return
    if args[0] == "merge" and not Path("merge").exists():
        _merge(args[1:], output)
        return
    if len(args) != 1:
        raise ProfileError(f"profile takes one MODEL, got {len(args)} arguments",
                           "run: splitinfer profile MODEL -o profile.json (or `profile show FILE`)")
    _check_numbers(budget_s, num_threads if threads is None else threads, max_blocks, max_cut_tensors, batch)
    check_number(limit, "--limit", low=1, high=MAX_SAMPLES, whole=True, error=ProfileError,
                 fix="the most calibration samples to compare")
    check_number(energy_window, "--energy-window", low=0, high=MAX_ENERGY_WINDOW_S, error=ProfileError,
                 fix="seconds each block runs alone while power is logged, e.g. 1 (0 = off)")
    rest_s = _rest_s(rest)
    if tradeoffs is not None:
        split_options(tradeoffs.split(","))  # an unknown name fails before anything loads
    check_writable(output, "-o")
    check_writable(plan_output, "--plan-output")
    options = {"calibration": calibration, "preprocess": preprocess, "input_shape": input_shape,
               "batch": batch,
               "max_blocks": max_blocks, "max_cut_tensors": max_cut_tensors, "budget_s": budget_s,
               "num_threads": num_threads if threads is None else threads, "providers": providers,
               "device_name": device_name, "refine": refine_for, "plan_output": plan_output,
               "tradeoffs": tradeoffs, "limit": limit, "pairs": pairs,
               "energy_window": energy_window, "rest_s": rest_s,
               "given": GivenInputs(inputs, inputs_file, fix_input),
               "exits": (exits, exit_rule, exit_threshold, exit_rule_path)}
    _profile(Path(args[0]), cluster, output, options)


def _rest_s(text: str | None) -> float | None:
    if text is None:
        return None
    seconds = parse_flag(parse_time_s, text, "--rest", ProfileError)
    return check_number(seconds, "--rest", low=0, high=MAX_REST_S, error=ProfileError,
                        fix="the idle before each timed run, e.g. 30ms (0: back to back)")


def register(app: typer.Typer) -> None:
    """Add ``profile`` (with its ``show`` and ``merge`` forms) to the main app."""
    app.command("profile", help=HELP, no_args_is_help=True)(profile_command)
