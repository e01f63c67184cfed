"""The search engine end to end on the embedded digits benchmark: run folders, the epoch loop,
divergent candidates, the discovered-loss schedule, the CLI's refusals and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from lfsearch import data, losses, models
from lfsearch.cli import main as cli_main
from lfsearch.evaluation import metrics as metrics_mod
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import config as config_mod
from lfsearch.search import search
from lfsearch.search import sequential as sequential_mod

SPACES = sorted((Path(__file__).resolve().parent.parent / "search_spaces").glob("*.toml"))


def write_space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("space", SPACES, ids=lambda p: p.stem)
def test_every_shipped_search_space_validates(space):
    config = config_mod.load(space)
    assert config["method"]["name"] == space.stem
    assert config["controller"]["candidates"] >= 1


def test_the_shipped_spaces_cover_every_method_the_issue_names():
    names = {p.stem for p in SPACES}
    assert {"softmax", "normface", "sphereface", "cosface", "arcface", "combined_margin",
            "random_softmax", "search_softmax", "search_softmax_local", "am_lfs"} <= names


def test_count_expands_a_parameter_into_bins():
    # the margin form: one global scale s (log, [2, 64]) and one margin m_k per bin ([0, 0.6])
    specs = config_mod.param_specs(config_mod.load("search_softmax_local"))
    assert [s.name for s in specs] == ["s", "m_0", "m_1", "m_2", "m_3"]
    assert (specs[0].log, specs[0].low, specs[0].high) == (True, 2.0, 64.0)
    assert all(not s.log and (s.low, s.high) == (0.0, 0.6) for s in specs[1:])
    # the paper's setting: s fixed, one factor A_k per bin, log scale on [1, 1000]
    specs = config_mod.param_specs(config_mod.load("search_softmax_local_paper"))
    assert [s.name for s in specs] == ["a_0", "a_1", "a_2", "a_3"]
    assert all(s.log and (s.low, s.high) == (1.0, 1000.0) for s in specs)


@pytest.mark.parametrize("text, field", [
    ("[loss]\nname='cosface'\n[controller]\nkind='fixed'\n[training]\nepochz=3\n", "training.epochz"),
    ("[loss]\nname='cosfce'\n[controller]\nkind='fixed'\n", "loss.name"),
    ("[loss]\nname='cosface'\n[controller]\nkind='fixed'\ncandidates=0\n", "controller.candidates"),
    ("[loss]\nname='cosface'\n[loss.params.m]\ninit=0.9\nlow=0.0\nhigh=0.5\n"
     "[controller]\nkind='fixed'\n", "loss.params.m.init"),
    ("[loss]\nname='cosface'\n[controller]\nkind='fixed'\n[training]\noptimizer='rmsprop'\n",
     "training.optimizer"),
    ("[loss]\nname='cosface'\n[controller]\nkind='annealing'\n", "controller"),
    ("[loss]\nname='cosface'\n[controller]\nkind='fixed'\n[bogus]\nx=1\n", "bogus"),
])
def test_bad_space_files_name_the_key_and_the_file(tmp_path, text, field):
    path = write_space(tmp_path / "bad.toml", text)
    with pytest.raises(ValueError) as info:
        config_mod.load(path)
    assert field in str(info.value)
    assert "bad.toml" in str(info.value)


def test_config_toml_round_trips(tmp_path):
    config = config_mod.resolve(config_mod.load("search_softmax"), epochs=3, seed=7)
    config_mod.dump(config, tmp_path / "config.toml")
    again = config_mod.load(tmp_path / "config.toml")
    assert {k: v for k, v in again.items() if k != "_source"} == \
        {k: v for k, v in config.items() if k != "_source"}


def test_search_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "run"
    results = search("search_softmax", epochs=3, candidates=3, seed=1, device="cpu", out=out)
    for name in ("config.toml", "manifest.json", "epochs.csv", "controller.csv",
                 "checkpoint.pt", "results.json", "discovered.toml"):
        assert (out / name).is_file(), name
    epochs = pd.read_csv(out / "epochs.csv")
    assert len(epochs) == 9
    assert list(epochs.groupby("epoch").size()) == [3, 3, 3]
    assert list(epochs.groupby("epoch")["chosen"].sum()) == [1, 1, 1]
    # the chosen candidate is the one with the highest reward of its epoch
    for _, group in epochs.groupby("epoch"):
        assert group.loc[group["chosen"], "reward"].iloc[0] == group["reward"].max()
    assert {"s", "m", "reward", "train_loss", "status"} <= set(epochs.columns)
    assert epochs["s"].between(2.0, 64.0).all() and epochs["m"].between(0.0, 0.6).all()
    controller = pd.read_csv(out / "controller.csv")
    assert list(controller["epoch"]) == [0, 1, 2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 1
    saved = json.loads((out / "results.json").read_text())
    assert saved["candidate_epochs"] == 9
    assert 0.5 < saved["test"]["verification_accuracy"] <= 1.0  # digits pairs: above chance
    assert results["test"] == saved["test"]
    assert len(saved["chosen_params"]) == 3


def test_the_test_split_is_used_once_after_the_search(tmp_path, monkeypatch):
    seen = []
    real = metrics_mod.evaluate

    def spy(model, loss, split, **kwargs):
        seen.append(split)
        return real(model, loss, split, **kwargs)

    monkeypatch.setattr(metrics_mod, "evaluate", spy)  # the search and its candidates call it
    bench = data.load("digits", seed=0)
    search("cosface", epochs=2, seed=0, device="cpu", out=tmp_path / "run")
    # validation on every candidate of every epoch, the test split only at the very end
    test_calls = [i for i, s in enumerate(seen) if s.num_pairs == bench.test.num_pairs
                  and torch.equal(s.pairs, bench.test.pairs) and torch.equal(s.images, bench.test.images)]
    assert test_calls == [len(seen) - 1]
    assert len(seen) == 3


def test_a_closed_set_benchmark_refuses_roc_auc_before_training(tmp_path):
    # search_softmax rewards roc_auc, measured on open-set pairs only
    assert config_mod.load("search_softmax")["reward"]["metric"] == "roc_auc"
    out = tmp_path / "run"
    with pytest.raises(ValueError) as info:
        search("search_softmax", benchmark="digits-closed", epochs=1, candidates=2, device="cpu",
               out=out)
    message = str(info.value)
    assert "\n" not in message and "reward.metric" in message and "accuracy" in message
    assert not out.exists()  # refused before anything was written


def test_discovered_schedule_replays_the_chosen_parameters(tmp_path):
    search("random_softmax", epochs=2, candidates=2, seed=3, device="cpu", out=tmp_path / "found")
    found = pd.read_csv(tmp_path / "found" / "epochs.csv").query("chosen")
    replay = search(tmp_path / "found" / "discovered.toml", device="cpu", out=tmp_path / "replay")
    replayed = pd.read_csv(tmp_path / "replay" / "epochs.csv")
    assert len(replayed) == 2 and replayed["chosen"].all()
    for name in ("s", "m"):  # the space's params: scale and margin (log A = s·m)
        assert replayed[name].tolist() == pytest.approx(found[name].tolist())
    assert replay["method"] == "random_softmax-discovered"


class ExplodingLoss(torch.nn.Module):
    """A loss that turns NaN for the candidate whose parameter `poison` is 1."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.poison = 0.0

    def set_params(self, poison: float) -> None:
        self.poison = poison

    def logits(self, embeddings):
        return self.inner.logits(embeddings)

    def forward(self, embeddings, labels):
        value = self.inner(embeddings, labels)
        return value * float("nan") if self.poison == 1.0 else value


def test_a_diverging_candidate_gets_the_worst_reward_and_is_never_chosen():
    bench = data.load("digits-closed", seed=0)
    torch.manual_seed(0)
    model = models.build("digits_net", embedding_size=16, in_channels=1, image_size=(8, 8))
    loss = ExplodingLoss(losses.build("softmax", embedding_size=16, num_classes=bench.num_classes))
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                                    lr=0.05, momentum=0.9, weight_decay=0.0)
    trainee = candidate_mod.Trainee(model, loss, opt)
    validations = [candidate_mod.Validation("val", bench.val, "accuracy")]
    results = sequential_mod.run_epoch_sequential(
        trainee, trainee.state(), [{"poison": 1.0}, {"poison": 0.0}, {"poison": 1.0}],
        train=bench.train, validations=validations, batch_size=64, lr=0.05, data_seed=0,
        candidate_seeds=[1, 2, 3])
    assert [r.status for r in results] == ["diverged", "ok", "diverged"]
    assert results[0].reward == candidate_mod.WORST_REWARD
    assert candidate_mod.choose_best(results) == 1
    assert results[1].reward > 0.5


def test_cli_refuses_to_overwrite_a_run_and_reports_bad_input_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["search", "cosface", "--epochs", "1", "--device", "cpu", "--out", str(out),
                     "--quiet"]) == 0
    before = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert cli_main(["search", "cosface", "--epochs", "1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1
    assert (out / "results.json").read_bytes() == before
    assert cli_main(["search", "cosface", "--epochs", "0", "--out", str(tmp_path / "x")]) == 2
    assert "training.epochs" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert cli_main(["search", "cosface", "--benchmark", "mnist:/nonexistent", "--out",
                     str(tmp_path / "y")]) == 2
    assert not (tmp_path / "y").exists()
    assert cli_main(["search", "cosface", "--epochs", "1", "--device", "cpu", "--out", str(out),
                     "--force", "--quiet"]) == 0


def _run_cli(args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "lfsearch", "search", *args, "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_a_run_killed_mid_epoch_resumes_to_the_same_results(tmp_path):
    args = ["search_softmax", "--epochs", "4", "--candidates", "3", "--seed", "5",
            "--device", "cpu"]
    whole = _run_cli(args + ["--out", str(tmp_path / "whole")])
    assert whole.wait(timeout=300) == 0, whole.stderr.read().decode()

    killed = _run_cli(args + ["--out", str(tmp_path / "killed")])
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before it could be killed"
    time.sleep(0.3)  # into the second epoch
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "results.json").exists()
    done_before = pd.read_csv(tmp_path / "killed" / "epochs.csv")["epoch"].max()
    assert done_before < 3

    resumed = _run_cli(["search_softmax", "--out", str(tmp_path / "killed"), "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert (tmp_path / "killed" / "epochs.csv").read_text() == \
        (tmp_path / "whole" / "epochs.csv").read_text()
    assert (tmp_path / "killed" / "results.json").read_text() == \
        (tmp_path / "whole" / "results.json").read_text()
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["resumed"]) == 1


def test_packed_and_sequential_searches_agree(tmp_path):
    from lfsearch.search import Search

    frames = {}
    for mode in ("sequential", "packed"):
        config = config_mod.resolve(config_mod.load("search_softmax_paper"), epochs=2, candidates=3,
                                    seed=2, device="cpu")
        config["training"]["packing"] = mode
        config = config_mod.validate(config, source="test")
        out = tmp_path / mode
        out.mkdir()
        Search(config, out).run()
        frames[mode] = pd.read_csv(out / "epochs.csv")
    seq, packed = frames["sequential"], frames["packed"]
    assert seq["a"].tolist() == packed["a"].tolist()  # the same controller samples
    assert packed["reward"].tolist() == pytest.approx(seq["reward"].tolist(), abs=2e-3)
    assert packed["train_loss"].tolist() == pytest.approx(seq["train_loss"].tolist(), rel=1e-4)
    assert packed["chosen"].tolist() == seq["chosen"].tolist()
