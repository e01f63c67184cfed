"""Compute-matched tuned baselines (`lfsearch compare --tuned`): the budget arithmetic, what is
refused, and a tiny compare whose tuned cosface is chosen on validation only."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lfsearch.cli import main as cli_main
from lfsearch.experiments import compare as compare_mod
from lfsearch.experiments import run_plan
from lfsearch.experiments import tuning as tuning_mod
from lfsearch.search import config as config_mod

BENCH = "digits?train_classes=2&pairs=200"  # small: 2 training classes, 200 pairs
TAG = run_plan.safe_name(BENCH)


def test_the_budget_is_the_largest_search_cost_and_fixed_methods_cost_nothing():
    configs = [config_mod.resolve(config_mod.load(s), epochs=e)
               for s, e in (("softmax", 3), ("search_softmax", 3), ("random_softmax", 5))]
    # search_softmax 3 epochs x 4 candidates = 12; random_softmax 5 x 4 = 20; softmax: no search
    assert tuning_mod.search_budget(configs) == 20
    assert tuning_mod.search_budget(configs[:1]) is None


def test_the_plan_gives_each_seed_budget_over_trial_cost_trials(tmp_path):
    specs = tuning_mod.plan_tuned(["digits"], ["cosface", "arcface"], [0, 3], tmp_path,
                              {"epochs": 3}, 20)
    # one trial = 3 epochs x 1 candidate: floor(20 / 3) = 6 trials, 18 candidate-epochs
    assert [(s.method, s.seed, s.trials, s.budget) for s in specs] == [
        ("cosface", 0, 6, 18), ("cosface", 3, 6, 18), ("arcface", 0, 6, 18), ("arcface", 3, 6, 18)]
    assert specs[0].label == "cosface (tuned, 18 cand-epochs)"
    assert specs[1].out == tmp_path / "digits" / "cosface-tuned" / "seed3"
    with_m = tuning_mod.plan_tuned(["digits"], ["cosface"], [0], tmp_path,
                               {"epochs": 3, "candidates": 2}, 20)
    assert (with_m[0].trials, with_m[0].budget) == (3, 18)  # 3 x 2 per trial
    assert not any(tmp_path.iterdir())


def test_with_a_pruner_the_study_runs_until_the_budget_and_keeps_categorical_choices(tmp_path):
    spec, = tuning_mod.plan_tuned(["digits"], ["schedule_cosface"], [0], tmp_path,
                                  {"epochs": 3}, 20, pruner="hyperband")
    # trials end early, so the budget (not floor(B / (E x M)) trials) ends the study
    assert (spec.trials, spec.budget, spec.pruner) == (20, 20, "hyperband")
    assert spec.label == "schedule_cosface (tuned, hyperband, 20 cand-epochs)"
    tables = spec.study_tables()
    assert tables["m_shape"] == {"target": "controller.curve.m.shape", "type": "categorical",
                                 "choices": ["linear", "cosine", "step"]}
    assert tables["s_end"]["low"] == 2.0 and tables["s_end"]["log"] is True
    spec.out.mkdir(parents=True)
    written = config_mod.load(tuning_mod.write_space(spec))  # read back: every table valid
    assert written["study"]["params"]["s_shape"]["choices"] == ["log_linear", "cosine", "step"]
    with pytest.raises(ValueError, match="--tune-pruner must be one of median, successive_halving, hyperband, none"):
        tuning_mod.plan_tuned(["digits"], ["cosface"], [0], tmp_path, {"epochs": 3}, 20,
                              pruner="asha")


@pytest.mark.parametrize("spaces,budget,match", [
    (["search_softmax"], 12, r"is a search"),
    (["softmax"], 12, r"nothing to study"),
    (["cosface"], 2, r"holds no trial of 3 candidate-epochs"),
    (["cosface"], 0, r"--tune-budget must be an integer >= 1"),
])
def test_what_cannot_be_tuned_is_refused(tmp_path, spaces, budget, match):
    with pytest.raises(ValueError, match=match):
        tuning_mod.plan_tuned(["digits"], spaces, [0], tmp_path, {"epochs": 3}, budget)


def test_trial_runs_inside_a_study_folder_are_not_runs_of_the_compare(tmp_path):
    for d in ("b/m/seed0", "b/t/seed0/tuning/trials/0"):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "config.toml").write_text("")
        (tmp_path / d / "manifest.json").write_text("{}")
    (tmp_path / "b/t/seed0/tuning/study.db").write_text("")
    assert tuning_mod.is_trial_run(tmp_path / "b/t/seed0/tuning/trials/0", tmp_path)
    assert not tuning_mod.is_trial_run(tmp_path / "b/m/seed0", tmp_path)
    assert run_plan.find_run_dirs(tmp_path) == [tmp_path / "b/m/seed0"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """softmax (1 epoch) against cosface tuned in 2 one-epoch trials (--tune-budget 2)."""
    out = tmp_path_factory.mktemp("tuned") / "cmp"
    result = compare_mod.compare([BENCH], "softmax", [0], out=out, epochs=1, device="cpu",
                         tuned="cosface", tune_budget=2)
    return out, result


def _trial_results(seed_dir):
    trials = sorted((seed_dir / "tuning" / "trials").iterdir(), key=lambda p: int(p.name))
    return trials, [json.loads((t / "results.json").read_text()) for t in trials]


def test_a_tuned_baseline_is_chosen_on_validation_and_counts_its_trials(tuned):
    out, result = tuned
    label = "cosface (tuned, 2 cand-epochs)"
    table = result["table"].set_index("method")
    assert list(table.index) == ["softmax", label, "validation-selected best fixed"]
    assert table.loc[label, "candidate_epochs"] == 2      # both trials count
    assert table.loc[label, "controller"] == "fixed"
    assert table.loc["softmax", "best_margin"] == label   # a tuned margin can be the best one
    assert label in (out / "table.md").read_text()
    seed = out / TAG / "cosface-tuned" / "seed0"
    record = json.loads((seed / "tuning.json").read_text())
    trials, runs = _trial_results(seed)
    assert len(trials) == record["trials"] == 2
    assert all(r["seed"] == 0 and r["candidate_epochs"] == 1 for r in runs)  # one seed, 1 epoch
    # the first trial is the file's own point; the chosen one has the best validation reward
    first = config_mod.load(trials[0] / "config.toml")
    assert first["loss"]["params"]["m"]["init"] == 0.35 and first["loss"]["s"] == 16.0
    rewards = [r["final_validation_reward"] for r in runs]
    best = rewards.index(max(rewards))
    assert record["best_trial"] == best
    chosen = json.loads((seed / "results.json").read_text())
    assert chosen["test"] == runs[best]["test"]          # that trial's own test metric
    assert chosen["candidate_epochs"] == 2
    frame = pd.read_csv(out / "runs.csv")                 # the trials are not runs
    assert sorted(frame["method"]) == sorted(["softmax", label])
    assert json.loads((out / "compare.json").read_text())["tuned"] == {
        "spaces": ["cosface"], "budget": 2, "pruner": "none"}


def test_a_second_compare_skips_the_tuned_runs_and_other_settings_are_refused(tuned):
    out, first = tuned
    again = compare_mod.compare([BENCH], "softmax", [0], out=out, epochs=1, device="cpu",
                        tuned="cosface", tune_budget=2)
    assert set(again["done"].values()) == {"skipped"}
    with pytest.raises(ValueError, match="different configuration.*trials"):
        compare_mod.compare([BENCH], "softmax", [0], out=out, epochs=1, device="cpu",
                    tuned="cosface", tune_budget=3)


def test_by_default_a_tuned_baseline_gets_the_searchs_candidate_epochs(tmp_path):
    out = tmp_path / "cmp"
    result = compare_mod.compare([BENCH], "search_softmax", [0], out=out, epochs=1, device="cpu",
                         tuned="cosface")
    table = result["table"].set_index("method")
    label = "cosface (tuned, 4 cand-epochs)"    # search_softmax: 1 epoch x 4 candidates
    assert table.loc[label, "candidate_epochs"] == table.loc["search_softmax",
                                                             "candidate_epochs"] == 4
    trials, runs = _trial_results(out / TAG / "cosface-tuned" / "seed0")
    assert len(trials) == 4


@pytest.mark.parametrize("extra,match", [
    (["--spaces", "softmax", "--tuned", "cosface"], "--tuned needs a budget"),
    (["--spaces", "search_softmax", "--tuned", "softmax"], "nothing to study"),
])
def test_the_cli_refuses_a_tuned_baseline_it_cannot_run_in_one_line(tmp_path, capsys, extra,
                                                                     match):
    code = cli_main(["compare", "--benchmark", BENCH, "--seeds", "1", "--epochs", "1",
                     "--out", str(tmp_path / "never"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and match in err
    assert not (tmp_path / "never").exists()


def test_tuned_bounds_contain_the_searched_space(tmp_path):
    searched = [config_mod.load("search_softmax"), config_mod.load("softmax")]
    # search_softmax searches s in [2, 64] and m in [0, 0.6]; softmax (fixed) adds nothing
    assert tuning_mod.searched_ranges(searched) == {"s": (2.0, 64.0), "m": (0.0, 0.6)}
    specs = tuning_mod.plan_tuned(["digits"], ["cosface", "arcface"], [0], tmp_path,
                                  {"epochs": 3}, 12, searched=searched)
    bounds = {s.method: {b[0]: b[2:5] for b in s.bounds} for s in specs}
    # cosface: its own m in [0, 0.8] and s = 16 -> [8, 32] widened to the search's [2, 64]
    assert bounds["cosface"] == {"m": (0.0, 0.8, False), "s": (2.0, 64.0, True)}
    # arcface: m in [0, 1.0] already holds [0, 0.6]; s -> [min(s/2, 2), max(2s, 64)]
    s = config_mod.load("arcface")["loss"]["s"]
    assert bounds["arcface"] == {"m": (0.0, 1.0, False),
                                 "s": (min(s / 2, 2.0), max(2 * s, 64.0), True)}
    # no search compared: the bundled (s, m) searches give the same ranges
    fallback = tuning_mod.plan_tuned(["digits"], ["cosface"], [0], tmp_path, {"epochs": 3}, 12)
    assert fallback[0].bounds == specs[0].bounds
    # the tuned space file carries them as [study.params] and loads (every edge checked)
    specs[0].out.mkdir(parents=True)
    written = config_mod.load(tuning_mod.write_space(specs[0]))
    assert written["study"]["params"]["s"]["low"] == 2.0
    assert written["study"]["params"]["m"]["high"] == 0.8
