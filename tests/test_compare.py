"""lfsearch compare: the statistics against hand-computed values, the run plan, skip/resume,
the files it writes and the CLI's one-line errors."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from lfsearch.cli import main as cli_main
from lfsearch.experiments import compare as compare_mod
from lfsearch.experiments import run_plan
from lfsearch.experiments import statistics as statistics_mod
from lfsearch.experiments import tables as tables_mod
from lfsearch.search import config as config_mod

# ---------------------------------------------------------------------------------------------
# Hand-worked example (three seeds, so n − 1 = 2 degrees of freedom):
#
#   softmax  b = [0.70, 0.74, 0.72]      method  a = [0.71, 0.77, 0.74]
#
#   mean(b) = 2.16 / 3 = 0.72
#   std(b)  = sqrt(((−0.02)² + 0.02² + 0²) / 2) = sqrt(0.0008 / 2) = 0.02
#   t quantile, df = 2: the t_2 CDF is F(t) = 1/2 + t / (2 sqrt(t² + 2)); F(t) = 0.975 gives
#     t / sqrt(t² + 2) = 0.95  ->  t² = 0.9025 · 2 / 0.0975 = 18.5128...  ->  t = 4.302653
#   CI half-width = 4.302653 · 0.02 / sqrt(3) = 0.0496828  ->  [0.670317, 0.769683]
#
#   paired differences d = a − b = [0.01, 0.03, 0.02]: mean 0.02, std(d) = 0.01,
#     t = 0.02 / (0.01 / sqrt(3)) = 2 sqrt(3) = 3.464102
#     p = 2 (1 − F(t)) = 1 − t / sqrt(t² + 2) = 1 − sqrt(12 / 14) = 1 − sqrt(6/7) = 0.0741799
#   Wilcoxon signed-rank: three positive differences, exact two-sided p = 2 · (1/2³) = 0.25
# ---------------------------------------------------------------------------------------------
B = [0.70, 0.74, 0.72]
A = [0.71, 0.77, 0.74]
T_975_2 = math.sqrt(0.9025 * 2 / 0.0975)


def test_t_quantile_matches_the_closed_form_for_two_degrees_of_freedom():
    assert statistics_mod.t_quantile(0.975, 2) == pytest.approx(T_975_2, rel=1e-9)
    assert T_975_2 == pytest.approx(4.302653, abs=1e-6)


def test_mean_std_and_confidence_interval_by_hand():
    s = statistics_mod.mean_ci(B)
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.72)
    assert s["std"] == pytest.approx(0.02)
    assert s["ci_half"] == pytest.approx(0.0496828, abs=1e-7)
    assert s["ci_low"] == pytest.approx(0.670317, abs=1e-6)
    assert s["ci_high"] == pytest.approx(0.769683, abs=1e-6)


def test_mean_ci_of_fewer_than_two_values_has_no_spread():
    one = statistics_mod.mean_ci([0.8])
    assert one["mean"] == 0.8 and math.isnan(one["std"]) and math.isnan(one["ci_half"])
    assert statistics_mod.mean_ci([])["n"] == 0
    assert statistics_mod.mean_ci([0.5, float("nan"), 0.7])["n"] == 2  # a NaN metric is left out


def test_paired_t_test_and_wilcoxon_by_hand():
    t = statistics_mod.paired_test(A, B)
    assert t["n"] == 3
    assert t["diff"] == pytest.approx(0.02)
    assert t["t"] == pytest.approx(2 * math.sqrt(3))
    assert t["p"] == pytest.approx(1 - math.sqrt(6 / 7))
    assert t["wilcoxon_p"] == pytest.approx(0.25)
    flipped = statistics_mod.paired_test(B, A)
    assert flipped["t"] == pytest.approx(-2 * math.sqrt(3)) and flipped["p"] == pytest.approx(t["p"])


def test_paired_test_is_undefined_without_pairs_or_variation():
    assert math.isnan(statistics_mod.paired_test([0.5], [0.4])["t"])
    same = statistics_mod.paired_test([0.5, 0.6], [0.5, 0.6])
    assert same["diff"] == 0 and math.isnan(same["t"]) and math.isnan(same["wilcoxon_p"])
    with pytest.raises(ValueError, match="equally long"):
        statistics_mod.paired_test([0.1, 0.2], [0.1])


def fake_runs() -> pd.DataFrame:
    """Runs on one benchmark: softmax b, cosface a, arcface slightly below cosface, a search."""
    rows = []
    per_method = {
        "softmax": ("fixed", B, 12), "cosface": ("fixed", A, 12),
        "arcface": ("fixed", [0.72, 0.75, 0.73], 12),
        "search_softmax": ("reinforce", [0.73, 0.78, 0.74], 48),
    }
    for method, (kind, values, ce) in per_method.items():
        for seed, v in enumerate(values):
            rows.append({"benchmark": "digits", "method": method, "seed": seed,
                         "controller": kind, "status": "complete", "epochs": 12,
                         "candidates": ce // 12, "candidate_epochs": ce,
                         "test_metric": "verification_accuracy",
                         "test/verification_accuracy": v, "test/roc_auc": v + 0.05,
                         "seconds": 1.0})
    rows.append({**rows[-1], "seed": 9, "status": "resumable",
                 "test/verification_accuracy": float("nan")})
    return pd.DataFrame(rows)


def test_the_summary_table_picks_the_best_margin_and_pairs_by_seed():
    table = statistics_mod.summarise(fake_runs()).set_index("method")
    assert list(table.index) == ["softmax", "cosface", "arcface", "search_softmax"]
    assert (table["best_margin"] == "cosface").all()  # mean 0.74 beats arcface's 0.7333
    cos = table.loc["cosface"]
    assert cos["mean"] == pytest.approx(0.74)
    assert cos["vs_softmax_t"] == pytest.approx(2 * math.sqrt(3))
    assert cos["vs_softmax_p"] == pytest.approx(1 - math.sqrt(6 / 7))
    assert math.isnan(cos["vs_best_margin_t"])  # not tested against itself
    assert math.isnan(table.loc["softmax", "vs_softmax_diff"])
    search = table.loc["search_softmax"]
    assert search["n"] == 3  # the incomplete run (seed 9) is left out
    assert search["vs_best_margin_diff"] == pytest.approx((0.02 + 0.01 + 0.0) / 3)
    assert search["candidate_epochs"] == 48 and cos["candidate_epochs"] == 12
    assert table.loc["softmax", "ci_half"] == pytest.approx(0.0496828, abs=1e-7)


def test_two_runs_of_one_method_and_seed_are_refused():
    runs = fake_runs()
    runs["run_dir"] = [f"r{i}" for i in range(len(runs))]
    runs = pd.concat([runs, runs.iloc[[0]].assign(run_dir="again")])
    with pytest.raises(ValueError, match=r"two complete runs of softmax seed 0 on digits \(r0, again\)"):
        statistics_mod.summarise(runs)


def test_another_metric_can_be_compared_and_an_unknown_one_is_refused():
    table = statistics_mod.summarise(fake_runs(), "roc_auc").set_index("method")
    assert table.loc["softmax", "mean"] == pytest.approx(0.77)
    with pytest.raises(ValueError, match="allowed: roc_auc, verification_accuracy"):
        statistics_mod.summarise(fake_runs(), "tar")


def test_the_markdown_table_shows_mean_std_ci_tests_and_compute():
    md = tables_mod.table_markdown(statistics_mod.summarise(fake_runs()))
    lines = md.splitlines()
    assert lines[0].startswith("| benchmark | method | n | test verification_accuracy | 95% CI")
    cos = next(line for line in lines if "| cosface |" in line)
    assert "0.7400 ± 0.0300" in cos and "+0.0200 (t=3.46, p=0.074, W p=0.250)" in cos
    assert "| 12 |" in cos
    assert "| search_softmax * |" in md and "| 48 |" in md
    assert "[0.6703, 0.7697]" in next(line for line in lines if "| softmax |" in line)


@pytest.mark.parametrize("text,want", [(3, [0, 1, 2]), ("2", [0, 1]), ("0,3,7", [0, 3, 7]),
                                       ("2-4", [2, 3, 4]), ([5, 1], [5, 1])])
def test_seeds_are_a_count_or_a_list(text, want):
    assert run_plan.parse_seeds(text) == want


@pytest.mark.parametrize("bad", [0, "x", "1,1", "-1", [], True])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(ValueError, match="--seeds"):
        run_plan.parse_seeds(bad)


def test_the_plan_validates_every_space_and_benchmark_before_training(tmp_path):
    specs = run_plan.plan(["digits"], ["softmax", "search_softmax"], [0, 1], tmp_path, {"epochs": 1})
    assert [(s.method, s.seed) for s in specs] == [("softmax", 0), ("softmax", 1),
                                                   ("search_softmax", 0), ("search_softmax", 1)]
    assert specs[-1].out == tmp_path / "digits" / "search_softmax" / "seed1"
    with pytest.raises(FileNotFoundError, match="not_a_space"):
        run_plan.plan(["digits"], ["softmax", "not_a_space"], [0], tmp_path, {})
    with pytest.raises(ValueError, match="kind 'nope' is not known"):
        run_plan.plan(["nope"], ["softmax"], [0], tmp_path, {})
    with pytest.raises(ValueError, match="appears twice"):
        run_plan.plan(["digits"], ["softmax", "softmax"], [0], tmp_path, {})
    with pytest.raises(ValueError, match="training.epochs"):
        run_plan.plan(["digits"], ["softmax"], [0], tmp_path, {"epochs": 0})
    assert not any(tmp_path.iterdir())


TINY = dict(epochs=1, candidates=2, device="cpu")
BENCH = "digits?train_classes=2&pairs=200"  # small: 2 training classes, 200 pairs
TAG = run_plan.safe_name(BENCH)


@pytest.fixture(scope="session")
def compared(tmp_path_factory):
    """A tiny compare (2 methods x 2 seeds, 1 epoch), shared with test_report."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    events = []
    result = compare_mod.compare([BENCH], "softmax,search_softmax", 2, out=out, progress=events.append,
                         **TINY)
    return out, result, events


def test_compare_runs_every_method_and_seed_and_writes_its_files(compared):
    out, result, events = compared
    assert result["done"] == {f"{TAG}/{m}/seed{k}": "ran"
                              for m in ("softmax", "search_softmax") for k in (0, 1)}
    for m in ("softmax", "search_softmax"):
        for k in (0, 1):
            run = out / TAG / m / f"seed{k}"
            assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
            assert json.loads((run / "results.json").read_text())["seed"] == k
    for name in ("runs.csv", "table.csv", "table.md", "compare.json"):
        assert (out / name).is_file(), name
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and set(runs["status"]) == {"complete"}
    assert {"test/verification_accuracy", "test/roc_auc", "final/s", "final/m"} <= set(runs.columns)
    table = pd.read_csv(out / "table.csv")
    assert list(table["method"]) == ["softmax", "search_softmax"]
    assert list(table["candidate_epochs"]) == [2, 2]  # 1 epoch x 2 candidates, for both
    assert (table["n"] == 2).all()
    md = (out / "table.md").read_text()
    assert f"| {BENCH} | search_softmax * | 2 |" in md
    settings = json.loads((out / "compare.json").read_text())
    assert settings["seeds"] == [0, 1] and settings["overrides"]["epochs"] == 1
    kinds = [e.kind for e in events]
    assert kinds.count("start") == 4 and kinds.count("done") == 4 and "search" in kinds
    assert not list(out.rglob(".*tmp*"))  # no temporary files left


def test_a_second_compare_skips_complete_runs_and_resumes_interrupted_ones(compared):
    out, first, _ = compared
    run = out / TAG / "search_softmax" / "seed1"
    before = json.loads((run / "manifest.json").read_text())
    # an interrupt after the last epoch's checkpoint but before the test
    (run / "results.json").unlink()
    (run / "manifest.json").write_text(json.dumps({**before, "status": "interrupted"}))
    again = compare_mod.compare([BENCH], ["softmax", "search_softmax"], "0-1", out=out, **TINY)
    assert again["done"] == {f"{TAG}/softmax/seed0": "skipped",
                             f"{TAG}/softmax/seed1": "skipped",
                             f"{TAG}/search_softmax/seed0": "skipped",
                             f"{TAG}/search_softmax/seed1": "resumed"}
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete"
    # same runs, same table (the resumed run's wall time is no longer one session's)
    pd.testing.assert_frame_equal(again["table"].drop(columns="seconds"),
                                  first["table"].drop(columns="seconds"))


def test_a_compare_with_other_settings_on_the_same_folder_is_refused(compared):
    out, _, _ = compared
    with pytest.raises(ValueError, match="different configuration.*training.epochs"):
        compare_mod.compare([BENCH], "softmax", 2, out=out, **{**TINY, "epochs": 2})


def test_compare_threads_reach_every_run_it_starts(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = cli_main(["compare", "--benchmark", BENCH, "--spaces", "softmax,cosface", "--seeds",
                     "1", "--epochs", "1", "--candidates", "1", "--device", "cpu",
                     "--threads", "1", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    runs = sorted(out.glob("*/*/seed0"))
    assert [r.parent.name for r in runs] == ["cosface", "softmax"]
    for run in runs:
        assert config_mod.load(run / "config.toml")["run"]["threads"] == 1  # default is 0
        assert json.loads((run / "manifest.json").read_text())["cpu_threads"] == 1


def test_the_cli_compare_prints_the_table_and_errors_in_one_line(compared, capsys):
    out, _, _ = compared
    code = cli_main(["compare", "--benchmark", BENCH, "--spaces", "softmax,search_softmax",
                     "--seeds", "2", "--epochs", "1", "--candidates", "2", "--device", "cpu",
                     "--threads", "1", "--out", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0
    # the runs were made with the default thread count: another --threads still skips them
    assert "4 runs: 0 ran, 0 resumed, 4 already complete" in printed.out
    assert "| softmax |" in printed.out

    bad = out.parent / "never"
    code = cli_main(["compare", "--benchmark", "digits", "--spaces", "softmax,nope",
                     "--out", str(bad), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("lfsearch: error:")
    assert "nope" in err
    assert not bad.exists()  # nothing half-written


# A fabricated compare folder with known numbers: test tar@far=1e-3_all (digits' primary
# metric) and final validation reward per seed 0, 1, 2 (softmax also has a seed 3).
FABRICATED = {
    "softmax": ([0.60, 0.62, 0.64, 0.66], [0.70, 0.75, 0.71, 0.99]),
    "cosface": ([0.70, 0.66, 0.69], [0.72, 0.74, 0.78]),
    "arcface": ([0.68, 0.72, 0.64], [0.74, 0.73, 0.70]),
    "search_softmax": ([0.71, 0.66, 0.72], [0.80, 0.80, 0.80]),
}


def fabricate_compare(root):
    from lfsearch.experiments import run_plan
    from lfsearch.search import config as config_mod

    for method, (tests, vals) in FABRICATED.items():
        cfg = config_mod.resolve(config_mod.load(method), epochs=12)
        for seed, (test, val) in enumerate(zip(tests, vals)):
            folder = root / "digits" / method / f"seed{seed}"
            folder.mkdir(parents=True)
            config_mod.dump(config_mod.resolve(cfg, seed=seed), folder / "config.toml")
            (folder / "manifest.json").write_text(json.dumps({"status": "complete"}))
            (folder / "results.json").write_text(json.dumps({
                "candidate_epochs": 12 * cfg["controller"]["candidates"],
                "test_metric": "verification_accuracy", "final_validation_reward": val,
                "test": {"verification_accuracy": 0.9, "tar@far=1e-3_all": test,
                         "tar@far=1e-4_all": None, "rank1": test + 0.1}}))
    return run_plan.collect_runs(run_plan.find_run_dirs(root))


def test_the_validation_selected_best_fixed_row_on_a_fabricated_compare(tmp_path):
    table = statistics_mod.summarise(fabricate_compare(tmp_path)).set_index("method")
    sel = table.loc[statistics_mod.SELECTED]
    # per seed the best validation reward among softmax, cosface, arcface (seed 3 lacks
    # cosface and arcface: left out): seed 0 arcface (.74) -> .68; seed 1 softmax (.75) ->
    # .62; seed 2 cosface (.78) -> .69
    assert sel["metric"] == "tar@far=1e-3_all"  # digits' primary metric, chosen in advance
    assert sel["n"] == 3 and sel["mean"] == pytest.approx((0.68 + 0.62 + 0.69) / 3)
    assert sel["selected"] == "arcface×1, softmax×1, cosface×1"
    assert sel["rank1:mean"] == pytest.approx((0.78 + 0.72 + 0.79) / 3)  # the chosen runs'
    assert sel["candidate_epochs"] == 36  # 12 + 12 + 12: every fixed method was trained
    # search_softmax against it: d = .03, .04, .03; t = (1/30) / (sd(d)/sqrt 3) = 10;
    # df 2: p = 1 - t / sqrt(t² + 2)
    search = table.loc["search_softmax"]
    assert search["vs_selected_diff"] == pytest.approx(1 / 30)
    assert search["vs_selected_t"] == pytest.approx(10.0)
    assert search["vs_selected_p"] == pytest.approx(1 - 10 / math.sqrt(102))
    # the test oracle stays: cosface has the highest TEST mean (.6833 against arcface's .68)
    assert (table["best_margin"] == "cosface").all()
    assert search["vs_best_margin_diff"] == pytest.approx((0.01 + 0.0 + 0.03) / 3)
    assert "tar@far=1e-4_all:mean" not in table  # no run measured it (too few impostors)
    md = tables_mod.table_markdown(table.reset_index())
    header = md.splitlines()[0]
    assert "test tar@far=1e-3_all" in header and "verification_accuracy ± CI" in header
    assert "rank1 ± CI" in header and "tar@far=1e-4_all" not in header  # no finite value
    assert "vs best margin (test oracle)" in header and "vs validation-selected" in header
    assert "| validation-selected best fixed (arcface×1, softmax×1, cosface×1) |" in md
    assert "| 36 |" in md


def test_primary_metrics_are_chosen_per_benchmark_kind():
    assert statistics_mod.primary_metric("folder:/data/orl?size=56x46") == "tar@far=1e-3_all"
    assert statistics_mod.primary_metric("mnist-open:/data/mnist") == "tar@far=1e-3_all"
    assert statistics_mod.primary_metric("cifar10:/data/c") == "accuracy"
    assert statistics_mod.primary_metric("bin:/data/lfw.bin") == "verification_accuracy"
    # without the primary metric in the runs, each run's own test metric is compared
    assert statistics_mod.summarise(fake_runs())["metric"].eq("verification_accuracy").all()
