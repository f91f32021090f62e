"""read_labels (text and JSON label files) and top_k (a classifier's best classes, named)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splitinfer.data import read_labels, top_k
from splitinfer.errors import InputError


@pytest.mark.parametrize(("name", "content"), [
    ("labels.txt", "tench\ngoldfish\ngreat white shark\n\n\n"),
    ("labels.txt", "\ufefftench\r\ngoldfish\r\n  great white shark  "),  # BOM, CRLF, spaces
    ("labels.json", json.dumps(["tench", "goldfish", "great white shark"])),
    ("labels", json.dumps({"2": "great white shark", "0": "tench", "1": "goldfish"})),
    # Keras' imagenet_class_index.json: [WordNet id, name]
    ("imagenet_class_index.json", json.dumps({"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"],
                                               "2": ["n01484850", "great white shark"]})),
])
def test_every_form_gives_the_names_by_index(tmp_path, name, content):
    (tmp_path / name).write_text(content, encoding="utf-8")
    assert read_labels(tmp_path / name) == ["tench", "goldfish", "great white shark"]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("l.txt", "tench\n\ngoldfish\n", "blank line (line 2)"),
    ("l.txt", "\n\n", "has no labels"),
    ("l.json", "[]", "has no labels"),
    ("l.json", '{"0": "tench", "2": "shark"}', "no label for index 1"),
    ("l.json", '{"zero": "tench"}', "key 'zero', not a class index"),
    ("l.json", '{"-1": "tench"}', "key '-1', not a class index"),
    ("l.json", '["tench", 7]', "item 1 is 7, not a name"),
    ("l.json", '["tench", ""]', "item 1 is '', not a name"),
    ("l.json", "42", "holds a JSON int"),
    ("l.json", '["tench",', "not valid JSON"),
])
def test_a_bad_label_file_is_one_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError) as err:
        read_labels(tmp_path / name)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_or_binary_label_file(tmp_path):
    with pytest.raises(InputError, match=r"cannot read label file .*nope\.txt"):
        read_labels(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InputError, match="not UTF-8 text"):
        read_labels(tmp_path / "bin.txt")


def test_top_k_is_highest_first_and_ties_go_to_the_lower_index():
    scores = np.array([0.1, 0.5, 0.2, 0.5], np.float32)
    assert top_k(scores, 3, ["a", "b", "c", "d"]) == [("b", 0.5), ("d", 0.5), ("c", pytest.approx(0.2))]
    assert top_k(scores[None, :], 1, list("abcd")) == [("b", 0.5)]  # one sample's row of a batch
    assert top_k([3, 1, 2], 2) == [("0", 3.0), ("2", 2.0)]  # no labels: the indices
    assert [name for name, _ in top_k(scores, 10)] == ["1", "3", "2", "0"]  # k above the classes: all
    assert top_k(np.array([np.nan, -1.0, 0.0]), 3)[-1][0] == "0"  # NaN last, never the best


@pytest.mark.parametrize(("scores", "k", "labels", "message"), [
    (np.zeros(1001), 5, ["x"] * 1000, "1001 classes but there are 1000 labels"),
    (np.zeros((2, 10)), 5, None, "one sample's class scores"),
    (np.zeros(0), 5, None, "one sample's class scores"),
    (np.array(["a", "b"]), 1, None, "one sample's class scores"),
    (np.zeros(10), 0, None, "top-k is 0"),
])
def test_top_k_refuses_what_it_cannot_name(scores, k, labels, message):
    with pytest.raises(InputError, match=message):
        top_k(scores, k, labels)
