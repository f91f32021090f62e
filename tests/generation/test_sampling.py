"""Sampling: greedy, temperature, top-k, top-p, seeds, stop ids, and every value checked."""

from __future__ import annotations

import numpy as np
import pytest

from splitinfer.errors import InputError
from splitinfer.generation import Sampling, generate, next_token

LOGITS = np.array([1.0, 3.0, 2.0, 3.0, -1.0, 0.5], dtype=np.float32)


def draws(sampling: Sampling, logits: np.ndarray = LOGITS, n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(sampling.seed)
    return np.array([next_token(logits, sampling, rng) for _ in range(n)])


def test_greedy_is_the_highest_logit_and_the_lowest_id_of_a_tie():
    rng = np.random.default_rng(0)
    assert next_token(LOGITS, Sampling(), rng) == 1
    state = rng.bit_generator.state
    next_token(LOGITS, Sampling(), rng)
    assert rng.bit_generator.state == state  # greedy draws nothing


def test_top_k_1_is_greedy_at_any_temperature():
    assert set(draws(Sampling(temperature=5.0, top_k=1), n=200)) == {1}


def test_top_k_keeps_the_k_highest_and_top_p_the_fewest_reaching_p():
    assert set(draws(Sampling(temperature=1.0, top_k=3))) == {1, 2, 3}  # 3 and 1 tie: both kept
    # Probabilities at temperature 1: 1 and 3 hold 0.384 each, 2 holds 0.141: p = 0.76 needs 1 and 3,
    # p = 0.8 adds 2; 0.3 is reached by token 1 alone (the lower id of the tie).
    assert set(draws(Sampling(temperature=1.0, top_p=0.76))) == {1, 3}
    assert set(draws(Sampling(temperature=1.0, top_p=0.8))) == {1, 2, 3}
    assert set(draws(Sampling(temperature=1.0, top_p=0.3))) == {1}
    assert set(draws(Sampling(temperature=1.0, top_k=2, top_p=0.999))) == {1, 3}


def test_draws_follow_the_tempered_probabilities():
    for temperature in (0.5, 1.0, 2.0):
        counts = np.bincount(draws(Sampling(temperature=temperature, seed=3), n=20000), minlength=6)
        probs = np.exp(LOGITS / temperature) / np.exp(LOGITS / temperature).sum()
        np.testing.assert_allclose(counts / counts.sum(), probs, atol=0.015)


def test_a_seed_repeats_and_another_differs():
    sampling = Sampling(temperature=1.5, seed=7)
    assert np.array_equal(draws(sampling), draws(sampling))
    assert not np.array_equal(draws(sampling), draws(Sampling(temperature=1.5, seed=8)))


def test_a_tiny_temperature_does_not_overflow():
    logits = np.array([10.0, 9.0, 80.0], dtype=np.float32)
    assert set(draws(Sampling(temperature=1e-4), logits, n=50)) == {2}


class Model:
    """A fake ``run_step``: logits that favour (last token + 1), remembering what it was fed."""

    def __init__(self, vocab: int = 10) -> None:
        self.vocab, self.fed = vocab, []

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        assert tokens.dtype == np.int64 and tokens.shape[0] == 1
        self.fed.append(tokens[0].tolist())
        logits = np.zeros((1, tokens.shape[1], self.vocab), np.float32)
        logits[0, -1, (tokens[0, -1] + 1) % self.vocab] = 5.0
        return logits


def test_generate_prefills_then_feeds_one_token_per_step():
    model = Model()
    out = list(generate(model, [3, 4], Sampling(max_new_tokens=4)))
    assert [t for t, _ in out] == [5, 6, 7, 8]
    assert model.fed == [[3, 4], [5], [6], [7]]  # the last token is not fed on
    assert out[0][1].shape == (10,) and out[0][1][5] == 5.0


def test_a_stop_id_ends_generation_and_is_yielded():
    model = Model()
    tokens = [t for t, _ in generate(model, np.array([[1]]), Sampling(stop_ids=(4, 9), max_new_tokens=50))]
    assert tokens == [2, 3, 4] and model.fed == [[1], [2], [3]]
    assert Sampling(stop_ids=[2]).stop_ids == (2,)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"temperature": -0.1}, "Sampling.temperature"),
    ({"temperature": float("nan")}, "Sampling.temperature"),
    ({"top_k": 1.5}, "Sampling.top_k"),
    ({"top_k": -1}, "Sampling.top_k"),
    ({"top_p": 0}, "Sampling.top_p"),
    ({"top_p": 1.01}, "Sampling.top_p"),
    ({"seed": -1}, "Sampling.seed"),
    ({"seed": True}, "Sampling.seed"),
    ({"max_new_tokens": 0}, "Sampling.max_new_tokens"),
    ({"stop_ids": 2}, "Sampling.stop_ids"),
    ({"stop_ids": (1, -2)}, r"Sampling.stop_ids\[1\]"),
    ({"stop_ids": "2"}, "Sampling.stop_ids is '2'"),
])
def test_bad_values_raise_one_line_naming_the_field(kwargs, field):
    with pytest.raises(InputError, match=field) as caught:
        Sampling(**kwargs)
    assert "\n" not in str(caught.value)


def test_bad_logits_and_prompts_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="1-D"):
        next_token(np.zeros((2, 3), np.float32), Sampling(), rng)
    with pytest.raises(InputError, match="NaN"):
        next_token(np.array([0.0, np.nan], np.float32), Sampling(temperature=1.0), rng)
    for prompt in ([], [[1, 2], [3, 4]], [1.5], [-1]):
        with pytest.raises(InputError, match="prompt_ids"):
            next(generate(Model(), prompt))
    with pytest.raises(InputError, match="sampling"):
        next(generate(Model(), [1], {"temperature": 1}))


def _sorting_everything(row, sampling, rng):
    """next_token as first written: a stable sort of the whole row, then top-k, top-p and the draw."""
    scaled = np.asarray(row, np.float64) / sampling.temperature
    order = np.argsort(-scaled, kind="stable")
    if 0 < sampling.top_k < order.size:
        order = order[:sampling.top_k]
    probs = np.exp(scaled[order] - scaled[order[0]])
    probs /= probs.sum()
    if sampling.top_p < 1:
        keep = int(np.searchsorted(np.cumsum(probs), sampling.top_p - 1e-12)) + 1
        order, probs = order[:keep], probs[:keep]
    cumulative = np.cumsum(probs)
    return int(order[min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")),
                         order.size - 1)])


@pytest.mark.parametrize(("settings", "spread"), [(dict(top_k=50), 3.0), (dict(top_k=3, top_p=0.8), 3.0),
                                                  (dict(top_p=0.9), 3.0), (dict(top_p=0.9), 0.3)])
def test_top_k_and_top_p_draw_what_a_sort_of_the_whole_row_draws(settings, spread):
    """Only the highest scores are sorted; the tokens drawn are those a full stable sort gives, ties
    (rounded logits) included, and a nucleus wider than the first candidates (flat logits) too."""
    from splitinfer.generation.sampling import next_token

    sampling = Sampling(temperature=0.7, seed=0, **settings)
    data = np.random.default_rng(1)
    for _ in range(30):
        row = np.round(data.normal(0, spread, 5000), 1).astype(np.float32)  # many ties
        fast, full = np.random.default_rng(7), np.random.default_rng(7)
        assert [next_token(row, sampling, fast) for _ in range(5)] == \
            [_sorting_everything(row, sampling, full) for _ in range(5)]
