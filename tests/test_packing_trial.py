"""packing = "auto" decided by a measured speed trial (lfsearch/search/packing_trial.py): the
rule on fake timings, the reasons, the real trial on CPU (positive times, the start state and
every RNG left as they were) and what a CPU run records in manifest.json."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lfsearch import data, losses, models
from lfsearch.cli import main as cli_main
from lfsearch.search import accel as accel_mod
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import memory, packing_trial

D = 16


def plan(mode="packed", chunk=4, candidates=4):
    return memory.PackingPlan(mode, chunk if mode == "packed" else None, candidates, 1, 1, 1,
                              100, reason="test plan")


def fake_trial(packed, sequential, candidates=4):
    calls = []

    def trial(chunk):
        calls.append(chunk)
        return packing_trial.Trial(candidates, chunk, packed, sequential)
    return trial, calls


@pytest.mark.parametrize("packed,sequential,expected", [
    (0.5, 1.0, "packed"), (0.94, 1.0, "packed"),            # faster by more than the margin
    (0.95, 1.0, "sequential"), (0.97, 1.0, "sequential"),   # not 5% faster
    (1.0, 1.0, "sequential"), (2.0, 1.0, "sequential"),     # a tie, or slower
    (None, 1.0, "sequential"), (float("nan"), 1.0, "sequential")])  # out of memory, no figure
def test_the_rule_on_fake_timings(packed, sequential, expected):
    assert packing_trial.rule(packed, sequential) == expected


def test_decide_measures_auto_on_cuda_and_records_why():
    acc = accel_mod.Accel(autocast=torch.bfloat16, channels_last=True)
    trial, calls = fake_trial(0.5, 1.0)
    got = packing_trial.decide("auto", "cuda", acc, plan=plan, trial=trial)
    assert (got.mode, got.chunk, got.reason, calls) == ("packed", 4, "measured", [4])
    record = got.describe()
    assert record["trial"]["ratio"] == 0.5 and record["trial"]["packed_s_per_step"] == 0.5
    assert record["trial"]["sequential_s_per_step"] == 1.0 and record["memory"]["mode"] == "packed"
    json.dumps(record)  # plain data for manifest.json
    trial, calls = fake_trial(1.0, 1.0)
    tie = packing_trial.decide("auto", "cuda", acc, plan=lambda: plan(chunk=2), trial=trial)
    assert (tie.mode, tie.chunk, tie.reason, calls) == ("sequential", None, "measured", [2])
    assert "ratio 1.000" in tie.detail


def test_decide_without_a_trial_where_packing_cannot_or_need_not_be_measured():
    def no_plan():
        raise AssertionError("the memory guard is not asked")

    def no_trial(chunk):
        raise AssertionError("no trial")

    bf16 = accel_mod.Accel(autocast=torch.bfloat16)
    previous = {"mode": "sequential", "reason": "measured"}
    cases = [  # (setting, device, accel, plan, keywords) -> (mode, reason)
        ("auto", "cpu", accel_mod.Accel(), no_plan, {}, "sequential", "cpu default"),
        ("auto", "cuda", accel_mod.Accel(autocast=torch.float16), no_plan, {},
         "sequential", "fp16"),
        ("auto", "cuda", bf16, no_plan, {"reject": True}, "sequential", "early rejection"),
        ("sequential", "cuda", bf16, no_plan, {}, "sequential", "forced by config"),
        ("packed", "cuda", bf16, plan, {}, "packed", "forced by config"),
        ("packed", "cuda", bf16, lambda: plan("sequential"), {}, "sequential", "memory guard"),
        ("auto", "cuda", bf16, lambda: plan("sequential"), {}, "sequential", "memory guard"),
        ("auto", "cuda", bf16, plan, {"torchrun": True}, "packed", "torchrun"),
        ("auto", "cuda", bf16, plan, {"previous": previous}, "sequential", "measured"),
    ]
    for setting, device, acc, make_plan, kw, mode, reason in cases:
        got = packing_trial.decide(setting, device, acc, plan=make_plan, trial=no_trial, **kw)
        assert (got.mode, got.reason) == (mode, reason), (setting, device, kw)
    # forced for tests: the trial runs on CPU too
    trial, calls = fake_trial(0.2, 1.0)
    got = packing_trial.decide("auto", "cpu", accel_mod.Accel(), plan=plan, trial=trial,
                               force_trial=True)
    assert (got.mode, got.reason, calls) == ("packed", "measured", [4])


def make_trainee(num_classes: int, dropout: float = 0.0) -> candidate_mod.Trainee:
    torch.manual_seed(0)
    model = models.build("digits_net", embedding_size=D, in_channels=1, image_size=(8, 8))
    if dropout:  # the trial then draws from the global RNG (dropout masks, vmap's randomness)
        model = torch.nn.Sequential(model, torch.nn.Dropout(dropout))
    loss = losses.build("cosface", embedding_size=D, num_classes=num_classes)
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                                       lr=0.1, momentum=0.9, weight_decay=5e-4)
    return candidate_mod.Trainee(model, loss, opt)


def rng_states():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def test_the_real_trial_on_cpu_leaves_the_start_state_and_every_rng_as_they_were():
    bench = data.load("digits-closed", seed=0)
    trainee = make_trainee(bench.num_classes, dropout=0.2)
    # a start state with optimiser momentum in it, as after an epoch
    candidate_mod.train_one_epoch(trainee, bench.train.subset(slice(0, 64)), batch_size=32,
                                  generator=torch.Generator().manual_seed(1), lr=0.1)
    before, params_before = trainee.state(), trainee.loss.get_params()
    torch.manual_seed(123)
    random.seed(4)
    np.random.seed(5)
    rngs = rng_states()
    trial = packing_trial.measure(trainee, bench.train, {"m": 0.3}, candidates=4, chunk=2,
                                  batch_size=32, lr=0.1, accel=accel_mod.Accel(),
                                  augment="flip")
    assert trial.packed_s_per_step > 0 and trial.sequential_s_per_step > 0
    assert trial.ratio == pytest.approx(trial.packed_s_per_step / trial.sequential_s_per_step)
    after = trainee.state()
    for part in ("model", "loss"):
        assert before[part].keys() == after[part].keys()
        for k, v in before[part].items():
            assert torch.equal(v, after[part][k]) if isinstance(v, torch.Tensor) \
                else v == after[part][k], (part, k)
    assert before["optimizer"]["param_groups"] == after["optimizer"]["param_groups"]
    for idx, state in before["optimizer"]["state"].items():
        for k, v in state.items():
            assert torch.equal(v, after["optimizer"]["state"][idx][k]), (idx, k)
    assert trainee.loss.get_params() == params_before  # the trial set m = 0.3 on its copies
    got = rng_states()
    assert torch.equal(got[0], rngs[0]) and got[1] == rngs[1]
    assert all(np.array_equal(a, b) for a, b in zip(got[2][1:3], rngs[2][1:3]))


def test_the_trial_times_only_the_timed_steps_and_scales_them_to_m_candidates():
    bench = data.load("digits-closed", seed=0)
    trainee = make_trainee(bench.num_classes)
    ticks = iter([10.0, 10.3, 20.0, 20.6])  # packed: 0.3 s for 3 steps; one candidate: 0.6 s
    trial = packing_trial.measure(trainee, bench.train.subset(slice(0, 40)), {}, candidates=5,
                                  chunk=2, batch_size=16, lr=0.1, accel=accel_mod.Accel(),
                                  timer=lambda: next(ticks))
    # packed: ⌈5/2⌉ = 3 chunks of 0.1 s; sequential: 5 candidates of 0.2 s
    assert trial.packed_s_per_step == pytest.approx(0.3)
    assert trial.sequential_s_per_step == pytest.approx(1.0)
    assert packing_trial.rule(trial.packed_s_per_step, trial.sequential_s_per_step) == "packed"
    with pytest.raises(ValueError, match="chunk"):
        packing_trial.measure(trainee, bench.train, {}, candidates=2, chunk=3, batch_size=16,
                              lr=0.1, accel=accel_mod.Accel())


def test_a_cpu_search_with_packing_auto_records_sequential_and_why(tmp_path):
    out = tmp_path / "run"
    assert cli_main(["search", "search_softmax", "--epochs", "1", "--candidates", "2",
                     "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    packing = json.loads((out / "manifest.json").read_text())["packing"]
    assert (packing["mode"], packing["setting"], packing["reason"]) == \
        ("sequential", "auto", "cpu default")
    assert packing["trial"] is None and packing["memory"] is None


def test_the_trial_on_a_streamed_split_leaves_its_loader_cache_and_counters_alone():
    orl = Path(__file__).resolve().parent / "data" / "orl_small"
    bench = data.load(f"folder-closed:{orl}?val=0.25&test=0.25&size=28x23&stream=yes&workers=1",
                      seed=0)
    train = bench.train
    assert isinstance(train, data.StreamedImages)
    torch.manual_seed(0)
    model = models.build("digits_net", embedding_size=D, in_channels=bench.in_channels,
                         image_size=bench.image_size)
    loss = losses.build("cosface", embedding_size=D, num_classes=bench.num_classes)
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                                       lr=0.1, momentum=0.9, weight_decay=5e-4)
    trial = packing_trial.measure(candidate_mod.Trainee(model, loss, opt), train, {},
                                  candidates=2, chunk=2, batch_size=8, lr=0.1,
                                  accel=accel_mod.Accel())
    assert trial.packed_s_per_step > 0 and trial.sequential_s_per_step > 0
    assert train.decodes == 0 and train._loader is None and train._cache == {}
