"""Byte n-gram baselines: exact probabilities on a hand-made text."""

from __future__ import annotations

import math

import numpy as np
import pytest

from federated.tasks.ngram import BOS_CONTEXT, evaluate_ngram, fit_bigram, fit_unigram

A, B, C = ord("a"), ord("b"), ord("c")


def test_unigram_is_add_one_over_the_predicted_bytes() -> None:
    unigram = fit_unigram(["ab", "a", ""], seq_len=64)  # predicted bytes: a, b, a
    assert unigram[A] == pytest.approx(3 / 259) and unigram[B] == pytest.approx(2 / 259)
    assert unigram[C] == pytest.approx(1 / 259) and unigram.sum() == pytest.approx(1.0)


def test_bigram_is_smoothed_towards_the_unigram_with_bos_as_first_context() -> None:
    bigram = fit_bigram(["ab", "a"], seq_len=64, strength=2.0)
    assert bigram[BOS_CONTEXT, A] == pytest.approx((2 + 2 * 3 / 259) / (2 + 2))
    assert bigram[A, B] == pytest.approx((1 + 2 * 2 / 259) / (1 + 2))
    assert bigram[A, A] == pytest.approx((2 * 3 / 259) / (1 + 2))
    assert bigram[C, B] == pytest.approx(2 / 259)  # unseen context: the unigram
    assert np.allclose(bigram.sum(axis=1), 1.0)


def test_evaluation_is_nats_per_byte_and_argmax_accuracy_on_truncated_texts() -> None:
    bigram = fit_bigram(["ab", "a"], seq_len=64, strength=1.0)
    result = evaluate_ngram(bigram, ["abc"], seq_len=2)  # "c" lies past seq_len: not predicted
    expected = -(math.log((2 + 3 / 259) / 3) + math.log((1 + 2 / 259) / 2)) / 2
    assert result == {"loss": pytest.approx(expected), "accuracy": 1.0}
    unigram = fit_unigram(["ab", "a"], seq_len=64)
    assert evaluate_ngram(unigram, ["ba"], seq_len=64) == {
        "loss": pytest.approx(-(math.log(2 / 259) + math.log(3 / 259)) / 2), "accuracy": 0.5}


def test_bigram_strength_must_be_positive() -> None:
    with pytest.raises(ValueError, match="strength"):
        fit_bigram(["ab"], seq_len=8, strength=0.0)


def test_the_baselines_score_exactly_the_bytes_the_model_is_scored_on() -> None:
    from federated.tasks.nextchar import NextCharTask
    from federated.tasks.ngram import byte_pairs, ngram_baselines

    texts = ["héllo wörld", "", "x" * 200, "a b c"]
    task = NextCharTask(seq_len=16)
    scored = int((task.encode_texts(texts).tensors[1] >= 0).sum())
    assert len(byte_pairs(texts, task.seq_len)[1]) == scored
    baselines = ngram_baselines(texts, texts, task.seq_len)
    assert baselines["bigram"]["loss"] < baselines["unigram"]["loss"]
