"""The [reward] and [controller] options of docs/search.md: smooth reward metrics, more
validation pairs, competitions every k epochs (with resume and the packed path), and their
one-line refusals."""

from __future__ import annotations

import dataclasses
import json
import socket

import numpy as np
import pandas as pd
import pytest
import torch

from lfsearch import data
from lfsearch.evaluation import metrics as metrics_mod
from lfsearch.evaluation import validation_pairs
from lfsearch.search import Search, controllers, search
from lfsearch.search import config as config_mod


def space(name="search_softmax", *, epochs=2, candidates=2, seed=3, **sections):
    """A resolved config with some [section] keys changed, e.g. controller={"interval": 2}."""
    config = config_mod.resolve(config_mod.load(name), epochs=epochs, candidates=candidates,
                                seed=seed, device="cpu")
    for section, values in sections.items():
        config[section].update(values)
    return config_mod.validate(config, source="test.toml")


#: a parameter that search_softmax searches
P = config_mod.param_specs(config_mod.load("search_softmax"))[0].name


def run(config, out, **kwargs):
    out.mkdir(parents=True, exist_ok=True)
    return Search(config, out, **kwargs).run()


# ------------------------------------------------------------------ reward metrics


def test_cosine_gap_hand_worked_on_four_pairs():
    # same pairs 0.9 and 0.5 (mean 0.7), different pairs 0.2 and -0.4 (mean -0.1): gap 0.8
    scores, same = [0.9, 0.2, 0.5, -0.4], [True, False, True, False]
    assert metrics_mod.cosine_gap(scores, same) == pytest.approx(0.8)
    m = metrics_mod.verification_metrics(scores, same, [0, 0, 1, 1])
    assert m["cosine_gap"] == pytest.approx(0.8)


def test_cosine_gap_moves_where_thresholded_accuracy_cannot():
    # every pair already on the right side: raising a same pair's cosine leaves accuracy at
    # 1 but raises the gap by 0.1 / 2 (the mean of two same pairs)
    same = [True, False, True, False] * 3
    base = np.array([0.9, 0.2, 0.5, -0.4] * 3)
    better = base.copy()
    better[2::4] += 0.1
    a, b = (metrics_mod.verification_metrics(s, same) for s in (base, better))
    assert a["verification_accuracy"] == b["verification_accuracy"] == 1.0
    assert b["cosine_gap"] - a["cosine_gap"] == pytest.approx(0.05)


@pytest.mark.parametrize("metric, pairs", [("roc_auc", 0), ("cosine_gap", 400)])
def test_a_smooth_metric_is_the_reward(tmp_path, metric, pairs):
    run(space("cosface", epochs=1, candidates=1, reward={"metric": metric, "pairs": pairs}),
        tmp_path)
    rows = pd.read_csv(tmp_path / "epochs.csv")
    assert rows["reward"].tolist() == rows[f"val/{metric}"].tolist()
    if pairs:
        assert rows["val/pairs"].tolist() == [pairs]


# ------------------------------------------------------------------ validation pairs


def test_reward_pairs_redraws_balanced_pairs_on_the_validation_images_only(tmp_path):
    bench = data.load("digits", seed=3)  # the seed of space()
    assert bench.val.num_pairs != 1000
    val = validation_pairs.redraw(bench.val, 1000, seed=4)
    assert val.num_pairs == 1000 and int(val.same.sum()) == 500
    for f in dataclasses.fields(val):  # all but the pairs is the validation split's own
        if f.name not in ("pairs", "same", "folds"):
            assert getattr(val, f.name) is getattr(bench.val, f.name), f.name
    labels = val.labels[val.pairs]
    assert torch.equal(labels[:, 0] == labels[:, 1], val.same)
    assert len({tuple(p) for p in val.pairs.tolist()}) == 1000  # no pair twice
    runner = Search(space("cosface", reward={"pairs": 1000}), tmp_path)
    assert runner.validations[0].split.num_pairs == 1000
    assert torch.equal(runner.benchmark.test.pairs, bench.test.pairs)  # test split untouched


def test_reward_pairs_needs_labelled_verification_splits():
    bench = data.load("digits", seed=0)
    v = bench.val
    unlabelled = dataclasses.replace(v, labels=None)
    with pytest.raises(ValueError, match="no identity labels.*allowed there: reward.pairs = 0"):
        validation_pairs.redraw(unlabelled, 100, seed=0)
    closed = data.load("digits-closed", seed=0)
    with pytest.raises(ValueError, match="needs verification validation splits"):
        validation_pairs.redraw(closed.val, 100, seed=0)


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("section, values, message", [
    ("reward", {"metric": "acc"}, r"reward.metric must be one of auto, verification_accuracy, "
                                  r"roc_auc, cosine_gap"),
    ("reward", {"pairs": 1}, r"reward.pairs must be an integer >= 2"),
    ("controller", {"interval": 0}, r"controller.interval must be an integer >= 1"),
    ("controller", {"baseline": "median"}, r"baseline must be one of \['batch_mean', 'ema'"),
    ("controller", {"sigma_final": 2.0}, r"sigma_final must be > 0 and <= 1"),
])
def test_bad_options_are_one_line_errors_naming_the_field(section, values, message):
    config = config_mod.load("search_softmax")
    config[section].update(values)
    with pytest.raises(ValueError, match=message) as info:
        config_mod.validate(config, source="bad.toml")
    assert "bad.toml" in str(info.value) and "\n" not in str(info.value)


def test_a_metric_the_validation_split_does_not_measure_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"reward.metric 'accuracy' is not measured on val "
                                         r"\(a verification split\); allowed: auto, "):
        Search(space("cosface", reward={"metric": "accuracy"}), tmp_path)


# ------------------------------------------------------------------ competition interval


def test_interval_competes_every_k_epochs_and_candidates_keep_their_own_weights(tmp_path,
                                                                                monkeypatch):
    pass  # (import moved)

    updates, starts = [], []
    real_update = controllers.ReinforceController.update
    real_run_epoch = Search.run_epoch

    def count_update(self, params, rewards):
        updates.append([p[P] for p in params])
        return real_update(self, params, rewards)

    def record_start(self, trainee, start, epoch, params, on_candidate, keep_all=False):
        results = real_run_epoch(self, trainee, start, epoch, params, on_candidate, keep_all)
        starts.append((epoch, start, keep_all, results))
        return results

    monkeypatch.setattr(controllers.ReinforceController, "update", count_update)
    monkeypatch.setattr(Search, "run_epoch", record_start)
    run(space(epochs=5, candidates=2, controller={"interval": 2}), tmp_path)

    assert len(updates) == 3  # intervals [0, 1], [2, 3], [4]
    rows = pd.read_csv(tmp_path / "epochs.csv")
    assert rows["compete"].tolist() == [False, False, True, True] * 2 + [True, True]
    assert pd.read_csv(tmp_path / "controller.csv")["epoch"].tolist() == [1, 3, 4]
    for first in (0, 2):  # one draw per interval: params constant, one winner in both epochs
        a = rows[rows["epoch"].isin([first, first + 1])].pivot(index="epoch",
                                                               columns="candidate", values=P)
        assert (a.iloc[0] == a.iloc[1]).all() and a.iloc[0, 0] != a.iloc[0, 1]
        chosen = rows[rows["epoch"].isin([first, first + 1]) & rows["chosen"]]
        assert chosen["candidate"].nunique() == 1 and len(chosen) == 2
        assert updates[first // 2] == a.iloc[0].tolist()
    # epoch 1 starts each candidate from its own epoch-0 weights (no broadcast in between)
    (_, s0, keep0, r0), (_, s1, keep1, r1) = starts[0], starts[1]
    assert isinstance(s0, dict) and keep0 and not keep1
    assert isinstance(s1, list) and [s["model"] for s in s1] == [r.state["model"] for r in r0]
    w = "features.0.0.weight" if "features.0.0.weight" in s1[0]["model"] else \
        next(k for k in s1[0]["model"] if k.endswith("weight"))
    assert not torch.equal(s1[0]["model"][w], s1[1]["model"][w])
    # epoch 2 starts every candidate from the winner of the first interval
    _, s2, _, _ = starts[2]
    winner = int(rows[(rows["epoch"] == 1) & rows["chosen"]]["candidate"].iloc[0])
    assert isinstance(s2, dict) and s2 is r1[winner].state


def test_interval_one_is_the_epoch_by_epoch_search(tmp_path):
    run(space(epochs=2), tmp_path / "plain")
    run(space(epochs=2, controller={"interval": 1}), tmp_path / "k1")
    for name in ("epochs.csv", "controller.csv", "results.json"):
        assert (tmp_path / "plain" / name).read_text() == (tmp_path / "k1" / name).read_text()


def test_interval_packed_and_sequential_agree(tmp_path):
    frames = {}
    for mode in ("sequential", "packed"):
        run(space(epochs=2, controller={"interval": 2}, training={"packing": mode}),
            tmp_path / mode)
        frames[mode] = pd.read_csv(tmp_path / mode / "epochs.csv")
    seq, packed = frames["sequential"], frames["packed"]
    assert seq[P].tolist() == packed[P].tolist()
    # float rounding of the grouped convolution grows over two epochs on own weights
    assert packed["train_loss"].tolist() == pytest.approx(seq["train_loss"].tolist(), rel=1e-3)
    assert packed["reward"].tolist() == pytest.approx(seq["reward"].tolist(), abs=2e-3)


class Stop(Exception):
    pass


def test_a_run_stopped_inside_an_interval_resumes_to_the_same_results(tmp_path):
    config = space(epochs=4, candidates=2, controller={"interval": 2},
                   training={"batch_size": 256})
    run(config, tmp_path / "whole")

    def stop_in_epoch_3(event):
        if event.kind == "candidate" and event.epoch == 3:
            raise Stop

    with pytest.raises(Stop):
        run(config, tmp_path / "stopped", progress=stop_in_epoch_3)
    stopped = tmp_path / "stopped"
    assert torch.load(stopped / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert pd.read_csv(stopped / "epochs.csv")["epoch"].max() == 1  # the completed interval
    search("search_softmax", out=stopped, resume=True)
    for name in ("epochs.csv", "controller.csv", "results.json", "discovered.toml"):
        assert (stopped / name).read_text() == (tmp_path / "whole" / name).read_text(), name



def test_resume_accepts_where_it_runs_but_not_what_it_is(tmp_path):
    """--threads and --device (what compare passes to every run) may differ on resume;
    an override that changes the run (epochs) is refused."""
    config = space(epochs=2, candidates=2, training={"batch_size": 256})
    run(config, tmp_path / "whole")

    def stop_in_last_epoch(event):  # epochs count from 0
        if event.kind == "candidate" and event.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        run(config, tmp_path / "stopped", progress=stop_in_last_epoch)
    stopped = tmp_path / "stopped"
    with pytest.raises(ValueError, match=r"drop the overrides that change it \(--epochs 5, the run has 2\)"):
        search("search_softmax", out=stopped, resume=True, epochs=5, threads=1)
    search("search_softmax", out=stopped, resume=True, threads=torch.get_num_threads(),
           device="cpu")
    for name in ("epochs.csv", "results.json"):
        assert (stopped / name).read_text() == (tmp_path / "whole" / name).read_text(), name

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_interval_on_the_distributed_path_matches_one_process(tmp_path, monkeypatch):
    """A group of one runs the gathers and broadcasts of torchrun; inside an interval no
    state travels and each rank keeps its own candidates'."""
    config = space(epochs=3, candidates=2, controller={"interval": 2})
    run(config, tmp_path / "single")
    config_mod.dump(config, tmp_path / "space.toml")
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    search(tmp_path / "space.toml", out=tmp_path / "dist", dist_timeout=10)
    manifest = json.loads((tmp_path / "dist" / "manifest.json").read_text())
    assert manifest["distributed"]["world_size"] == 1
    for name in ("epochs.csv", "controller.csv", "results.json"):
        assert (tmp_path / "dist" / name).read_text() == \
            (tmp_path / "single" / name).read_text(), name
