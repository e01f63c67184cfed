"""Controllers: bounds, seeding, resume, learning on synthetic rewards, and input errors."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from lfsearch.search import controllers
from lfsearch.search.controllers import ParamSpec

X = ParamSpec("x", 0.0, 1.0, 0.2)
XY = [ParamSpec("x", 0.0, 1.0, 0.2), ParamSpec("y", -1.0, 1.0, 0.8)]
LOG_A = ParamSpec("a", 1.0, 1e4, 1.0, log=True)
MIXED = [ParamSpec("m", 0.0, 0.8, 0.35), LOG_A, ParamSpec("s", 1.0, 64.0, 30.0)]

QUICK = {  # every kind with settings that keep the tests fast
    "fixed": {},
    "random": {},
    "reinforce": {},
    "optuna": {"n_startup_trials": 4},
}


def quadratic(params: dict[str, float]) -> float:
    """r = -(x - 0.7)^2 - (y + 0.4)^2 (y only when present): optimum x = 0.7, y = -0.4."""
    r = -(params["x"] - 0.7) ** 2
    if "y" in params:
        r -= (params["y"] + 0.4) ** 2
    return r


def log_quadratic(params: dict[str, float]) -> float:
    """r = -(log10 a - 2)^2: optimum a = 100 on [1, 1e4]."""
    return -(math.log10(params["a"]) - 2.0) ** 2


def mixed_reward(params: dict[str, float]) -> float:
    return -(params["m"] - 0.5) ** 2 - (math.log10(params["a"]) - 1) ** 2 / 16 \
        - ((params["s"] - 40) / 63) ** 2


def run_epochs(ctrl, reward, epochs: int, m: int) -> list[list[dict[str, float]]]:
    seen = []
    for _ in range(epochs):
        params = ctrl.sample(m)
        seen.append(params)
        ctrl.update(params, [reward(p) for p in params])
    return seen


def torch_roundtrip(state: dict) -> dict:
    """What a checkpoint does: torch.save then torch.load (weights_only, the safe default)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ------------------------------------------------------------------------------------------
# ParamSpec
# ------------------------------------------------------------------------------------------


def test_paramspec_unit_map_round_trips_and_stays_in_bounds():
    for spec in (X, LOG_A, ParamSpec("t", -3.0, 5.0, 0.0)):
        for v in (spec.low, spec.init, spec.high, (spec.low + spec.high) / 2):
            assert spec.from_unit(spec.to_unit(v)) == pytest.approx(v, rel=1e-12, abs=1e-12)
        assert spec.from_unit(-0.5) == spec.low and spec.from_unit(1.5) == spec.high
    assert LOG_A.to_unit(100.0) == pytest.approx(0.5)  # log space: 100 is half-way to 1e4


@pytest.mark.parametrize("kwargs, field", [
    (dict(name="a", low=1.0, high=1.0, init=1.0), "low must be < high"),
    (dict(name="a", low=2.0, high=1.0, init=1.5), "low must be < high"),
    (dict(name="a", low=0.0, high=1.0, init=1.5), "init must lie within"),
    (dict(name="a", low=0.0, high=10.0, init=1.0, log=True), "log=true needs low > 0"),
    (dict(name="a", low=-1.0, high=10.0, init=1.0, log=True), "log=true needs low > 0"),
    (dict(name="a", low="0", high=1.0, init=0.5), "low must be a real number"),
    (dict(name="a", low=0.0, high=math.inf, init=0.5), "high must be finite"),
    (dict(name="a", low=0.0, high=1.0, init=math.nan), "init must be finite"),
    (dict(name="", low=0.0, high=1.0, init=0.5), "name must be a non-empty string"),
    (dict(name="a", low=0.0, high=1.0, init=0.5, log="yes"), "log must be true or false"),
])
def test_paramspec_rejects_bad_input_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ParamSpec(**kwargs)


# ------------------------------------------------------------------------------------------
# shared behaviour of all kinds
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", controllers.KINDS)
def test_samples_respect_bounds(kind):
    ctrl = controllers.build(kind, MIXED, seed=3, **QUICK[kind])
    assert isinstance(ctrl, controllers.Controller)
    for params in run_epochs(ctrl, mixed_reward, epochs=6, m=5):
        assert len(params) == 5
        for p in params:
            assert sorted(p) == ["a", "m", "s"]
            for spec in MIXED:
                assert isinstance(p[spec.name], float)
                assert spec.low <= p[spec.name] <= spec.high


def test_reinforce_clips_draws_to_bounds_even_with_a_wide_policy():
    ctrl = controllers.build("reinforce", [ParamSpec("x", 0.0, 1.0, 0.0)], seed=0, sigma=1.0)
    xs = [p["x"] for p in ctrl.sample(200)]
    assert min(xs) == 0.0 and max(xs) <= 1.0 and sum(x == 0.0 for x in xs) > 50


@pytest.mark.parametrize("kind", controllers.KINDS)
def test_same_seed_same_samples_other_seed_other_samples(kind):
    a = run_epochs(controllers.build(kind, MIXED, seed=7, **QUICK[kind]), mixed_reward, 5, 4)
    b = run_epochs(controllers.build(kind, MIXED, seed=7, **QUICK[kind]), mixed_reward, 5, 4)
    c = run_epochs(controllers.build(kind, MIXED, seed=8, **QUICK[kind]), mixed_reward, 5, 4)
    assert a == b
    if kind != "fixed":
        assert a != c


@pytest.mark.parametrize("kind, settings", [
    ("fixed", {"schedule": [{"m": 0.1}, {"m": 0.2, "s": 40.0}, {"m": 0.3}]}),
    ("random", {"warmup_epochs": 1}),
    ("reinforce", {}),
    ("reinforce", {"optimizer": "sgd", "sigma_decay": 0.9, "reward_normalisation": "rank",
                   "warmup_epochs": 2}),
    ("reinforce", {"sigma_final": 0.02, "sigma_schedule": "cosine", "horizon": 9,
                   "baseline": "ema", "ema_decay": 0.5, "warmup_epochs": 1}),
    ("optuna", {"n_startup_trials": 4}),
    ("optuna", {"sampler": "random", "reward_normalisation": "zscore"}),
    ("optuna", {"sampler": "gp", "n_startup_trials": 4}),
])
def test_state_dict_round_trip_continues_identically(kind, settings):
    gp = settings.get("sampler") == "gp"  # GP fits are slow: one parameter, fewer epochs
    space, reward, later = ([X], quadratic, 2) if gp else (MIXED, mixed_reward, 3)

    def fresh():
        return controllers.build(kind, space, seed=11, **settings)

    straight = fresh()
    run_epochs(straight, reward, epochs=2 if gp else 4, m=3)
    state = torch_roundtrip(straight.state_dict())
    expected = run_epochs(straight, reward, epochs=later, m=3)
    expected_row = straight.describe()

    resumed = fresh()
    run_epochs(resumed, reward, epochs=1, m=2)  # a different history, overwritten below
    resumed.load_state_dict(state)
    assert run_epochs(resumed, reward, epochs=later, m=3) == expected
    row = resumed.describe()
    assert row.keys() == expected_row.keys()
    np.testing.assert_allclose(list(row.values()), list(expected_row.values()))


@pytest.mark.parametrize("kind", controllers.KINDS)
def test_describe_is_a_flat_row_of_floats_with_fixed_columns(kind):
    ctrl = controllers.build(kind, XY, seed=0, **QUICK[kind])
    first = ctrl.describe()
    run_epochs(ctrl, quadratic, 3, 4)
    later = ctrl.describe()
    assert first.keys() == later.keys() and "epoch" in later and later["epoch"] == 3.0
    assert all(isinstance(v, float) for v in later.values())


def test_describe_columns_per_kind():
    assert set(controllers.build("reinforce", XY, seed=0).describe()) >= {
        "mu_x", "mu_y", "sigma_x", "sigma_y", "best_reward"}
    assert set(controllers.build("fixed", XY, seed=0).describe()) == {"epoch", "value_x", "value_y"}
    assert set(controllers.build("optuna", XY, seed=0).describe()) >= {"best_x", "best_y", "best_reward"}


# ------------------------------------------------------------------------------------------
# fixed
# ------------------------------------------------------------------------------------------


def test_fixed_returns_init_values_and_allows_an_empty_space():
    ctrl = controllers.build("fixed", XY, seed=0)
    assert ctrl.sample(3) == [{"x": 0.2, "y": 0.8}] * 3
    assert controllers.build("fixed", [], seed=0).sample(2) == [{}, {}]


def test_fixed_schedule_replays_in_order_and_repeats_the_last_entry():
    schedule = [{"x": 0.1, "y": 0.0}, {"x": 0.5}, {"x": 0.9, "y": -1.0}]
    ctrl = controllers.build("fixed", XY, seed=0, schedule=schedule)
    got = [batch[0] for batch in run_epochs(ctrl, quadratic, epochs=5, m=2)]
    assert got == [{"x": 0.1, "y": 0.0}, {"x": 0.5, "y": 0.8},  # missing y: its init
                   {"x": 0.9, "y": -1.0}, {"x": 0.9, "y": -1.0}, {"x": 0.9, "y": -1.0}]
    assert ctrl.describe()["value_x"] == 0.9


# ------------------------------------------------------------------------------------------
# random
# ------------------------------------------------------------------------------------------


def test_random_is_uniform_in_the_working_space():
    ctrl = controllers.build("random", [X, LOG_A], seed=0)
    params = ctrl.sample(4000)
    xs = np.array([p["x"] for p in params])
    log_a = np.log10([p["a"] for p in params])
    assert abs(xs.mean() - 0.5) < 0.02 and abs(np.median(xs) - 0.5) < 0.03
    assert abs(log_a.mean() - 2.0) < 0.08  # log-uniform on [1, 1e4]: median 100, not 5000
    assert len({round(x, 12) for x in xs}) == len(xs)  # independent per candidate


def test_random_warmup_returns_init_then_searches():
    ctrl = controllers.build("random", XY, seed=0, warmup_epochs=2)
    batches = run_epochs(ctrl, quadratic, epochs=3, m=3)
    assert batches[0] == batches[1] == [{"x": 0.2, "y": 0.8}] * 3
    assert len({p["x"] for p in batches[2]}) == 3


# ------------------------------------------------------------------------------------------
# reinforce
# ------------------------------------------------------------------------------------------


def reinforce_trajectory(space, reward, *, seed, epochs, m, **settings):
    ctrl = controllers.build("reinforce", space, seed=seed, **settings)
    trajectory = []
    for _ in range(epochs):
        params = ctrl.sample(m)
        ctrl.update(params, [reward(p) for p in params])
        trajectory.append(ctrl.mean())
    return ctrl, trajectory


@pytest.mark.parametrize("m", [4, 6, 8])
def test_reinforce_mean_converges_to_a_known_optimum(m):
    # r = -(x - 0.7)^2 on [0, 1], init 0.2; defaults: sigma 0.1, Adam lr 0.05, z-scored rewards
    errors = []
    for seed in range(5):
        _, traj = reinforce_trajectory([X], quadratic, seed=seed, epochs=40, m=m)
        err = [abs(mu["x"] - 0.7) for mu in traj]
        assert err[11] < 0.1, (seed, err[:12])   # reached within 12 updates (0.5 away)
        assert max(err[20:]) < 0.15, seed        # and stays there (Adam overshoots ~1 sigma)
        errors.append(err[-1])
    assert np.mean(errors) < 0.05


def test_reinforce_with_sigma_annealing_converges_tightly():
    for seed in range(5):
        ctrl, traj = reinforce_trajectory([X], quadratic, seed=seed, epochs=40, m=6,
                                          sigma_decay=0.95, sigma_min=0.02)
        assert abs(traj[-1]["x"] - 0.7) < 0.05
        assert ctrl.describe()["sigma_x"] == pytest.approx(0.02)  # 0.1 * 0.95^40 < 0.02


def test_reinforce_two_parameters_converge():
    for seed in range(3):
        _, traj = reinforce_trajectory(XY, quadratic, seed=seed, epochs=60, m=8)
        assert abs(traj[-1]["x"] - 0.7) < 0.1 and abs(traj[-1]["y"] + 0.4) < 0.2, traj[-1]


def test_reinforce_log_space_parameter_converges():
    # A in [1, 1e4] searched in log space from A = 1; optimum A = 100 (half-way in log10)
    for seed in range(5):
        _, traj = reinforce_trajectory([LOG_A], log_quadratic, seed=seed, epochs=40, m=6)
        assert abs(math.log10(traj[-1]["a"]) - 2.0) < 0.4, traj[-1]  # within 10% of the range
        assert abs(math.log10(traj[12]["a"]) - 2.0) < 0.5


def test_reinforce_moves_a_mean_that_starts_at_the_lower_bound():
    # The released AM-LFS/LFS code passes the mean through a ReLU at zero, which blocks its
    # gradient forever. Ours starts at the bound and moves at the very first update.
    ctrl = controllers.build("reinforce", [ParamSpec("x", 0.0, 1.0, 0.0)], seed=0)
    params = ctrl.sample(6)
    ctrl.update(params, [quadratic(p) for p in params])
    assert ctrl.mean()["x"] > 0.0
    run_epochs(ctrl, quadratic, epochs=30, m=6)
    assert abs(ctrl.mean()["x"] - 0.7) < 0.1


@pytest.mark.parametrize("settings", [
    {"optimizer": "sgd"},
    {"reward_normalisation": "mean", "optimizer": "sgd", "lr": 0.05},
    {"reward_normalisation": "rank"},
    {"reward_normalisation": "none", "lr": 0.1},
])
def test_reinforce_learns_with_every_optimizer_and_normalisation(settings):
    _, traj = reinforce_trajectory([X], quadratic, seed=1, epochs=50, m=8, **settings)
    assert abs(traj[-1]["x"] - 0.7) < 0.1, traj[-1]


def test_reinforce_gradient_matches_the_formula():
    ctrl = controllers.build("reinforce", [X], seed=0, optimizer="sgd", lr=1e-3,
                   reward_normalisation="mean")
    params = [{"x": 0.1}, {"x": 0.3}, {"x": 0.5}]  # not proposed by the controller
    rewards = [0.0, 1.0, 5.0]
    ctrl.update(params, rewards)
    r = np.array(rewards) - np.mean(rewards)
    grad = np.mean(r * (np.array([0.1, 0.3, 0.5]) - 0.2)) / 0.1**2
    assert ctrl.describe()["grad_x"] == pytest.approx(grad)
    assert ctrl.mean()["x"] == pytest.approx(0.2 + 1e-3 * grad)


def test_reinforce_update_matches_candidates_by_value_not_order():
    a = controllers.build("reinforce", XY, seed=4)
    b = controllers.build("reinforce", XY, seed=4)
    pa, pb = a.sample(5), b.sample(5)
    a.update(pa, [quadratic(p) for p in pa])
    b.update(pb[::-1], [quadratic(p) for p in pb[::-1]])
    ra, rb = a.describe(), b.describe()
    assert ra.keys() == rb.keys()
    np.testing.assert_allclose(list(ra.values()), list(rb.values()), rtol=1e-12)


def test_reinforce_warmup_keeps_mean_fixed_then_learns():
    ctrl = controllers.build("reinforce", [X], seed=0, warmup_epochs=3)
    for _ in range(3):
        params = ctrl.sample(4)
        assert params == [{"x": 0.2}] * 4
        ctrl.update(params, [1.0, 2.0, 3.0, 4.0])
        assert ctrl.mean()["x"] == 0.2
    params = ctrl.sample(4)
    assert len({p["x"] for p in params}) == 4
    ctrl.update(params, [quadratic(p) for p in params])
    assert ctrl.mean()["x"] != 0.2


def test_reinforce_survives_non_finite_rewards():
    ctrl = controllers.build("reinforce", [X], seed=0)
    params = ctrl.sample(4)
    ctrl.update(params, [math.nan, 1.0, math.inf, -math.inf][: len(params)])
    assert math.isfinite(ctrl.mean()["x"])
    params = ctrl.sample(3)
    ctrl.update(params, [math.nan] * 3)
    assert math.isfinite(ctrl.mean()["x"])


def test_reward_normalisations():
    r = np.array([1.0, 2.0, 2.0, 7.0])
    z = controllers.normalise_rewards(r, "zscore")
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    assert list(controllers.normalise_rewards(r, "mean")) == [-2.0, -1.0, -1.0, 4.0]
    assert list(controllers.normalise_rewards(r, "rank")) == pytest.approx([-0.5, 0.0, 0.0, 0.5])
    assert list(controllers.normalise_rewards(r, "none")) == list(r)
    assert list(controllers.normalise_rewards(np.full(3, 0.9), "zscore")) == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------
# optuna
# ------------------------------------------------------------------------------------------


def test_optuna_tpe_improves_on_a_synthetic_reward():
    ctrl = controllers.build("optuna", XY, seed=0)
    batches = run_epochs(ctrl, quadratic, epochs=12, m=6)
    assert batches[0][0] == {"x": 0.2, "y": 0.8}  # the init point is the first candidate
    best, value = ctrl.best()
    assert abs(best["x"] - 0.7) < 0.1 and abs(best["y"] + 0.4) < 0.2, best
    first = np.mean([quadratic(p) for p in batches[0]])
    last = np.mean([quadratic(p) for b in batches[-3:] for p in b])
    assert last > first  # later candidates concentrate near the optimum
    assert ctrl.describe()["trials"] == 72.0


def test_optuna_log_parameter_uses_log_distribution():
    ctrl = controllers.build("optuna", [LOG_A], seed=0, n_startup_trials=6)
    batches = run_epochs(ctrl, log_quadratic, epochs=8, m=5)
    best, _ = ctrl.best()
    assert abs(math.log10(best["a"]) - 2.0) < 0.3, best
    startup = [p["a"] for b in batches[:2] for p in b[1:]]
    assert min(startup) < 100  # log-uniform startup reaches small A (uniform would rarely)


def test_optuna_gp_sampler_runs():
    ctrl = controllers.build("optuna", [X], seed=0, sampler="gp", n_startup_trials=3)
    run_epochs(ctrl, quadratic, epochs=3, m=3)
    best, _ = ctrl.best()
    assert 0.0 <= best["x"] <= 1.0


def test_optuna_cmaes_sampler_or_clear_error():
    try:
        import cmaes  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="cmaes"):
            controllers.build("optuna", XY, seed=0, sampler="cmaes")
        return
    ctrl = controllers.build("optuna", XY, seed=0, sampler="cmaes")
    for params in run_epochs(ctrl, quadratic, epochs=3, m=4):
        assert all(0 <= p["x"] <= 1 and -1 <= p["y"] <= 1 for p in params)


def test_optuna_warmup_and_failed_candidates():
    ctrl = controllers.build("optuna", [X], seed=0, warmup_epochs=2, n_startup_trials=2)
    for _ in range(2):
        params = ctrl.sample(3)
        assert params == [{"x": 0.2}] * 3
        ctrl.update(params, [0.1, 0.2, 0.3])
    assert ctrl.describe()["trials"] == 0.0
    params = ctrl.sample(3)
    ctrl.update(params, [math.nan, -1.0, -2.0])  # a diverged candidate: the worst reward
    assert ctrl.describe()["trials"] == 3.0 and ctrl.best()[1] == -1.0
    ctrl.sample(2)
    ctrl.update([], [])  # asked, never rewarded: told as failed, not left running
    assert {h["state"] for h in ctrl.state_dict()["history"]} == {"COMPLETE", "FAIL"}


def test_optuna_leaves_logging_as_it_was():
    import optuna

    before = optuna.logging.get_verbosity()
    run_epochs(controllers.build("optuna", [X], seed=0), quadratic, 2, 2)
    assert optuna.logging.get_verbosity() == before


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda: controllers.build("cmaes", [X], seed=0), r"kind must be one of \['fixed', 'random'"),
    (lambda: controllers.build("reinforce", [X], seed=0, sigmaa=0.1), r"unknown setting.*'sigmaa'.*allowed"),
    (lambda: controllers.build("fixed", [X], seed=0, sigma=0.1), r"unknown setting.*allowed: \['schedule', 'curve'\]"),
    (lambda: controllers.build("reinforce", [X], seed=0, optimizer="rmsprop"),
     r"optimizer must be one of \['adam', 'sgd'\]"),
    (lambda: controllers.build("reinforce", [X], seed=0, reward_normalisation="minmax"),
     r"reward_normalisation must be one of \['zscore', 'mean', 'rank', 'none'\]"),
    (lambda: controllers.build("optuna", [X], seed=0, sampler="nsga2"),
     r"sampler must be one of \['tpe', 'cmaes', 'gp', 'random'\]"),
    (lambda: controllers.build("reinforce", [X], seed=0, sigma=0.0), r"sigma \(x\) must be > 0"),
    (lambda: controllers.build("reinforce", [X], seed=0, sigma={"z": 0.1}), r"sigma: unknown parameter"),
    (lambda: controllers.build("reinforce", [X], seed=0, sigma_decay=1.5), r"sigma_decay must be > 0 and <= 1"),
    (lambda: controllers.build("reinforce", [X], seed=0, lr=-1), r"lr must be > 0"),
    (lambda: controllers.build("random", [X], seed=0, warmup_epochs=-1), r"warmup_epochs must be an integer >= 0"),
    (lambda: controllers.build("random", [X], seed="0"), r"seed must be an integer"),
    (lambda: controllers.build("random", [], seed=0), r"needs at least one parameter"),
    (lambda: controllers.build("random", [X, X], seed=0), r"duplicate parameter name"),
    (lambda: controllers.build("random", ["x"], seed=0), r"space entries must be ParamSpec"),
    (lambda: controllers.build("random", [{"name": "x", "low": 0, "hi": 1, "init": 0}], seed=0),
     r"unknown key\(s\) \['hi'\]; allowed"),
    (lambda: controllers.build("fixed", [X], seed=0, schedule=[{"z": 0.1}]), r"schedule\[0\]: unknown parameter"),
    (lambda: controllers.build("fixed", [X], seed=0, schedule=[{"x": 0.1}, {"x": 2.0}]),
     r"schedule\[1\]\['x'\] = 2 is outside \[low, high\] = \[0, 1\]"),
    (lambda: controllers.build("fixed", [X], seed=0, schedule=[]), r"schedule must hold at least one"),
    (lambda: controllers.build("random", [X], seed=0).sample(0), r"n \(candidates\) must be an integer >= 1"),
    (lambda: controllers.build("reinforce", [X], seed=0).update([{"x": 0.5}], [1.0, 2.0]),
     r"rewards: got 2 rewards for 1 params"),
    (lambda: controllers.build("reinforce", [X], seed=0).update([{"y": 0.5}], [1.0]),
     r"params\[0\] must be a dict with exactly the keys \['x'\]"),
    (lambda: controllers.build("reinforce", [X], seed=0).load_state_dict(
        controllers.build("random", [X], seed=0).state_dict()), r"state is for kind 'random'"),
    (lambda: controllers.build("reinforce", [X], seed=0).load_state_dict(
        controllers.build("reinforce", XY, seed=0).state_dict()), r"search space differs"),
])
def test_bad_input_raises_value_error_naming_the_field(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_available_lists_kinds_and_settings():
    settings = controllers.available()
    assert tuple(settings) == controllers.KINDS
    assert "warmup_epochs" in settings["reinforce"] and "sampler" in settings["optuna"]


# ------------------------------------------------------------------ baselines and advantages


def sgd_reinforce(**settings):
    """A reinforce controller whose update is readable: plain SGD, a tiny step."""
    return controllers.build("reinforce", [X], seed=0, optimizer="sgd", lr=1e-4, **settings)


def expected_grad(actions, advantages, mu, sigma=0.1):
    """grad_mu = mean_i(A_i (a_i - mu)) / sigma^2, the REINFORCE estimate."""
    return float(np.mean(np.asarray(advantages) * (np.asarray(actions) - mu)) / sigma**2)


def test_ema_baseline_hand_worked():
    # d = 0.5: b_1 = mean(r_1) = 2; then b_2 = 0.5*2 + 0.5*2 = 2; b_3 = 0.5*2 + 0.5*6 = 4
    ctrl = sgd_reinforce(baseline="ema", ema_decay=0.5, reward_normalisation="none")
    acts = [0.1, 0.3, 0.5]
    params = [{"x": a} for a in acts]
    mu = 0.2
    for rewards, b in (([0.0, 1.0, 5.0], 2.0), ([4.0, 6.0, 8.0], 2.0), ([1.0, 1.0, 1.0], 4.0)):
        ctrl.update(params, rewards)
        grad = expected_grad(acts, np.array(rewards) - b, mu)
        assert ctrl.describe()["grad_x"] == pytest.approx(grad)
        mu += 1e-4 * grad
        assert ctrl.mean()["x"] == pytest.approx(mu)
    assert ctrl.ema == pytest.approx(0.5 * 4.0 + 0.5 * 1.0)


@pytest.mark.parametrize("baseline, b", [("batch_mean", 2.0), ("none", 0.0)])
def test_batch_mean_and_no_baseline(baseline, b):
    ctrl = sgd_reinforce(baseline=baseline, reward_normalisation="none")
    acts, rewards = [0.1, 0.3, 0.5], [0.0, 1.0, 5.0]
    ctrl.update([{"x": a} for a in acts], rewards)
    assert ctrl.describe()["grad_x"] == pytest.approx(
        expected_grad(acts, np.array(rewards) - b, 0.2))


def test_zscore_divides_the_baselined_reward_by_the_batch_std():
    ctrl = sgd_reinforce(baseline="ema", ema_decay=0.5)  # zscore by default
    acts = [0.1, 0.3, 0.5]
    ctrl.update([{"x": a} for a in acts], [0.0, 1.0, 5.0])  # b = 2 (first batch)
    mu = ctrl.mean()["x"]
    r = np.array([3.0, 3.0, 6.0])  # b = ema = 2 (this batch's mean 4 enters afterwards)
    ctrl.update([{"x": a} for a in acts], list(r))
    assert ctrl.describe()["grad_x"] == pytest.approx(expected_grad(acts, (r - 2.0) / r.std(), mu))


def test_rank_normalisation_gives_centred_ranks_whatever_the_baseline():
    acts, rewards = [0.1, 0.3, 0.5, 0.7], [0.3, 0.1, 0.2, 0.4]
    ranks = [1 / 6, -1 / 2, -1 / 6, 1 / 2]  # ranks 2, 0, 1, 3 of 0..3, over 3, minus 0.5
    assert list(controllers.advantages(np.array(rewards), "rank", 123.0)) == pytest.approx(ranks)
    for baseline in controllers.BASELINES:
        ctrl = sgd_reinforce(baseline=baseline, reward_normalisation="rank")
        ctrl.update([{"x": a} for a in acts], rewards)
        assert ctrl.describe()["grad_x"] == pytest.approx(expected_grad(acts, ranks, 0.2))


# ------------------------------------------------------------------ sigma annealing


@pytest.mark.parametrize("schedule, middle", [
    ("log_linear", 0.2 * 0.1 ** 0.5),          # sigma (sigma_f / sigma)^(2/4)
    ("cosine", 0.02 + 0.18 * 0.5),             # sigma_f + (sigma - sigma_f)(1 + cos(pi/2))/2
])
def test_sigma_schedule_goes_from_sigma_to_sigma_final(schedule, middle):
    ctrl = controllers.build("reinforce", [ParamSpec("x", 0.0, 1.0, 0.5)], seed=0, sigma=0.2,
                   sigma_final=0.02, sigma_schedule=schedule, horizon=5)
    used = []
    for _ in range(5):  # five updates: the sigmas the five batches were drawn with
        used.append(float(ctrl.sigma[0]))
        params = ctrl.sample(4)
        ctrl.update(params, [quadratic(p) for p in params])
    assert used[0] == pytest.approx(0.2) and used[-1] == pytest.approx(0.02)
    assert used[2] == pytest.approx(middle)
    assert all(a > b for a, b in zip(used, used[1:]))
    # the draws really use it: spread of many draws around a mean inside the bounds
    ctrl.mu[:] = 0.5
    ctrl.sigma[:] = used[-1]
    draws = [p["x"] for p in ctrl.sample(4000)]
    assert np.std(draws) == pytest.approx(0.02, rel=0.05)


def test_sigma_schedule_starts_after_the_warmup():
    ctrl = controllers.build("reinforce", [X], seed=0, sigma=0.2, sigma_final=0.05, horizon=4,
                   warmup_epochs=2)
    used = []
    for _ in range(4):
        used.append(float(ctrl.sigma[0]))
        params = ctrl.sample(3)
        ctrl.update(params, [quadratic(p) for p in params])
    assert used == pytest.approx([0.2, 0.2, 0.2, 0.05])  # 2 learning updates: sigma, sigma_f


@pytest.mark.parametrize("settings, message", [
    ({"sigma_final": 0.02, "sigma_decay": 0.9, "horizon": 5}, r"sigma_final and sigma_decay"),
    ({"sigma_final": 0.02}, r"sigma_final needs horizon"),
    ({"sigma_final": 0.0, "horizon": 5}, r"sigma_final must be > 0"),
    ({"sigma_schedule": "linear"}, r"sigma_schedule must be one of \['log_linear', 'cosine'\]"),
    ({"baseline": "mean"}, r"baseline must be one of \['batch_mean', 'ema', 'none'\]"),
    ({"ema_decay": 1.0}, r"ema_decay must be >= 0 and < 1"),
])
def test_bad_annealing_and_baseline_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        controllers.build("reinforce", [X], seed=0, **settings)
