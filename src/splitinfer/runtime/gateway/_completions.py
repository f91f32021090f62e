"""``POST /v1/completions``: a decoder's tokens over HTTP, whole or streamed as server-sent events.

The shape of the usual completions API, in token ids (a tokenizer is the client's): the body is JSON,
``{"prompt": [ids], "max_tokens": 16, "temperature": 0, "top_k": 0, "top_p": 1, "seed": 0, "stop":
[ids], "stream": false}``. Answered whole: ``{"id", "object": "text_completion", "choices": [{"index":
0, "tokens": [ids], "finish_reason": "length" | "stop"}], "usage": {"prompt_tokens", "completion_tokens"}}``.
Streamed (``"stream": true``): one ``data: {"id", "choices": [{"index": 0, "token": id}]}`` event per token
as it comes, then ``data: [DONE]``; an error after the first event is sent as ``data: {"error": ...}``.
Generation runs in a thread (:func:`splitinfer.runtime.generate.generate`); the body is decoded into a
typed struct, so nothing nested is ever walked.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from splitinfer.errors import InputError
from splitinfer.generation.sampling import Sampling
from splitinfer.runtime.coordinator.session import Session
from splitinfer.runtime.generate import Token, generate

COMPLETIONS_PATH = "/v1/completions"
MAX_PROMPT_TOKENS = 1 << 16


class CompletionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a completions request (token ids)."""

    prompt: list[int]
    max_tokens: int = 16
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop: list[int] = []
    stream: bool = False


def parse_completion(body: bytes | bytearray) -> tuple[CompletionRequest, Sampling]:
    """The request and its sampling; InputError (a 400) naming what is wrong."""
    try:
        request = msgspec.json.decode(bytes(body), type=CompletionRequest)
    except msgspec.DecodeError as e:
        raise InputError(f"the body is not a completions request: {e}",
                         'send JSON like {"prompt": [464, 2068], "max_tokens": 16}') from None
    if not 0 < len(request.prompt) <= MAX_PROMPT_TOKENS:
        raise InputError(f"prompt has {len(request.prompt)} tokens",
                         f"give 1 to {MAX_PROMPT_TOKENS} token ids")
    sampling = Sampling(temperature=request.temperature, top_k=request.top_k, top_p=request.top_p,
                        seed=request.seed, stop_ids=tuple(request.stop), max_new_tokens=request.max_tokens)
    return request, sampling


def complete(session: Session, request: CompletionRequest, sampling: Sampling) -> dict[str, Any]:
    """The whole answer (blocking: run it in a thread)."""
    tokens = [t.id for t in generate(session, request.prompt, sampling)]
    return {"id": f"cmpl-{secrets.token_hex(8)}", "object": "text_completion",
            "choices": [{"index": 0, "tokens": tokens, "finish_reason": _finish(tokens, sampling)}],
            "usage": {"prompt_tokens": len(request.prompt), "completion_tokens": len(tokens)}}


async def stream(session: Session, request: CompletionRequest, sampling: Sampling,
                 line_of: Callable[[Exception], str]) -> AsyncIterator[str]:
    """Server-sent events: one per token as the generation thread yields it, then ``[DONE]``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Token | Exception | None] = asyncio.Queue()
    stop = threading.Event()
    name = f"cmpl-{secrets.token_hex(8)}"

    def run() -> None:
        tokens = generate(session, request.prompt, sampling, sequence=name)
        try:
            for token in tokens:
                loop.call_soon_threadsafe(queue.put_nowait, token)
                if stop.is_set():  # the client left: the sequence's caches are freed on close
                    break
        except Exception as e:  # handed to the event loop, sent as the stream's last event
            loop.call_soon_threadsafe(queue.put_nowait, e)
        finally:
            tokens.close()
            loop.call_soon_threadsafe(queue.put_nowait, None)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                yield f"data: {json.dumps({'error': line_of(item)})}\n\n"
                continue
            yield f"data: {json.dumps({'id': name, 'choices': [{'index': 0, 'token': item.id}]})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        stop.set()


def _finish(tokens: list[int], sampling: Sampling) -> str:
    return "stop" if tokens and tokens[-1] in sampling.stop_ids else "length"
