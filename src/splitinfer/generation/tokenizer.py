"""Text in and out of a decoder: a Hugging Face ``tokenizer.json`` through the ``tokenizers`` library.

The library is optional (``pip install 'splitinfer[text]'``) and imported only when a tokenizer is
loaded, so token ids keep working without it. :func:`load_tokenizer` reads the file once;
:class:`Tokenizer` encodes a prompt and decodes ids; :meth:`Tokenizer.detokenizer` gives the text of a
stream of ids as it grows, never cutting a character that spans several tokens (a byte-level BPE splits
'é' or an emoji into byte tokens); :func:`check_vocab` refuses a tokenizer whose ids a model's logits do
not cover.

>>> tok = load_tokenizer("tokenizer.json")
>>> ids = tok.encode("The quick brown fox")
>>> detok = tok.detokenizer()
>>> text = "".join(detok.push(i) for i in ids) + detok.flush()   # == tok.decode(ids)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from splitinfer.errors import InputError, read_file
from splitinfer.types import TensorSpec

REPLACEMENT = "\ufffd"  # what decoding puts where a character's bytes are not all there yet
LOGITS = "logits"
_FIX_FILE = "give the tokenizer.json the model was trained with (Hugging Face's format)"


class Tokenizer:
    """A loaded tokenizer: ``encode(text) -> ids``, ``decode(ids) -> text``, ``vocab_size`` (the
    largest id it knows, plus one) and ``path``. Safe to share between threads."""

    def __init__(self, backend: Any, path: str) -> None:
        self._backend = backend
        self.path = path
        # The Python binding checks its borrows at run time: two threads inside one tokenizer object can
        # raise "Already borrowed". Calls are short (a prompt, a few ids), so one at a time costs little.
        self._lock = threading.Lock()
        vocab = backend.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values(), default=-1) + 1

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text``, with the special tokens the tokenizer adds to a prompt (a BOS)."""
        if not isinstance(text, str):
            raise InputError(f"the text to encode is {type(text).__name__}", "give a string")
        with self._lock:
            return list(self._backend.encode(text).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; special tokens (an EOS) are left out, ids the tokenizer does not know too."""
        ids = [int(i) for i in ids]
        with self._lock:
            return self._backend.decode(ids, skip_special_tokens=True)

    def check_fits(self, outputs: Sequence[TensorSpec] | None) -> None:
        """InputError when its ids pass the logits among a model's ``outputs`` (:func:`check_vocab`)."""
        check_vocab(self, logits_width(outputs))

    def detokenizer(self, stops: Sequence[str] = ()) -> Detokenizer:
        """A new :class:`Detokenizer` (one per sequence), its text cut at the first of ``stops``."""
        return Detokenizer(self, stops)

    def __repr__(self) -> str:
        return f"Tokenizer({self.path!r}, vocab_size={self.vocab_size})"


class Detokenizer:
    """The text of a growing list of ids, as deltas: :meth:`push` each id, then :meth:`flush` once.

    The deltas joined equal ``decode(all ids)``, up to the first of ``stops`` (:class:`StopText`: then
    :attr:`stopped`, and no text after). A delta is held back while the text ends in U+FFFD (the last tokens
    hold part of a character's bytes) and comes whole once the character is complete. Each push decodes
    only the ids since the last delta but one (a window; not every id so far): a decoder that treats the
    first token of a text differently (dropping a leading space) sees it in context.
    """

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # where the decoded window starts
        self._read = 0  # ids up to here have had their text sent
        self._cut = StopText(stops)

    @property
    def stopped(self) -> bool:
        """A stop string came: the text ended before it."""
        return self._cut.stopped

    def push(self, token_id: int) -> str:
        """The new text that ``token_id`` completes ('' while a character is still incomplete)."""
        self._ids.append(int(token_id))
        return self._cut.push(self._delta(final=False))

    def flush(self) -> str:
        """Text held back at the end (a character never completed comes as U+FFFD, as decode gives it)."""
        return self._cut.push(self._delta(final=True)) + self._cut.flush()

    def _delta(self, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        before = self._tokenizer.decode(self._ids[self._prefix:self._read])
        after = self._tokenizer.decode(self._ids[self._prefix:])
        if not final and (len(after) <= len(before) or after.endswith(REPLACEMENT)):
            return ""  # nothing new yet (an unknown or special id), or a character not complete
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before):]


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer in ``path`` (a ``tokenizer.json``); :class:`InputError` naming the path and the fix
    when the file is missing or is not one, or when the ``tokenizers`` package is not installed."""
    try:
        from tokenizers import Tokenizer as Backend
    except ImportError:
        raise InputError("reading a tokenizer needs the tokenizers package, which is not installed",
                         "pip install 'splitinfer[text]'") from None
    data = read_file(path, "the tokenizer", _FIX_FILE, error=InputError)
    try:
        backend = Backend.from_str(data.decode("utf-8"))
    except Exception as e:  # the binding raises plain Exception for a file it cannot read
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InputError(f"{path} is not a tokenizer.json ({reason})", _FIX_FILE) from None
    return Tokenizer(backend, str(path))


def logits_width(outputs: Sequence[TensorSpec] | None) -> int | None:
    """The vocabulary a decoder's ``logits`` output covers (its last dim), None when it is not known."""
    spec = next((s for s in outputs or () if s.name == LOGITS), None)
    return spec.shape[-1] if spec is not None and spec.shape and spec.shape[-1] > 0 else None


def check_vocab(tokenizer: Tokenizer, width: int | None) -> None:
    """InputError when the tokenizer has ids past the model's logits (``width``; None: not known).

    A model may have more logits than the tokenizer has ids (a vocabulary padded to a round size), never
    fewer: an id past them would be fed to an embedding that has no row for it.
    """
    if width is not None and tokenizer.vocab_size > width:
        raise InputError(f"the tokenizer {tokenizer.path} has {tokenizer.vocab_size} token ids, the model's "
                         f"logits cover {width}",
                         "give the tokenizer.json of this model (the one it was trained with)")


class StopText:
    """Text deltas cut at the first stop string: :meth:`push` each delta, then :meth:`flush` once.

    What it returns never holds a stop string nor anything after one; text that could be the start of one
    is held back until the next delta shows it is not (so a stream never sends text it must take back).
    After a stop string, :attr:`stopped` is true and everything else is dropped. The returned pieces joined
    equal the whole text up to the first stop string (all of it when none comes).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def push(self, delta: str) -> str:
        """What may be sent now of the held text and ``delta``."""
        if self.stopped:
            return ""
        text = self._held + delta
        cut = min((i for s in self._stops if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._held = True, ""
            return text[:cut]
        # the longest end of the text that begins a stop string waits for the next delta
        keep = max((k for s in self._stops for k in range(min(len(s) - 1, len(text)), 0, -1)
                    if text.endswith(s[:k])), default=0)
        self._held = text[len(text) - keep:]
        return text[:len(text) - keep]

    def flush(self) -> str:
        """The text held back at the end (it began a stop string that never came)."""
        rest, self._held = ("" if self.stopped else self._held), ""
        return rest
