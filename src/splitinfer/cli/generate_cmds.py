"""`splitinfer generate`: a decoder's tokens through a deployed plan, streamed as they come (issue 20)."""

from __future__ import annotations

import itertools
import json
import statistics
from typing import Annotated

import typer

from splitinfer.cli._common import console
from splitinfer.cli.runtime_cmds import (
    ClusterOpt,
    ModelOpt,
    PlanArg,
    ProfileOpt,
    RankOpt,
    TimeoutOpt,
    check_request_options,
    open_session,
    resolve_deployment,
)
from splitinfer.errors import InputError


def _ids(text: str | None, flag: str) -> list[int]:
    """Token ids written as 5,17,42 (spaces allowed); InputError naming ``flag``."""
    if text is None:
        return []
    try:
        ids = [int(t) for t in text.replace(" ", ",").split(",") if t]
    except ValueError:
        raise InputError(f"{flag} {text!r} is not a list of token ids",
                         f"give them as {flag} 5,17,42") from None
    if any(i < 0 for i in ids):
        raise InputError(f"{flag} {text!r} holds a negative id", "token ids are 0 or more")
    return ids


def generate_command(
    plan: PlanArg,
    prompt_ids: Annotated[str, typer.Option(
        "--prompt-ids", help="The prompt as token ids, e.g. 5,17,42 (a tokenizer's output).",
        show_default=False)],
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", "-n", help="At most this many tokens.")] = 32,
    temperature: Annotated[float, typer.Option(
        "--temperature", help="0: greedy (the highest logit); else logits / T are sampled.")] = 0.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample among the k most likely (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(
        "--top-p", help="Sample among the fewest tokens whose probability reaches p (1: all).")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sampling's draws.")] = 0,
    stop_ids: Annotated[str | None, typer.Option(
        "--stop-ids", help="Token ids that end generation, e.g. 50256.", show_default=False)] = None,
    cluster: ClusterOpt = None,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    rank: RankOpt = 1,
    timeout: TimeoutOpt = 30.0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object: the tokens and the timings.")] = False,
) -> None:
    """Deploy a plan of a decoder and generate tokens after a prompt, streamed as they come.

    The prompt runs through the stages in one pass (prefill), then one token per step; each stage keeps
    its layers' key/value cache on its own device, so a step sends only the new token and the hidden
    state between stages. Prints each token id as it arrives, then the time to first token, the time
    per output token and tokens per second, as measured.

    Examples:

      splitinfer zoo build gpt2 -o gpt2.onnx

      splitinfer profile gpt2.onnx --cluster cluster.yaml -o profile.json

      splitinfer plan profile.json --cluster cluster.yaml -o plan.json

      splitinfer generate plan.json --prompt-ids 464,2068,7586 -n 32

      splitinfer generate plan.json --prompt-ids 464,2068 --temperature 0.8 --top-p 0.9 --seed 1
    """
    from splitinfer.generation.sampling import Sampling
    from splitinfer.runtime.generate import generate

    check_request_options(timeout, rank)
    prompt = _ids(prompt_ids, "--prompt-ids")
    if not prompt:
        raise InputError("--prompt-ids is empty", "give at least one token id, e.g. --prompt-ids 5,17,42")
    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                        stop_ids=tuple(_ids(stop_ids, "--stop-ids")), max_new_tokens=max_new_tokens)
    dep = resolve_deployment(plan, cluster, model, profile, rank)
    tokens = []
    with open_session(dep, timeout) as session:
        for token in generate(session, prompt, sampling, deadline_s=timeout):
            tokens.append(token)
            if not as_json:
                console.print(token.id, end=" ", highlight=False)
    steps = [b.at_s - a.at_s for a, b in itertools.pairwise(tokens)]
    figures = {"tokens": [t.id for t in tokens], "time_to_first_token_s": tokens[0].at_s,
               "time_per_output_token_s": statistics.median(steps) if steps else None,
               "tokens_per_s": (len(tokens) - 1) / (tokens[-1].at_s - tokens[0].at_s) if steps else None}
    if as_json:
        console.print_json(json.dumps(figures))
        return
    console.print()
    per_token = "" if not steps else (f", {figures['time_per_output_token_s'] * 1000:.2f} ms per output "
                                      f"token (median), {figures['tokens_per_s']:.1f} tokens/s")
    console.print(f"{len(tokens)} tokens: first after {tokens[0].at_s * 1000:.1f} ms{per_token}",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("generate", no_args_is_help=True)(generate_command)

