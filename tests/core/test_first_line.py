"""An exception's first line, as error messages quote it: whole words, never cut mid-word."""

from __future__ import annotations

from splitinfer.errors import FIRST_LINE_MAX, first_line


def test_a_long_line_is_cut_after_a_whole_word():
    text = " ".join(["Non-zero status code returned while running LSTM node. Name:'lstm'"] * 8)
    line = first_line(RuntimeError(text + "\nsecond line"))
    assert line.endswith(" ...") and len(line) <= FIRST_LINE_MAX + 4
    assert text.startswith(line[:-4]) and text[len(line) - 4] == " "  # the next character was a space


def test_short_lines_and_empty_messages_are_kept():
    assert first_line(ValueError("bad value\nmore")) == "bad value"
    assert first_line(ValueError("")) == "ValueError"
    long_word = "x" * 500  # no space to cut at: cut at the limit
    assert first_line(ValueError(long_word)) == "x" * FIRST_LINE_MAX + " ..."
