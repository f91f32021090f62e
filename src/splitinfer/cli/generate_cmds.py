"""`splitinfer generate`: a decoder's tokens through a deployed plan, streamed as they come (issue 20)."""

from __future__ import annotations

import contextlib
import itertools
import json
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from splitinfer.generation.tokenizer import Tokenizer


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


def read_tokenizer(path: Path | None) -> Tokenizer | None:
    """--tokenizer loaded, before anything binds or deploys (a bad file is one line)."""
    from splitinfer.generation.tokenizer import load_tokenizer

    if path is None:
        return None
    try:
        return load_tokenizer(path)
    except InputError as e:
        raise InputError(f"--tokenizer: {e.problem}", e.fix) from None


def _prompt(prompt: str | None, prompt_ids: str | None, tokenizer_path: Path | None
            ) -> tuple[list[int], Tokenizer | None]:
    """The prompt's token ids from exactly one of --prompt (encoded with --tokenizer) and --prompt-ids,
    and the tokenizer (loaded before anything deploys: a bad file is one line)."""
    if prompt is None and prompt_ids is None:
        raise InputError("no prompt given",
                         "give --prompt TEXT with --tokenizer FILE, or --prompt-ids 5,17,42")
    if prompt is not None and prompt_ids is not None:
        raise InputError("--prompt and --prompt-ids both give the prompt", "give one of them")
    if prompt is not None and tokenizer_path is None:
        raise InputError("--prompt is text and no --tokenizer turns it into token ids",
                         "give --tokenizer tokenizer.json (the model's), or the ids as --prompt-ids 5,17,42")
    tokenizer = read_tokenizer(tokenizer_path)
    if tokenizer is not None and prompt is not None:
        ids = tokenizer.encode(prompt)
        if not ids:
            raise InputError(f"--prompt {prompt!r} encodes to no tokens", "give some text")
        return ids, tokenizer
    ids = _ids(prompt_ids, "--prompt-ids")
    if not ids:
        raise InputError("--prompt-ids is empty", "give at least one token id, e.g. --prompt-ids 5,17,42")
    return ids, tokenizer


def generate_command(
    plan: PlanArg,
    prompt_ids: Annotated[str | None, typer.Option(
        "--prompt-ids", help="The prompt as token ids, e.g. 5,17,42 (a tokenizer's output); or --prompt.",
        show_default=False)] = None,
    prompt: Annotated[str | None, typer.Option(
        "--prompt", metavar="TEXT", help="The prompt as text, encoded with --tokenizer; or --prompt-ids.",
        show_default=False)] = None,
    tokenizer_path: Annotated[Path | None, typer.Option(
        "--tokenizer", metavar="FILE", help="The model's tokenizer.json (pip install 'splitinfer\\[text]'): "
                                            "encodes --prompt, and the tokens are printed as text.",
        show_default=False)] = None,
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
    stops: Annotated[list[str] | None, typer.Option(
        "--stop", metavar="TEXT", help="Text that ends generation, with --tokenizer (repeat for several): "
                                       "the text ends before it.", show_default=False)] = None,
    cluster: ClusterOpt = None,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    rank: RankOpt = 1,
    timeout: TimeoutOpt = 30.0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object: the token ids (with --tokenizer, the prompt's ids and the text) "
                       "and the timings.")] = False,
) -> None:
    """Deploy a plan of a decoder and generate tokens after a prompt, streamed as they come.

    The prompt runs through the stages in one pass (prefill), then one token per step; each stage keeps
    its layers' key/value cache on its own device, so a step sends only the new token and the hidden
    state between stages. Prints each token id as it arrives (with --tokenizer, the text), then the time
    to first token, the time per output token and tokens per second, as measured. --json gives the token
    ids (and with --tokenizer the text) with the timings.

    Examples:

      splitinfer zoo build gpt2 -o gpt2.onnx

      splitinfer profile gpt2.onnx --cluster cluster.yaml -o profile.json

      splitinfer plan profile.json --cluster cluster.yaml -o plan.json

      splitinfer generate plan.json --prompt-ids 464,2068,7586 -n 32

      splitinfer generate plan.json --prompt-ids 464,2068 --temperature 0.8 --top-p 0.9 --seed 1

      splitinfer generate plan.json --prompt "The quick brown fox" --tokenizer tokenizer.json -n 32

      splitinfer generate plan.json --prompt "Q: why?" --tokenizer tokenizer.json --stop "Q:"
    """
    from splitinfer.generation.sampling import Sampling
    from splitinfer.runtime.generate import generate, with_text

    check_request_options(timeout, rank)
    ids, tokenizer = _prompt(prompt, prompt_ids, tokenizer_path)
    _check_stops(stops or [], tokenizer)
    sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                        stop_ids=tuple(_ids(stop_ids, "--stop-ids")), max_new_tokens=max_new_tokens)
    dep = resolve_deployment(plan, cluster, model, profile, rank)
    if tokenizer is not None:  # before a worker starts: a tokenizer of another model is one line
        tokenizer.check_fits(dep.model.outputs)
    detokenizer = tokenizer.detokenizer(stops or ()) if tokenizer is not None else None
    tokens, texts = [], []
    with open_session(dep, timeout) as session, \
            contextlib.closing(generate(session, ids, sampling, deadline_s=timeout)) as generated:
        # the text as it comes: a character split over tokens once it is whole, none past a --stop
        for token, text in with_text(generated, detokenizer):
            if token is not None:
                tokens.append(token)
            if text is not None:
                texts.append(text)
            if as_json:
                continue
            if text is not None:
                _print_text(text)
            elif token is not None:
                console.print(token.id, end=" ", highlight=False)
    steps = [b.at_s - a.at_s for a, b in itertools.pairwise(tokens)]
    figures = {"tokens": [t.id for t in tokens], "time_to_first_token_s": tokens[0].at_s,
               "time_per_output_token_s": statistics.median(steps) if steps else None,
               "tokens_per_s": (len(tokens) - 1) / (tokens[-1].at_s - tokens[0].at_s) if steps else None}
    if tokenizer is not None:
        figures = {"prompt_ids": ids, "text": "".join(texts), **figures}
    if as_json:
        console.print_json(json.dumps(figures))
        return
    console.print()
    per_token = "" if not steps else (f", {figures['time_per_output_token_s'] * 1000:.2f} ms per output "
                                      f"token (median), {figures['tokens_per_s']:.1f} tokens/s")
    console.print(f"{len(tokens)} tokens: first after {tokens[0].at_s * 1000:.1f} ms{per_token}",
                  highlight=False)


def _check_stops(stops: list[str], tokenizer: Tokenizer | None) -> None:
    """--stop needs --tokenizer (the tokens' text is what it is looked for in) and some text."""
    if stops and tokenizer is None:
        raise InputError("--stop is text and no --tokenizer gives the tokens' text",
                         "give --tokenizer tokenizer.json (the model's), or the ids as --stop-ids 50256")
    if any(not s for s in stops):
        raise InputError("--stop is empty", "give the text that ends generation, e.g. --stop 'Q:'")


def _print_text(text: str) -> None:
    # Written as it is, not through rich: no markup ([brackets]), emoji codes (:smile:) or wrapping
    # applied to a model's text; flushed, so that it shows as it comes.
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("generate", no_args_is_help=True)(generate_command)

