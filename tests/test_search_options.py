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
    ("controller", {"broadcast": "mean"}, r"controller.broadcast must be one of best, "
                                          r"top_k_average, ema \(got 'mean'\)"),
    ("controller", {"broadcast_k": 9}, r"controller.broadcast_k must be an integer in \[2, "
                                       r"candidates\] = \[2, 4\]"),
    ("controller", {"broadcast_decay": 1.0}, r"controller.broadcast_decay must be a number in "
                                             r"\[0, 1\)"),
    ("controller", {"reject_after": 1.0}, r"controller.reject_after must be a fraction of an "
                                          r"epoch in \[0, 1\)"),
    ("controller", {"reject_margin": -1}, r"controller.reject_margin must be a number >= 0"),
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


# ------------------------------------------------------------------ broadcast (issue 19)

from lfsearch.losses.modulated import Modulated  # noqa: E402
from lfsearch.search import broadcast as broadcast_mod  # noqa: E402
from lfsearch.search import rejection  # noqa: E402


def _state(w, mean, tracked, head, log_a, momentum):
    return {"model": {"w": torch.tensor(w), "bn.running_mean": torch.tensor(mean),
                      "bn.num_batches_tracked": torch.tensor(tracked)},
            "loss": {"weight": torch.tensor(head), "log_a": torch.tensor(log_a),
                     "_extra_state": {"values": {"m": log_a[0]}}},
            "optimizer": {"state": {0: {"momentum_buffer": torch.tensor(momentum)}},
                          "param_groups": [{"lr": 0.1, "params": [0]}]}}


def test_average_of_two_known_states_is_the_hand_computed_one():
    best = _state([1.0, 2.0], [0.0, 4.0], 3, [[1.0, 3.0]], [0.5], [1.0, 1.0])
    other = _state([3.0, 6.0], [2.0, 0.0], 5, [[3.0, 7.0]], [0.25], [9.0, 9.0])
    avg = broadcast_mod.average([best, other], loss_parameters={"weight"})
    assert avg["model"]["w"].tolist() == [2.0, 4.0]                  # (1+3)/2, (2+6)/2
    assert avg["model"]["bn.running_mean"].tolist() == [1.0, 2.0]    # running stats averaged
    assert int(avg["model"]["bn.num_batches_tracked"]) == 3          # integer buffer: the best's
    assert avg["loss"]["weight"].tolist() == [[2.0, 5.0]]            # the class head averaged
    assert avg["loss"]["log_a"].tolist() == [0.5]                    # loss buffers: the best's
    assert avg["loss"]["_extra_state"] == {"values": {"m": 0.5}}
    assert avg["optimizer"]["state"][0]["momentum_buffer"].tolist() == [1.0, 1.0]  # the best's
    assert best["model"]["w"].tolist() == [1.0, 2.0]                 # inputs untouched


def test_ema_of_weights_is_the_hand_computed_one():
    first = _state([1.0, 2.0], [0.0, 4.0], 3, [[1.0, 3.0]], [0.5], [1.0, 1.0])
    second = _state([3.0, 6.0], [2.0, 0.0], 5, [[3.0, 7.0]], [0.25], [9.0, 9.0])
    ema = broadcast_mod.ema_update(None, first, 0.75, {"weight"})
    assert set(ema) == {"model", "loss"} and ema["model"]["w"].tolist() == [1.0, 2.0]
    ema = broadcast_mod.ema_update(ema, second, 0.75, {"weight"})
    # 0.75·ema + 0.25·best
    assert ema["model"]["w"].tolist() == [1.5, 3.0]
    assert ema["model"]["bn.running_mean"].tolist() == [0.5, 3.0]
    assert ema["loss"]["weight"].tolist() == [[1.5, 4.0]]
    assert int(ema["model"]["bn.num_batches_tracked"]) == 5 and ema["loss"]["log_a"].tolist() \
        == [0.25]                                                      # the newest best's


def test_top_k_average_starts_the_next_epoch_from_the_mean_of_the_two_best(tmp_path,
                                                                          monkeypatch):
    epochs = []
    real_run_epoch = Search.run_epoch

    def record(self, trainee, start, epoch, params, on_candidate, keep_all=False):
        results = real_run_epoch(self, trainee, start, epoch, params, on_candidate, keep_all)
        epochs.append((keep_all, results))
        return results

    monkeypatch.setattr(Search, "run_epoch", record)
    config = space(epochs=1, candidates=3, controller={"broadcast": "top_k_average",
                                                       "broadcast_k": 2})
    run(config, tmp_path)
    (keep_all, results), = epochs
    assert keep_all and all(r.state is not None for r in results)
    order = sorted(range(3), key=lambda i: -results[i].reward)
    a, b = results[order[0]].state, results[order[1]].state
    start = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["state"]
    for name, value in start["model"].items():
        if value.is_floating_point():
            assert torch.equal(value, a["model"][name] * 0.5 + b["model"][name] * 0.5), name
        else:
            assert torch.equal(value, a["model"][name]), name
    assert torch.equal(start["loss"]["weight"], (a["loss"]["weight"] + b["loss"]["weight"]) / 2)
    rows = pd.read_csv(tmp_path / "epochs.csv")
    assert rows["averaged"].tolist() == [i in order[:2] for i in range(3)]
    assert rows["chosen"].tolist() == [i == order[0] for i in range(3)]
    results_json = json.loads((tmp_path / "results.json").read_text())
    assert results_json["broadcast"] == "top_k_average"
    assert results_json["chosen_validation_reward"] == results[order[0]].reward
    assert results_json["final_validation_reward"] == \
        pd.read_csv(tmp_path / "controller.csv")["broadcast_reward"].iloc[-1]


def test_ema_resumes_bit_identical_to_an_uninterrupted_run(tmp_path):
    config = space(epochs=3, candidates=2, controller={"broadcast": "ema",
                                                       "broadcast_decay": 0.5},
                   training={"batch_size": 256})
    run(config, tmp_path / "whole")

    def stop_in_epoch_2(event):
        if event.kind == "candidate" and event.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        run(config, tmp_path / "stopped", progress=stop_in_epoch_2)
    stopped = tmp_path / "stopped"
    assert "ema" in torch.load(stopped / "checkpoint.pt", weights_only=False)
    search("search_softmax", out=stopped, resume=True)
    for name in ("epochs.csv", "controller.csv", "results.json"):
        assert (stopped / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    a, b = (torch.load(d / "checkpoint.pt", weights_only=False)["ema"]
            for d in (stopped, tmp_path / "whole"))
    for part in ("model", "loss"):
        for name, value in a[part].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b[part][name]), name
    # the tested model is the EMA, not the last best: its reward is the one reported
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert whole["final_validation_reward"] != whole["chosen_validation_reward"]


# ------------------------------------------------------------------ early rejection (issue 19)


@pytest.mark.parametrize("training, candidates, message", [
    ({"packing": "packed"}, 4, r"training.packing must be auto or sequential with "
                               r"controller.reject_after > 0"),
    ({}, 2, r"controller.candidates must be an integer >= 3 with reject_after > 0"),
])
def test_rejection_refuses_the_packed_path_and_two_candidates(training, candidates, message):
    config = config_mod.load("search_softmax")
    config["controller"].update(reject_after=0.25, candidates=candidates)
    config["training"].update(training)
    with pytest.raises(ValueError, match=message) as info:
        config_mod.validate(config, source="bad.toml")
    assert "\n" not in str(info.value)


def test_rejection_rule_median_plus_margin_mad_by_hand():
    # L = 1.0, 1.2, 5.0: median 1.2, |L - med| = 0.2, 0, 3.8 -> MAD 0.2; 1.2 + 3·0.2 = 1.8
    assert rejected_at([1.0, 1.2, 5.0], 3.0) == {2}
    assert rejected_at([1.0, 1.2, 1.7], 3.0) == set()     # 1.7 <= 1.8
    assert rejected_at([1.0, 1.2, 1.9], 3.0) == {2}       # 1.9 >  1.8 (MAD 0.2 again)
    assert rejected_at([1.0, None, 9.0], 0.0) == set()    # fewer than three judged
    assert rejection.reject_step(0.25, 16) == 4 and rejection.reject_step(0.01, 16) == 1


def rejected_at(losses, margin):
    return rejection.rejected(losses, margin)


FORCED = [{"s": 8.0, "m": 0.1}, {"s": 8.0, "m": 0.2}, {"s": 8.0, "m": 0.3}]


def _force(monkeypatch, huge_m):
    """Candidates FORCED; the one with m = huge_m gets +1000 on its training loss (the same
    gradients: it trains exactly as it would, with a far worse running loss)."""
    monkeypatch.setattr(controllers.ReinforceController, "sample",
                        lambda self, n: [dict(p) for p in FORCED[:n]])
    forward = Modulated.forward

    def forced(self, embeddings, labels):
        value = forward(self, embeddings, labels)
        return value + 1000.0 if self.training and self.get_params()["m"] == huge_m else value

    monkeypatch.setattr(Modulated, "forward", forced)


def test_a_candidate_with_a_huge_loss_is_rejected_and_its_compute_counted(tmp_path,
                                                                          monkeypatch):
    _force(monkeypatch, huge_m=0.3)
    options = {"reject_after": 0.25, "reject_margin": 3.0}
    run(space(epochs=1, candidates=3, controller=options), tmp_path / "reject")
    run(space(epochs=1, candidates=3), tmp_path / "plain")
    rows = pd.read_csv(tmp_path / "reject" / "epochs.csv")
    plain = pd.read_csv(tmp_path / "plain" / "epochs.csv")
    steps = len(data.load("digits", seed=3).train) // 64    # batch_size 64 of search_softmax
    n = -(-steps // 4)                                        # ⌈0.25·S⌉
    assert rows["status"].tolist() == ["ok", "ok", "rejected"]
    assert rows["steps"].tolist() == [steps, steps, n]
    assert rows["reward"].iloc[2] == 0.0 and not rows["chosen"].iloc[2]
    assert rows["train_loss"].iloc[2] > 1000
    for column in ("reward", "train_loss", "val/roc_auc"):    # the others are unchanged
        assert rows[column].iloc[:2].tolist() == plain[column].iloc[:2].tolist(), column
    results = json.loads((tmp_path / "reject" / "results.json").read_text())
    assert results["steps_per_epoch"] == steps and results["rejected"] == 1
    assert results["candidate_epochs_saved"] == pytest.approx((steps - n) / steps)
    assert results["candidate_epochs_spent"] == pytest.approx(2 + n / steps)


def test_rejection_that_rejects_nobody_is_bit_identical_to_no_rejection(tmp_path, monkeypatch):
    _force(monkeypatch, huge_m=None)  # nobody forced
    training = {"batch_size": 256}
    run(space(epochs=2, candidates=3, controller={"reject_after": 0.5, "reject_margin": 1e9},
              training=training), tmp_path / "on")
    run(space(epochs=2, candidates=3, training=training), tmp_path / "off")
    on, off = (pd.read_csv(tmp_path / d / "epochs.csv") for d in ("on", "off"))
    assert (on["status"] == "ok").all()
    pd.testing.assert_frame_equal(on.drop(columns="steps"), off, check_exact=True)
    assert (tmp_path / "on" / "controller.csv").read_text() == \
        (tmp_path / "off" / "controller.csv").read_text()
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("on", "off"))
    assert a["candidate_epochs_saved"] == 0 and a["candidate_epochs_spent"] == 6
    assert {k: v for k, v in a.items() if k in b} == b


# ------------------------------------------------------------------ schedule space (issue 19)

from lfsearch.experiments.study import run_study  # noqa: E402
from lfsearch.search.controllers import schedules  # noqa: E402


def test_schedule_values_at_given_progress_are_the_hand_computed_ones():
    lin = {"start": 4.0, "end": 16.0, "shape": "linear"}
    cos = {"start": 0.0, "end": 0.4, "shape": "cosine"}
    geo = {"start": 2.0, "end": 32.0, "shape": "log_linear"}
    step = {"start": 0.1, "end": 0.5, "shape": "step", "at": 0.6}
    assert [schedules.value(lin, t) for t in (0, 0.25, 0.5, 1)] == [4.0, 7.0, 10.0, 16.0]
    # 0.4 + (0 − 0.4)(1 + cos(π/4))/2 = 0.2·(1 − √2/2) = 0.0585786...
    assert schedules.value(cos, 0.25) == pytest.approx(0.2 * (1 - 2 ** 0.5 / 2))
    assert schedules.value(cos, 0.5) == pytest.approx(0.2)
    assert (schedules.value(cos, 0), schedules.value(cos, 1)) == (0.0, pytest.approx(0.4))
    assert schedules.value(geo, 0.25) == pytest.approx(4.0)       # 2·16^(1/4)
    assert schedules.value(geo, 0.75) == pytest.approx(16.0)
    assert [schedules.value(step, t) for t in (0.5, 0.6, 1.0)] == [0.1, 0.5, 0.5]
    assert [schedules.progress(u, 5) for u in range(5)] == [0, 0.25, 0.5, 0.75, 1.0]
    assert schedules.progress(0, 1) == 0.0


def test_the_fixed_controller_replays_a_curve_epoch_by_epoch():
    specs = config_mod.param_specs(config_mod.load("schedule_cosface"))
    c = controllers.build("fixed", specs, seed=0, horizon=5,
                          curve={"m": {"start": 0.0, "end": 0.4, "shape": "linear"},
                                 "s": {"start": 4.0, "end": 64.0, "shape": "log_linear"}})
    seen = []
    for _ in range(5):
        (p,) = c.sample(1)
        seen.append((p["m"], p["s"]))
        c.update([p], [0.5])
    assert [m for m, _ in seen] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert [s for _, s in seen] == pytest.approx([4.0, 8.0, 16.0, 32.0, 64.0])  # 4·16^t
    restored = controllers.build("fixed", specs, seed=0)
    restored.load_state_dict(c.state_dict())
    assert restored.sample(1) == c.sample(1)
    with pytest.raises(ValueError, match=r"curve.m.end = 0.9 is outside \[low, high\] = \[0, 0.6\]"):
        controllers.build("fixed", specs, seed=0, curve={"m": {"start": 0.0, "end": 0.9}})
    with pytest.raises(ValueError, match=r"curve.m.shape must be one of linear, cosine, "
                                         r"log_linear, step"):
        controllers.build("fixed", specs, seed=0, curve={"m": {"start": 0, "end": 0.1,
                                                               "shape": "exp"}})


def test_a_schedule_run_trains_each_epoch_at_its_progress(tmp_path):
    config = space("schedule_cosface", epochs=3, candidates=1,
                   controller={"curve": {"m": {"start": 0.0, "end": 0.3, "shape": "cosine"},
                                         "s": {"start": 4.0, "end": 16.0,
                                               "shape": "log_linear"}}})
    run(config, tmp_path)
    rows = pd.read_csv(tmp_path / "epochs.csv")
    assert rows["m"].tolist() == pytest.approx([0.0, 0.15, 0.3])     # t = 0, 1/2, 1
    assert rows["s"].tolist() == pytest.approx([4.0, 8.0, 16.0])
    assert config_mod.load(tmp_path / "config.toml")["controller"]["curve"] == \
        config["controller"]["curve"]


def test_a_schedule_study_runs_tiny_trials_with_the_hyperband_pruner(tmp_path):
    summary = run_study("schedule_cosface", trials=3, epochs=3, out=tmp_path / "study",
                        pruner="hyperband", threads=torch.get_num_threads())
    assert summary["settings"]["pruner"] == "hyperband"
    assert summary["finished_trials"] == 3
    trials = pd.read_csv(tmp_path / "study" / "trials.csv")
    assert set(trials["params_m_shape"]) <= {"linear", "cosine", "step"}
    spent = trials["user_attrs_candidate_epochs"].tolist()
    assert all(1 <= e <= 3 for e in spent) and summary["candidate_epochs"] == sum(spent)
    complete = trials[trials["state"] == "COMPLETE"]
    best = complete.loc[complete["value"].idxmax()]
    rows = pd.read_csv(best["user_attrs_run_dir"] + "/epochs.csv")    # t = 0, then t = 1
    assert [rows["m"].iloc[0], rows["m"].iloc[-1]] == \
        pytest.approx([best["params_m_start"], best["params_m_end"]])


def test_study_refuses_an_unknown_pruner_and_a_bad_curve_target():
    config = config_mod.load("schedule_cosface")
    config["study"] = {"pruner": "asha"}
    with pytest.raises(ValueError, match=r"study.pruner must be one of median, "
                                         r"successive_halving, hyperband, none"):
        config_mod.validate(config, source="bad.toml")
    config["study"] = {"params": {"x": {"target": "controller.curve.q.start", "low": 0,
                                        "high": 1}}}
    with pytest.raises(ValueError, match=r"study.params.x: target 'controller.curve.q.start': "
                                         r"\[controller.curve\] has m, s"):
        config_mod.validate(config, source="bad.toml")
