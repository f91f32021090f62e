"""The tokenizer wrapper: a real tokenizer.json round trips, streams text deltas that never split a
character, refuses a bad file or a missing package in one line, and must fit the model's logits."""

from __future__ import annotations

import sys

import pytest
from helpers.text import EOS, SMALL_VOCAB, save_tokenizer

from splitinfer import zoo
from splitinfer.errors import InputError
from splitinfer.generation.tokenizer import REPLACEMENT, StopText, check_vocab, load_tokenizer, logits_width
from splitinfer.types import TensorSpec

TEXT = "karé 🦊 the quick brown fox 日本 sü 🙂!"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(save_tokenizer(tmp_path_factory.mktemp("tok")))


def _stream(tok, ids):
    detok = tok.detokenizer()
    deltas = [detok.push(i) for i in ids]
    return deltas, detok.flush()


def test_a_text_round_trips_and_special_tokens_are_left_out(tok):
    ids = tok.encode(TEXT)
    assert ids and all(0 <= i < SMALL_VOCAB for i in ids)
    assert tok.decode(ids) == TEXT
    assert tok.decode([0, *ids, 0]) == TEXT  # id 0 is the end-of-text token
    assert tok.vocab_size == SMALL_VOCAB and tok.encode(EOS) == [0]


def test_streamed_deltas_join_into_the_whole_decode_and_never_split_a_character(tok):
    ids = tok.encode(TEXT)
    deltas, rest = _stream(tok, ids)
    assert "".join(deltas) + rest == tok.decode(ids) == TEXT and rest == ""
    assert not any(REPLACEMENT in d for d in deltas)
    # The fox is three byte tokens (the corpus never has it): its first two give no text, the third all of it.
    fox = tok.encode("🦊")
    assert len(fox) > 1
    deltas, _ = _stream(tok, fox)
    assert deltas == [""] * (len(fox) - 1) + ["🦊"]


def test_every_id_of_the_vocabulary_streams_as_its_whole_decode(tok):
    # Random ids, as a seeded decoder makes them: bytes that are no character, special tokens, merges.
    ids = [(i * 7919 + 13) % SMALL_VOCAB for i in range(2000)]
    for chunk in (ids[:1], ids[:50], ids):
        deltas, rest = _stream(tok, chunk)
        assert "".join(deltas) + rest == tok.decode(chunk)


def test_each_push_decodes_a_window_not_every_id_so_far(tok, monkeypatch):
    sizes = []
    decode = tok.decode
    monkeypatch.setattr(tok, "decode", lambda ids: sizes.append(len(ids)) or decode(ids))
    deltas, rest = _stream(tok, tok.encode(TEXT * 50))
    assert "".join(deltas) + rest == TEXT * 50 and len(sizes) > 500
    assert max(sizes) <= 8  # the ids since the last text but one: a few, however long the text


def test_an_incomplete_character_at_the_end_comes_with_flush(tok):
    fox = tok.encode("🦊")
    deltas, rest = _stream(tok, fox[:-1])
    assert deltas == [""] * (len(fox) - 1) and rest == tok.decode(fox[:-1]) and REPLACEMENT in rest


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read the tokenizer"),
    (b"{}", "is not a tokenizer.json"),
    (b"\xff\xfe not text", "is not a tokenizer.json"),
    (b'{"model": {"type": "nothing"}}', "is not a tokenizer.json"),
])
def test_a_bad_file_is_one_input_error_naming_it(tmp_path, content, says):
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        load_tokenizer(path)
    line = caught.value.line()
    assert says in line and str(path) in line and "give the tokenizer.json" in line and "\n" not in line


def test_without_the_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    path = save_tokenizer(tmp_path)
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers now raises ImportError
    with pytest.raises(InputError, match=r"needs the tokenizers package.*pip install 'splitinfer\[text\]'"):
        load_tokenizer(path)


def test_the_vocabulary_must_fit_the_models_logits(tmp_path, tok):
    width = logits_width([TensorSpec(o.name, "float32", tuple(d.dim_value or -1 for d in
                                                           o.type.tensor_type.shape.dim))
                          for o in zoo.build_small("gpt2").graph.output])
    assert width == SMALL_VOCAB
    check_vocab(tok, width)  # as many ids as logits
    check_vocab(tok, width + 24)  # a model's vocabulary padded past the tokenizer's
    check_vocab(tok, None)  # unknown: nothing to check
    big = load_tokenizer(save_tokenizer(tmp_path, SMALL_VOCAB + 1))
    with pytest.raises(InputError, match="has 1001 token ids, the model's logits cover 1000"):
        check_vocab(big, width)
    assert logits_width([TensorSpec("logits", "float32", (1, -1, -1))]) is None
    assert logits_width([TensorSpec("y", "float32", (1, 10))]) is None and logits_width(None) is None


@pytest.mark.parametrize("deltas, stops, sent, stopped", [
    (["Hello", " wor", "ld\n", "\nmore"], ["\n\n"], ["Hello", " wor", "ld", ""], True),  # "\n" held, then cut
    (["ab", "c"], ["x"], ["ab", "c"], False),  # nothing like a stop: all goes at once
    (["a<", "/s", "> tail"], ["</s>"], ["a", "", ""], True),  # a stop split over three deltas
    (["a<", "b"], ["</s>"], ["a", "<b"], False),  # what began a stop string, then did not: sent late
    (["one END two STOP"], ["STOP", "END"], ["one "], True),  # the first to come, of several
    (["x"], [], ["x"], False),
])
def test_stop_strings_cut_the_text_and_hold_back_what_may_begin_one(deltas, stops, sent, stopped):
    cut = StopText(stops)
    assert [cut.push(d) for d in deltas] == sent and cut.stopped is stopped
    if stopped:
        assert cut.push("after") == ""  # nothing after a stop string


def test_text_held_back_at_the_end_comes_with_flush_unless_a_stop_came():
    cut = StopText(["###"])
    assert cut.push("done #") == "done " and cut.flush() == "#"
    stopped = StopText(["##"])
    assert stopped.push("a##b") == "a" and stopped.flush() == ""
