"""``POST /v1/completions``: a decoder's tokens over HTTP, whole or streamed as server-sent events.

The shape of the usual completions API: the body is JSON, ``{"prompt": [ids] or "text", "max_tokens": 16,
"temperature": 0, "top_k": 0, "top_p": 1, "seed": 0, "stop": [ids or strings], "stream": false}``.
Answered whole: ``{"id", "object": "text_completion", "choices": [{"index": 0, "tokens": [ids], "text",
"finish_reason": "length" | "stop"}], "usage": {"prompt_tokens", "completion_tokens"}}``. Streamed
(``"stream": true``): one ``data: {"id", "choices": [{"index": 0, "token": id, "text"}]}`` event per token
as it comes, then ``data: [DONE]``; an error after the first event is sent as ``data: {"error": ...}``.

Text needs the gateway's tokenizer (``make_app(tokenizer=)``, ``serve --tokenizer``): a string prompt is
encoded with it, and the answer's ``text`` is the generated ids decoded (streamed: each event's text is
what its token adds, '' while a character's bytes are still incomplete; text held back past the last
token comes in one more event, ``{"index": 0, "text"}`` without a token). Without one, answers are ids
alone and a string prompt is a 400. A stop id ends the generation after its token; a stop string (with a
tokenizer) ends it at the token whose text completes it, and the text ends before it (a stream holds back
text that may begin one until the next token shows it does not). Generation runs in a thread
(:func:`splitinfer.runtime.generate.generate`); the body is decoded into a typed struct, so nothing
nested is ever walked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec

from splitinfer.errors import InputError
from splitinfer.generation.sampling import Sampling
from splitinfer.generation.tokenizer import Tokenizer
from splitinfer.runtime.coordinator.session import Session
from splitinfer.runtime.generate import generate, with_text

COMPLETIONS_PATH = "/v1/completions"
MAX_PROMPT_TOKENS = 1 << 16
# Bounds the text given to the encoder before it spends time on it: 16 characters per token is far
# above what a real text averages (about 4 in English), so no prompt that fits in tokens is refused here.
MAX_PROMPT_CHARS = 16 * MAX_PROMPT_TOKENS
MAX_STOPS, MAX_STOP_CHARS = 16, 256  # stop ids and strings a request may give; a stop string's length


class CompletionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a completions request: the prompt as token ids, or as text for the gateway's tokenizer.
    :func:`parse_completion` returns it with the prompt as ids either way."""

    prompt: str | list[int]
    max_tokens: int = 16
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop: str | list[int | str] = []
    stream: bool = False


def parse_completion(body: bytes | bytearray, tokenizer: Tokenizer | None = None
                     ) -> tuple[CompletionRequest, Sampling]:
    """The request (a text prompt encoded with ``tokenizer``; ``stop`` left holding its strings, its ids
    moved to the sampling) and its sampling; InputError (a 400) naming what is wrong. Encoding a long text
    takes CPU time: call it off the event loop."""
    try:
        request = msgspec.json.decode(body, type=CompletionRequest)  # a bytearray as it is: no copy
    except msgspec.DecodeError as e:
        raise InputError(f"the body is not a completions request: {e}",
                         'send JSON like {"prompt": [464, 2068], "max_tokens": 16}') from None
    if isinstance(request.prompt, str):
        request.prompt = _encode(request.prompt, tokenizer)
    if not 0 < len(request.prompt) <= MAX_PROMPT_TOKENS:
        raise InputError(f"prompt has {len(request.prompt)} tokens",
                         f"give 1 to {MAX_PROMPT_TOKENS} token ids")
    stops = [request.stop] if isinstance(request.stop, str) else request.stop
    if len(stops) > MAX_STOPS:
        raise InputError(f"stop has {len(stops)} entries", f"give at most {MAX_STOPS} stop ids and strings")
    request.stop = [s for s in stops if isinstance(s, str)]
    if request.stop and tokenizer is None:
        raise InputError("stop has strings and this gateway has no tokenizer",
                         "send stop as token ids, or start serve with --tokenizer tokenizer.json")
    if any(not 0 < len(s) <= MAX_STOP_CHARS for s in request.stop):
        raise InputError("a stop string is empty or too long", f"give 1 to {MAX_STOP_CHARS} characters each")
    sampling = Sampling(temperature=request.temperature, top_k=request.top_k, top_p=request.top_p,
                        seed=request.seed, stop_ids=tuple(s for s in stops if isinstance(s, int)),
                        max_new_tokens=request.max_tokens)
    return request, sampling


def _encode(text: str, tokenizer: Tokenizer | None) -> list[int]:
    if tokenizer is None:
        raise InputError("the prompt is text and this gateway has no tokenizer",
                         "send the prompt as token ids, or start serve with --tokenizer tokenizer.json")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt has {len(text)} characters", f"send at most {MAX_PROMPT_CHARS}")
    return tokenizer.encode(text)


def complete(session: Session, request: CompletionRequest, sampling: Sampling,
             tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """The whole answer (blocking: run it in a thread); with a tokenizer, the choice has its text."""
    detokenizer = tokenizer.detokenizer(request.stop) if tokenizer is not None else None
    tokens, pieces = [], []
    with contextlib.closing(generate(session, request.prompt, sampling)) as generated:
        for token, text in with_text(generated, detokenizer):
            if token is not None:
                tokens.append(token.id)
            if text is not None:
                pieces.append(text)
    choice: dict[str, Any] = {"index": 0, "tokens": tokens, "finish_reason": _finish(tokens, sampling)}
    if detokenizer is not None:
        choice["text"] = "".join(pieces)
        choice["finish_reason"] = "stop" if detokenizer.stopped else choice["finish_reason"]
    return {"id": f"cmpl-{secrets.token_hex(8)}", "object": "text_completion", "choices": [choice],
            "usage": {"prompt_tokens": len(request.prompt), "completion_tokens": len(tokens)}}


async def stream(session: Session, request: CompletionRequest, sampling: Sampling,
                 line_of: Callable[[Exception], str], tokenizer: Tokenizer | None = None
                 ) -> AsyncIterator[str]:
    """Server-sent events: one per token as the generation thread yields it (with a tokenizer, the text
    it adds), then ``[DONE]``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | Exception | None] = asyncio.Queue()
    stop = threading.Event()
    name = f"cmpl-{secrets.token_hex(8)}"

    def run() -> None:
        tokens = generate(session, request.prompt, sampling, sequence=name)
        # Decoded in this thread, not on the event loop: the choice is ready when it is queued.
        detokenizer = tokenizer.detokenizer(request.stop) if tokenizer is not None else None
        try:
            for token, text in with_text(tokens, detokenizer):
                if token is None:  # the text held back to the end
                    if text and not stop.is_set():
                        loop.call_soon_threadsafe(queue.put_nowait, {"index": 0, "text": text})
                    break
                choice: dict[str, Any] = {"index": 0, "token": token.id}
                if text is not None:
                    choice["text"] = text
                loop.call_soon_threadsafe(queue.put_nowait, choice)
                if stop.is_set():
                    break  # the client left: the sequence's caches are freed on close
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
            yield f"data: {json.dumps({'id': name, 'choices': [item]})}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        stop.set()


def _finish(tokens: list[int], sampling: Sampling) -> str:
    return "stop" if tokens and tokens[-1] in sampling.stop_ids else "length"
