"""Evaluation: a hand-worked verification example, identification, classification, the
model-mode contract, and a plain-softmax model verifying unseen digits above chance."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lfsearch import data
from lfsearch import models as models_mod
from lfsearch.evaluation import metrics as metrics_mod

# Hand-worked example: 12 pairs in 2 folds (T = same, F = different).
#   fold 0: 0.95 T, 0.65 F, 0.50 T, 0.45 T, 0.35 F, 0.05 F
#   fold 1: 0.90 T, 0.80 T, 0.60 F, 0.42 F, 0.30 T, 0.10 F
FOLD0 = [(0.95, True), (0.65, False), (0.50, True), (0.45, True), (0.35, False), (0.05, False)]
FOLD1 = [(0.90, True), (0.80, True), (0.60, False), (0.42, False), (0.30, True), (0.10, False)]
SCORES = [s for s, _ in FOLD0 + FOLD1]
SAME = [y for _, y in FOLD0 + FOLD1]
FOLDS = [0] * 6 + [1] * 6


def test_verification_matches_the_hand_worked_example():
    # Threshold for fold 0, chosen on fold 1 ("same" iff score >= t). Accuracy on fold 1 by t:
    #   t > .90: 3/6; (.80,.90]: 4/6; (.60,.80]: 5/6; (.42,.60]: 4/6; (.30,.42]: 3/6;
    #   (.10,.30]: 4/6; t <= .10: 3/6  -> best (.60, .80], midpoint t0 = 0.70.
    # Fold 0 at t0 = 0.70: .95T ok, .65F ok, .50T miss, .45T miss, .35F ok, .05F ok -> 4/6.
    # Threshold for fold 1, chosen on fold 0:
    #   t > .95: 3/6; (.65,.95]: 4/6; (.50,.65]: 3/6; (.45,.50]: 4/6; (.35,.45]: 5/6;
    #   (.05,.35]: 4/6; t <= .05: 3/6  -> best (.35, .45], midpoint t1 = 0.40.
    # Fold 1 at t1 = 0.40: .90T ok, .80T ok, .60F wrong, .42F wrong, .30T miss, .10F ok -> 3/6.
    # verification accuracy = (4/6 + 3/6) / 2 = 7/12; std = 1/12; mean threshold = 0.55.
    # AUC = P(positive score > negative score): negatives below each positive
    #   .95: 6, .90: 6, .80: 6, .50: 4 (.42 .35 .10 .05), .45: 4, .30: 2 (.10 .05) -> 28/36.
    # ROC by descending score (TP, FP): .95 (1,0) .90 (2,0) .80 (3,0) .65 (3,1) .60 (3,2)
    #   .50 (4,2): FAR = 2/6 = FRR = 1 - 4/6 -> EER = 1/3.
    # TAR at FAR <= 0.2 (1 false accept of 6): best point (3,1) -> 3/6; at FAR <= 0.5: (5,3) -> 5/6.
    # FAR 1e-2 needs 100 negative pairs; there are 6 -> NaN.
    m = metrics_mod.verification_metrics(SCORES, SAME, FOLDS, far_targets=(1e-2, 0.2, 0.5))
    assert m["verification_accuracy"] == pytest.approx(7 / 12)
    assert m["verification_accuracy_std"] == pytest.approx(1 / 12)
    assert m["threshold"] == pytest.approx(0.55)
    assert m["roc_auc"] == pytest.approx(28 / 36)
    assert m["eer"] == pytest.approx(1 / 3)
    assert m["tar@far=2e-1"] == pytest.approx(3 / 6)
    assert m["tar@far=5e-1"] == pytest.approx(5 / 6)
    assert math.isnan(m["tar@far=1e-2"])
    assert (m["pairs"], m["negative_pairs"]) == (12, 6)


def test_default_keys_and_nan_where_too_few_negative_pairs():
    rng = np.random.default_rng(0)
    same = np.repeat([True, False], 1500)
    scores = rng.normal(same.astype(float), 1.0)
    m = metrics_mod.verification_metrics(scores, same)  # KFold(10) contiguous folds
    for key in ("verification_accuracy", "roc_auc", "eer", "tar@far=1e-2", "tar@far=1e-3"):
        assert np.isfinite(m[key])
    assert math.isnan(m["tar@far=1e-4"])  # 1500 negatives < 1 / 1e-4
    assert 0.6 < m["verification_accuracy"] < 0.8 and 0.7 < m["roc_auc"] < 0.85
    assert 0.0 <= m["tar@far=1e-3"] <= m["tar@far=1e-2"] <= 1.0


def test_perfect_and_reversed_scores():
    same = [True, True, True, False, False, False] * 2
    good = [0.9, 0.8, 0.7, 0.2, 0.1, 0.0] * 2
    m = metrics_mod.verification_metrics(good, same)
    assert m["verification_accuracy"] == 1.0 and m["roc_auc"] == 1.0 and m["eer"] == 0.0
    bad = metrics_mod.verification_metrics([-s for s in good], same, [0] * 6 + [1] * 6)
    assert bad["roc_auc"] == 0.0 and bad["eer"] == 1.0


def test_verification_rejects_bad_input():
    with pytest.raises(ValueError, match="same and different"):
        metrics_mod.verification_metrics([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="same length"):
        metrics_mod.verification_metrics([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="2 or more folds"):
        metrics_mod.verification_metrics([0.1, 0.2], [True, False], [0, 0])


def test_identification_rank1_hand_example():
    # gallery = first image of each label: rows 0 (label 0), 2 (label 1), 4 (label 2).
    # probe 1 (1, .2): cosines .98 / .20 / -.98 -> label 0, right.
    # probe 3 (1, .5): cosines .89 / .45 / -.89 -> label 0, wrong (it is 1). Rank-1 = 1/2.
    e = torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [1.0, 0.5], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    assert metrics_mod.identification_rank1(e, labels) == pytest.approx(0.5)
    # gallery rows 1, 3, 4 instead: probe 0 (1, 0): cosines .98 / .89 / -1 -> label 0, right;
    # probe 2 (0, 1): cosines .20 / .45 / 0 -> label 1, right. Rank-1 = 1.
    gallery = torch.tensor([False, True, False, True, True])
    assert metrics_mod.identification_rank1(e, labels, gallery) == pytest.approx(1.0)
    assert math.isnan(metrics_mod.identification_rank1(e[[0, 2]], labels[[0, 2]]))


def test_classification_accuracy():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [9.0, 0.0, 0.0]])
    assert metrics_mod.classification_accuracy(logits, torch.tensor([0, 1, 1, 2])) == 0.5


class Flatten(nn.Module):
    """A 'model' whose embedding is its input image, recording its mode at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return torch.flatten(x, 1) * self.scale


class LinearHead(nn.Module):
    """Minimal plain-softmax head: logits = W e + b, loss = cross entropy."""

    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, c)

    def forward(self, e, y):
        return F.cross_entropy(self.fc(e), y)

    def logits(self, e):
        return self.fc(e)


def test_evaluate_verification_uses_cosine_of_embeddings_and_restores_mode():
    # images are 1x1x2 "embeddings": pair scores are the cosines of these vectors
    vecs = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0], [1.0, 1.0], [-1.0, 0.2]])
    pairs = torch.tensor([[0, 1], [2, 3], [0, 2], [1, 5], [4, 0], [3, 5]])
    same = torch.tensor([True, True, False, False, True, False])
    split = data.VerificationSplit(vecs.view(6, 1, 1, 2), pairs, same,
                                   torch.tensor([0, 0, 0, 1, 1, 1]),
                                   torch.tensor([0, 0, 1, 1, 0, 2]))
    model = Flatten()
    model.train()
    m = metrics_mod.evaluate(model, None, split, batch_size=4)
    assert model.training and torch.is_grad_enabled()
    assert model.calls == [(False, False), (False, False)]  # two batches, eval, no grad
    cos = F.cosine_similarity(vecs[pairs[:, 0]], vecs[pairs[:, 1]])
    want = metrics_mod.verification_metrics(cos, same, split.folds)
    assert {k: m[k] for k in want} == pytest.approx(want, nan_ok=True)
    assert "rank1" in m
    model.eval()
    metrics_mod.evaluate(model, None, split)
    assert not model.training


def test_embed_with_flip_adds_the_mirrored_images_embedding():
    model = Flatten()
    images = torch.arange(12.0).view(2, 1, 2, 3)
    got = metrics_mod.embed(model, images, flip=True)
    assert torch.equal(got, images.flatten(1) + images.flip(-1).flatten(1))


def test_evaluate_classification_uses_the_heads_logits_and_restores_both_modes():
    head = LinearHead(2, 2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.eye(2))
        head.fc.bias.zero_()
    images = torch.tensor([[3.0, 1.0], [0.0, 2.0], [1.0, 4.0], [5.0, 0.0]]).view(4, 1, 1, 2)
    split = data.ClassificationSplit(images, torch.tensor([0, 1, 0, 0]))
    model = Flatten()
    head.train()
    assert metrics_mod.evaluate(model, head, split) == {"accuracy": 0.75}
    assert head.training and model.training
    with pytest.raises(ValueError, match="logits"):
        metrics_mod.evaluate(model, None, split)


def train_softmax(bench: data.Benchmark, epochs: int, seed: int = 0):
    """Adam, batch 64, plain softmax head. One intra-op thread: these tiny models run about
    as fast on one, and several times faster than on two when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_softmax(bench, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train_softmax(bench: data.Benchmark, epochs: int, seed: int):
    torch.manual_seed(seed)
    model = models_mod.build(bench.default_model, embedding_size=32, in_channels=bench.in_channels,
                         image_size=bench.image_size)
    head = LinearHead(32, bench.num_classes)
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for x, y in data.batches(bench.train, 64, generator=gen, augment=bench.augment):
            loss = head(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model, head


def test_softmax_trained_on_digits_verifies_unseen_digits_above_chance():
    # Measured (seed 0, 5 epochs of Adam on digits 0-5): verification accuracy 0.70 on test
    # pairs of digits 6-9 (chance 0.5), ROC AUC 0.76. (Raw-pixel cosine scores 0.81: six
    # training classes do not teach features that beat pixels on unseen digits.)
    bench = data.load("digits", seed=0)
    model, head = train_softmax(bench, epochs=5)
    m = metrics_mod.evaluate(model, head, bench.test)
    assert m["verification_accuracy"] > 0.6, m
    assert m["roc_auc"] > 0.65, m
    assert 0.0 <= m["eer"] < 0.4


def test_softmax_trained_on_digits_closed_classifies_well():
    bench = data.load("digits-closed", seed=0)
    model, head = train_softmax(bench, epochs=4)
    acc = metrics_mod.evaluate(model, head, bench.test)["accuracy"]
    assert acc > 0.85  # measured 0.994 (seed 0)


@pytest.mark.slow
def test_softmax_trained_on_orl_faces_verifies_unseen_people():
    # Measured (seed 0, 10 epochs, face_cnn at 28x23, flip) on the committed subset (20 people):
    # verification accuracy 0.942 on 360 pairs of 4 unseen people, ROC AUC 0.969, rank-1 0.944.
    # (On all 40 people, 720 pairs of 8 unseen people: 0.874, ROC AUC 0.96, rank-1 0.83.)
    orl = Path(__file__).resolve().parent / "data" / "orl_faces_subset"  # 20 of the 40 people
    bench = data.load(f"folder:{orl}?size=28x23", seed=0)
    model, head = train_softmax(bench, epochs=10)
    m = metrics_mod.evaluate(model, head, bench.test, flip=True)
    assert m["verification_accuracy"] > 0.75, m
    assert m["rank1"] > 0.6, m


# Hand-worked all-pairs and identification example: 3 identities x 2 images, unit vectors at
# the angles (degrees) A: 0, 50; B: 25, 200; C: 110, 130 (rows 0..5, labels 0 0 1 1 2 2).
ANGLES = [0.0, 50.0, 25.0, 200.0, 110.0, 130.0]
TINY_LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def _unit(degrees):
    r = torch.tensor(degrees, dtype=torch.float64).deg2rad()
    return torch.stack([r.cos(), r.sin()], 1).float()


def test_all_pairs_tar_matches_the_hand_worked_example():
    # 15 pairs: 3 genuine, cos of A 50° = .643, B 175° = -.996, C 20° = .940; 12 impostors,
    # sorted: cos25 = .906 (0-2), .906 (1-2), cos60 = .5 (1-4), cos70 = .342 (3-5),
    # cos80 = .174 (1-5), cos85 = .087 (2-4), cos90 = 0 (3-4), cos105 = -.259, cos110 = -.342,
    # cos130 = -.643, cos150 = -.866, cos160 = -.940.
    # FAR 0.1: k = floor(1.2) = 1 -> threshold s_(2) = .906 -> genuine above: C -> 1/3
    #   (both .906 impostors tie: no threshold admits exactly one false accept).
    # FAR 0.25: k = 3 -> s_(4) = .342 -> genuine above: A, C -> 2/3.
    # FAR 0.5: k = 6 -> s_(7) = 0 -> still A, C -> 2/3. FAR 0.05: 12 x 0.05 < 1 -> NaN.
    e = _unit(ANGLES)
    m = metrics_mod.all_pairs_tar(e, TINY_LABELS, far_targets=(0.1, 0.25, 0.5, 0.05), block=4)
    assert m["tar@far=1e-1_all"] == pytest.approx(1 / 3)
    assert m["tar@far=2e-1_all"] == pytest.approx(2 / 3)  # the key rounds 0.25 to 2e-1
    assert m["tar@far=5e-1_all"] == pytest.approx(2 / 3)
    assert math.isnan(m["tar@far=5e-2_all"])
    assert (m["genuine_pairs_all"], m["impostor_pairs_all"]) == (3, 12)
    # the same values from the ROC rule on the 15 pairs listed explicitly
    i, j = torch.triu_indices(6, 6, 1)
    scores = (e[i] * e[j]).sum(1)
    same = TINY_LABELS[i] == TINY_LABELS[j]
    roc = metrics_mod.verification_metrics(scores, same, n_folds=3, far_targets=(0.1, 0.25))
    assert roc["tar@far=1e-1"] == pytest.approx(1 / 3)
    assert roc["tar@far=2e-1"] == pytest.approx(2 / 3)
    # 1e-3 and 1e-4 need 1000 and 10000 impostor pairs: NaN on 12
    m = metrics_mod.all_pairs_tar(e, TINY_LABELS)
    assert math.isnan(m["tar@far=1e-3_all"]) and math.isnan(m["tar@far=1e-4_all"])


def test_rank1_with_one_gallery_image_per_identity_and_distractors():
    # gallery = the lowest-index image of each identity: rows 0 (A 0°), 2 (B 25°), 4 (C 110°).
    # probe 1 (A 50°): cos50 = .64 (A), cos25 = .91 (B), cos60 = .5 (C) -> B, wrong.
    # probe 3 (B 200°): cos160 = -.94, cos175 = -.996, cos90 = 0 -> C, wrong.
    # probe 5 (C 130°): cos130 = -.64, cos105 = -.26, cos20 = .94 -> C, right. rank-1 = 1/3.
    e = _unit(ANGLES)
    outcomes = []
    assert metrics_mod.identification_rank1(e, TINY_LABELS, correct_out=outcomes) == \
        pytest.approx(1 / 3)
    assert outcomes == [0.0, 0.0, 1.0]
    # a distractor at 135° is closer to probe 5 (cos5 = .996 > .94): rank-1 = 0
    assert metrics_mod.identification_rank1(e, TINY_LABELS, distractors=_unit([135.0])) == 0.0
    # one at 300° is nobody's nearest: unchanged
    assert metrics_mod.identification_rank1(e, TINY_LABELS, distractors=_unit([300.0])) == \
        pytest.approx(1 / 3)


def test_evaluate_reports_the_all_pairs_and_rank1_keys_of_a_labelled_split():
    e = _unit(ANGLES)
    pairs = torch.tensor([[0, 1], [2, 3], [4, 5], [0, 2], [1, 4], [3, 5]])
    same = torch.tensor([True, True, True, False, False, False])
    split = data.VerificationSplit(e.view(6, 1, 1, 2), pairs, same,
                                   torch.tensor([0, 0, 0, 1, 1, 1]), TINY_LABELS)
    details = {}
    m = metrics_mod.evaluate(Flatten(), None, split, details=details)
    assert set(metrics_mod.metric_names(split)) == set(m)
    assert m["rank1"] == pytest.approx(1 / 3)
    assert math.isnan(m["tar@far=1e-3_all"]) and m["impostor_pairs_all"] == 12
    assert details["scores"].shape == (6,) and details["rank1_correct"].tolist() == [0, 0, 1]
    quick = metrics_mod.evaluate(Flatten(), None, split, all_pairs=False)
    assert "tar@far=1e-3_all" not in quick and set(quick) == set(
        metrics_mod.metric_names(split, all_pairs=False))
    # distractor images (1x1x2 "embeddings") join the gallery
    m = metrics_mod.evaluate(Flatten(), None, split, distractors=_unit([135.0]).view(1, 1, 1, 2))
    assert m["rank1"] == 0.0


class Skewed(nn.Module):
    """A linear map that is not mirror-symmetric: f(x) != f(mirror(x))."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.arange(18.0).view(3, 6).sin())
            self.linear.bias.zero_()

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_flip_is_the_normalised_sum_of_the_image_and_its_mirror():
    torch.manual_seed(0)
    images = torch.randn(8, 1, 2, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    pairs = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 4], [3, 6], [5, 7]])
    same = torch.tensor([True] * 4 + [False] * 4)
    split = data.VerificationSplit(images, pairs, same, torch.tensor([0, 1] * 4), labels)
    model = Skewed()
    with torch.no_grad():
        by_hand = model(images) + model(images.flip(-1))  # the sum, normalised by the cosine
    cos = F.cosine_similarity(by_hand[pairs[:, 0]], by_hand[pairs[:, 1]])
    want = metrics_mod.verification_metrics(cos, same, split.folds)
    got = metrics_mod.evaluate(model, None, split, flip=True)
    assert {k: got[k] for k in want} == pytest.approx(want, nan_ok=True)
    assert got["rank1"] == metrics_mod.identification_rank1(by_hand, labels)
    plain = metrics_mod.evaluate(model, None, split, flip=False)
    assert plain["cosine_gap"] != pytest.approx(got["cosine_gap"])


def test_flip_defaults_on_for_face_benchmarks_and_off_for_digits():
    orl = Path(__file__).resolve().parent / "data" / "orl_faces_subset"
    assert data.load(f"folder:{orl}?size=28x23", seed=0).flip is True
    assert data.load(f"folder:{orl}?size=28x23&flip=no", seed=0).flip is False
    assert data.load("digits", seed=0).flip is False
    assert data.load("digits?flip=yes", seed=0).flip is True
    assert set(data.FLIP_KINDS) == {"folder", "folder-closed", "rec", "lfw", "bin", "ijb", "ident"}
    with pytest.raises(ValueError, match=r"option flip='maybe': allowed values yes .*, no"):
        data.load("digits?flip=maybe", seed=0)
