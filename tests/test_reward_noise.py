"""The reward signal-to-noise diagnostic (lfsearch/evaluation/reward_noise.py): the spread of
an epoch's candidate rewards against the chosen reward's bootstrap noise, flagged below 1."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from lfsearch.evaluation import reward_noise
from lfsearch.search import search


def test_a_constant_reward_is_flagged_as_learning_from_noise(caplog):
    rows = [{"epoch": e, **reward_noise.epoch_snr([0.7, 0.7, 0.7, 0.7], noise=0.01)}
            for e in range(4)]
    assert all(r["reward_spread"] == 0.0 and r["snr"] == 0.0 for r in rows)
    with caplog.at_level(logging.WARNING, logger="lfsearch.evaluation.reward_noise"):
        summary = reward_noise.summarise_snr(rows)
    assert summary == {"median": 0.0, "epochs": 4, "flagged": True}
    assert "learning from noise" in caplog.text


def test_a_reward_with_a_clear_spread_is_not_flagged(caplog):
    # rewards .5 .6 .7 .8: sample std = sqrt(((.15)² + (.05)²) · 2 / 3) = 0.1291; noise .01
    row = reward_noise.epoch_snr([0.5, 0.6, 0.7, 0.8], noise=0.01)
    assert row["reward_spread"] == pytest.approx(math.sqrt((0.15 ** 2 + 0.05 ** 2) * 2 / 3))
    assert row["snr"] == pytest.approx(row["reward_spread"] / 0.01)
    with caplog.at_level(logging.WARNING):
        summary = reward_noise.summarise_snr([{"snr": row["snr"]}] * 3)
    assert not summary["flagged"] and summary["median"] == pytest.approx(12.91, abs=0.01)
    assert "learning from noise" not in caplog.text
    # one candidate: no spread, no SNR, nothing flagged
    one = reward_noise.epoch_snr([0.9], noise=0.01)
    assert math.isnan(one["snr"])
    assert reward_noise.summarise_snr([one])["flagged"] is False


def test_bootstrap_noise_of_an_accuracy_is_the_binomial_standard_error():
    # accuracy p = 0.8 on n = 400 images: bootstrap std ≈ sqrt(p(1 − p)/n) = 0.02
    correct = np.array([1.0] * 320 + [0.0] * 80)
    noise = reward_noise.reward_noise([({"correct": correct}, "accuracy", 1.0)],
                                      replicates=2000, seed=0)
    assert noise == pytest.approx(0.02, rel=0.08)
    # two splits weighted 1 and 3: std = sqrt(1² + 3²)·0.02 / 4 (independent resamples)
    both = reward_noise.reward_noise([({"correct": correct}, "accuracy", 1.0),
                                      ({"correct": correct}, "accuracy", 3.0)],
                                     replicates=2000, seed=1)
    assert both == pytest.approx(math.sqrt(10) * 0.02 / 4, rel=0.08)
    # a perfectly separated verification: no noise in cosine_gap's sign, and
    # verification_accuracy is 1 on every resample
    scores = np.r_[np.linspace(0.6, 0.9, 50), np.linspace(-0.5, 0.1, 50)]
    details = {"scores": scores, "same": np.r_[[True] * 50, [False] * 50],
               "folds": np.arange(100) % 10}
    assert reward_noise.reward_noise([(details, "verification_accuracy", 1.0)]) == 0.0
    assert reward_noise.reward_noise([(details, "cosine_gap", 1.0)]) > 0.0
    assert math.isnan(reward_noise.reward_noise([(details, "tar@far=1e-3_all", 1.0)]))


def test_a_search_writes_snr_csv_and_its_median_to_results(tmp_path):
    out = tmp_path / "run"
    results = search("random_softmax", benchmark="digits?train_classes=2&pairs=200", epochs=2,
                     candidates=3, seed=0, device="cpu", out=out)
    snr = pd.read_csv(out / "snr.csv")
    assert list(snr["epoch"]) == [0, 1]
    assert set(snr.columns) >= {"candidates", "reward_spread", "reward_noise", "snr"}
    epochs = pd.read_csv(out / "epochs.csv")
    for e, row in snr.set_index("epoch").iterrows():
        rewards = epochs[(epochs["epoch"] == e) & (epochs["status"] == "ok")]["reward"]
        assert row["reward_spread"] == pytest.approx(rewards.std(ddof=1))
        assert row["reward_noise"] > 0
        assert row["snr"] == pytest.approx(row["reward_spread"] / row["reward_noise"])
    stored = json.loads((out / "results.json").read_text())["reward_snr"]
    assert stored["median"] == pytest.approx(float(snr["snr"].median()))
    assert stored["flagged"] == (stored["median"] < 1) and results["reward_snr"] == stored


def test_the_fast_resample_metrics_equal_the_evaluation_ones():
    from lfsearch.evaluation import metrics as metrics_mod

    rng = np.random.default_rng(3)
    for n in (40, 301, 2000):
        same = rng.random(n) < 0.5
        scores = np.round(rng.normal(same * 0.8, 1.0), 2)  # rounded: many ties
        folds = np.arange(n) * 10 // n
        want = metrics_mod.verification_metrics(scores, same, folds)
        assert reward_noise.fold_accuracy(scores, same, folds) == pytest.approx(
            want["verification_accuracy"], abs=1e-12)
        assert reward_noise.roc_auc(scores, same) == pytest.approx(want["roc_auc"], abs=1e-12)
        for part in (slice(0, n // 3), slice(n // 3, None)):
            assert reward_noise.best_threshold(scores[part], same[part]) == \
                metrics_mod.best_threshold(scores[part], same[part])
