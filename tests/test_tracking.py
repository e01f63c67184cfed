"""Experiment tracking (lfsearch/search/tracking.py): TensorBoard event files in the run folder,
read back by tensorboard's own reader, and the callbacks other trackers (MLflow, W&B) use."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lfsearch.cli import build_parser
from lfsearch.search import search, tracking

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is in the [test] extra: pip install -e '.[test]'")


class Recorder:
    def __init__(self):
        self.steps, self.epochs, self.closed = [], [], 0

    def on_step(self, event):
        self.steps.append(event)

    def on_epoch(self, event):
        self.epochs.append(event)

    def close(self):
        self.closed += 1


def _scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_run_folder_events_load_in_tensorboard_with_each_step_and_epoch(tmp_path):
    rec = Recorder()
    out = tmp_path / "run"
    search("search_softmax", epochs=2, candidates=2, threads=1, out=out, callbacks=[rec])
    assert list(out.glob("events.out.tfevents.*")), "on by default with tensorboard installed"
    acc = event_accumulator.EventAccumulator(str(out))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for i in (0, 1):
        assert {f"train_loss/candidate_{i}", f"lr/candidate_{i}", f"reward/candidate_{i}",
                f"params/s/candidate_{i}", f"params/m/candidate_{i}"} <= tags
    assert {"controller/mu_s", "controller/sigma_s", "controller/mu_m", "chosen/candidate",
            "chosen/reward", "chosen/s", "chosen/m"} <= tags

    rows = pd.read_csv(out / "epochs.csv")
    ctrl = pd.read_csv(out / "controller.csv")
    for _, r in rows.iterrows():  # every candidate's reward and parameters, per epoch
        e, i = int(r["epoch"]), int(r["candidate"])
        assert dict(_scalars(acc, f"reward/candidate_{i}"))[e] == pytest.approx(r["reward"],
                                                                                rel=1e-6)
        assert dict(_scalars(acc, f"params/s/candidate_{i}"))[e] == pytest.approx(r["s"],
                                                                                  rel=1e-6)
    chosen = rows[rows["chosen"]]
    assert [v for _, v in _scalars(acc, "chosen/candidate")] == list(chosen["candidate"])
    assert [v for _, v in _scalars(acc, "chosen/s")] == pytest.approx(list(chosen["s"]),
                                                                      rel=1e-6)
    assert [v for _, v in _scalars(acc, "controller/mu_s")] == pytest.approx(
        list(ctrl["mu_s"]), rel=1e-6)
    assert [v for _, v in _scalars(acc, "controller/sigma_m")] == pytest.approx(
        list(ctrl["sigma_m"]), rel=1e-6)
    # per step: the mean of an epoch's step losses is epochs.csv's train_loss; lr its lr
    for _, r in rows.iterrows():
        e, i = int(r["epoch"]), int(r["candidate"])
        losses = _scalars(acc, f"train_loss/candidate_{i}")
        per_epoch = len(losses) // 2
        mine = losses[e * per_epoch:(e + 1) * per_epoch]
        assert [s for s, _ in mine] == list(range(e * per_epoch, (e + 1) * per_epoch))
        assert sum(v for _, v in mine) / per_epoch == pytest.approx(r["train_loss"], rel=1e-5)
        lrs = dict(_scalars(acc, f"lr/candidate_{i}"))
        assert lrs[e * per_epoch] == pytest.approx(r["lr"], rel=1e-6)
    # the callback saw the same events
    assert rec.closed == 1 and len(rec.epochs) == 2 and len(rec.steps) == 2 * len(losses)
    assert [ev.chosen for ev in rec.epochs] == list(chosen["candidate"])
    assert rec.epochs[1].controller["mu_s"] == pytest.approx(ctrl["mu_s"].iloc[1])
    first = [ev for ev in rec.steps if ev.candidate == 0 and ev.epoch == 0]
    written = _scalars(acc, "train_loss/candidate_0")[:per_epoch]
    assert [ev.loss for ev in first] == pytest.approx([v for _, v in written], rel=1e-6)
    assert all(math.isfinite(ev.lr) and ev.lr > 0 for ev in rec.steps)


def test_tensorboard_off_and_bad_options(tmp_path, monkeypatch):
    class OnlyEpochs:
        def __init__(self):
            self.epochs = []

        def on_epoch(self, event):
            self.epochs.append(event.epoch)

    only = OnlyEpochs()
    search("softmax", epochs=1, threads=1, out=tmp_path / "off", tensorboard=False,
           callbacks=[only])
    assert not list((tmp_path / "off").glob("events.out.tfevents.*")) and only.epochs == [0]
    with pytest.raises(ValueError, match=r"callbacks\[0\] \(object\) has neither an on_step "
                                         r"nor an on_epoch method"):
        search("softmax", epochs=1, out=tmp_path / "bad", callbacks=[object()])
    monkeypatch.setattr(tracking, "tensorboard_available", lambda: False)
    with pytest.raises(ValueError, match=r"needs the 'tensorboard' package \(pip install "
                                         r"tensorboard\)"):
        search("softmax", epochs=1, out=tmp_path / "bad", tensorboard=True)
    assert not (tmp_path / "bad").exists()  # refused before the folder is made
    assert tracking.resolve_tensorboard(None) is False  # auto: off without the package
    assert build_parser().parse_args(["search", "softmax", "--no-tensorboard"]).tensorboard \
        is False
    assert build_parser().parse_args(["search", "softmax"]).tensorboard is None
