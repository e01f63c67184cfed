"""The face-recognition recipe: the poly schedule with warm-up, [training] amp (fp16 loss
scaling, bf16, off on CPU) and augment, and the shipped face_recipe space run end to end with
a small backbone on digits."""

from __future__ import annotations

import json
import logging
import math

import pandas as pd
import pytest
import torch
from heldout_data import write_bin

from lfsearch import data, losses, models
from lfsearch.search import Search, packed
from lfsearch.search import accel as accel_mod
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import config as config_mod


def test_poly_and_warmup_learning_rates_by_hand():
    def lr(e, **kw):
        return candidate_mod.learning_rate(e, base=0.1, epochs=6, **kw)

    # W = 2 warm-up epochs: 0.1·1/3, 0.1·2/3; then T = 4 epochs of 0.1·(1 − e'/4)^2
    got = [lr(e, schedule="poly", power=2.0, warmup_epochs=2) for e in range(6)]
    want = [0.1 / 3, 0.2 / 3, 0.1, 0.1 * 0.75 ** 2, 0.1 * 0.5 ** 2, 0.1 * 0.25 ** 2]
    assert got == pytest.approx(want)
    # power 1 (insightface's default): linear decay to base/E at the last epoch
    assert [lr(e, schedule="poly") for e in range(6)] == pytest.approx(
        [0.1 * (6 - e) / 6 for e in range(6)])
    # cosine without warm-up is unchanged; with it, it restarts from base after the warm-up
    assert lr(3, schedule="cosine") == pytest.approx(0.05 * (1 + math.cos(math.pi * 3 / 6)))
    assert lr(1, schedule="cosine", warmup_epochs=1) == pytest.approx(0.1)


@pytest.mark.parametrize("key, value, words", [
    ("amp", "fp32", "training.amp must be one of auto, off, bf16, fp16"),
    ("warmup_epochs", 12, "training.warmup_epochs must be an integer in [0, epochs)"),
    ("augment", "rotate", "training.augment must be auto (the benchmark's own), none, flip"),
    ("lr_power", -1.0, "training.lr_power must be a finite number >= 0"),
    ("lr_schedule", "polynomial", "constant, cosine, poly, step"),
])
def test_bad_recipe_settings_name_the_key_and_the_allowed_values(tmp_path, key, value, words):
    path = tmp_path / "bad.toml"
    text = "[loss]\nname = 'cosface'\n[controller]\nkind = 'fixed'\n[training]\nepochs = 12\n"
    path.write_text(text + f"{key} = {json.dumps(value)}\n")
    with pytest.raises(ValueError) as info:
        config_mod.load(path)
    assert words in str(info.value) and "bad.toml" in str(info.value)


def test_amp_chooses_autocast_on_cuda_only():
    want = {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
    for amp, dtype in want.items():
        assert accel_mod.Accel.for_device("cuda", amp=amp).autocast == dtype
        assert accel_mod.Accel.for_device("cpu", amp=amp).autocast is None
    with pytest.raises(ValueError, match="allowed: auto, off, bf16, fp16"):
        accel_mod.Accel.for_device("cpu", amp="half")


def one_batch_trainee(seed=0):
    torch.manual_seed(seed)
    model = models.build("digits_net", embedding_size=16)
    loss = losses.build("cosface", embedding_size=16, num_classes=6, s=16.0, m=0.2)
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                                    lr=0.1, momentum=0.0, weight_decay=0.0)
    return candidate_mod.Trainee(model, loss, opt)


def one_step(trainee, dtype):
    b = data.load("digits")
    train = b.train.subset(slice(0, 64))
    before = torch.cat([p.detach().flatten().clone() for p in trainee.model.parameters()])
    candidate_mod.train_one_epoch(trainee, train, batch_size=64,
                               generator=torch.Generator().manual_seed(0), lr=0.1,
                               autocast_dtype=dtype)
    return torch.cat([p.detach().flatten() for p in trainee.model.parameters()]) - before


def test_fp16_loss_scaling_skips_overflowing_steps_and_otherwise_matches_fp32():
    reference = one_step(one_batch_trainee(), None)
    # a fresh scaler (2^16): this batch's scaled fp16 gradients overflow, so the step is
    # skipped and the scale halves
    fresh = one_batch_trainee()
    assert float(one_step(fresh, torch.float16).abs().max()) == 0.0
    assert fresh.scaler.get_scale() == 2.0 ** 15
    # a scale that fits: the unscaled step is the fp32 step up to fp16 rounding
    fits = one_batch_trainee()
    fits.scaler = candidate_mod.make_grad_scaler("cpu")
    fits.scaler.load_state_dict({**fits.scaler.state_dict(), "scale": 256.0})
    step = one_step(fits, torch.float16)
    assert torch.nn.functional.cosine_similarity(step, reference, dim=0) > 0.999
    assert float(step.norm() / reference.norm()) == pytest.approx(1.0, abs=0.01)
    # the scale is part of the state a candidate starts from (and a checkpoint keeps)
    state = fresh.state()
    assert state["scaler"]["scale"] == 2.0 ** 15
    fits.load(state)
    assert fits.scaler.get_scale() == 2.0 ** 15


def test_packed_training_refuses_fp16():
    trainee = one_batch_trainee()
    with pytest.raises(ValueError, match="amp = 'fp16' needs training.packing = 'sequential'"):
        packed.PackedPopulation(trainee, trainee.state(), [{}],
                                 lr=0.1, accel=accel_mod.Accel(autocast=torch.float16))


def test_the_face_recipe_runs_end_to_end_on_a_small_backbone(tmp_path, caplog):
    recipe = config_mod.load("face_recipe")
    t = recipe["training"]
    assert (recipe["loss"]["s"], t["embedding_size"], t["model"]) == (64.0, 512, "iresnet50")
    assert (t["optimizer"], t["lr"], t["weight_decay"], t["lr_schedule"]) == \
        ("sgd", 0.1, 5e-4, "poly")
    assert (t["warmup_epochs"], t["augment"], t["amp"]) == (1, "flip", "bf16")
    assert [v["benchmark"].rsplit("/", 1)[-1] for v in recipe["reward"]["validation"]] == \
        ["lfw.bin", "cfp_fp.bin", "agedb_30.bin"]
    # the same recipe on digits with a tiny backbone: a main validation (weight 2) and a .bin
    write_bin(tmp_path / "v.bin", n_pairs=100)
    vbin = f"bin:{tmp_path / 'v.bin'}?channels=1"
    raw = {k: v for k, v in recipe.items() if not k.startswith("_")}
    raw["training"] = {**t, "benchmark": "digits", "model": "digits_net", "embedding_size": 16,
                       "epochs": 3, "batch_size": 64}
    raw["reward"] = {"metric": "verification_accuracy",
                     "validation": [{"benchmark": "main", "weight": 2.0},
                                    {"benchmark": vbin, "weight": 1.0}]}
    raw["controller"] = {**recipe["controller"], "candidates": 2}
    del raw["test"]
    config = config_mod.validate(raw, source="recipe")
    config["run"]["device"] = "cpu"
    with caplog.at_level(logging.WARNING, logger="lfsearch.search"):
        runner = Search(config, tmp_path / "run")
    assert "training.amp = 'bf16' applies on CUDA only" in caplog.text
    (tmp_path / "run").mkdir()
    runner.run()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (manifest["autocast"], manifest["augment"]) == ("off", "flip")
    assert manifest["backbone"]["embedding_size"] == 16
    rows = pd.read_csv(tmp_path / "run" / "epochs.csv")
    # warm-up then linear decay: 0.1/2, then 0.1·(1 − 0/2), 0.1·(1 − 1/2)
    assert rows.groupby("epoch")["lr"].first().tolist() == pytest.approx([0.05, 0.1, 0.05])
    ok = rows[rows["status"] == "ok"]
    assert len(ok) > 0
    want = (2 * ok["val/verification_accuracy"] + ok[f"val:{vbin}/verification_accuracy"]) / 3
    assert ok["reward"].tolist() == pytest.approx(want.tolist())
