"""Properties of the fixes for defects that biased the comparison (issue 10, item 4)."""

import math
import subprocess
import sys

import pytest
import torch

from lfsearch import losses
from lfsearch import search as search_mod
from lfsearch.evaluation import overlap
from lfsearch.search import config as config_mod


@pytest.mark.parametrize("name,lam_min", [("sphereface", 5.0), ("lsoftmax", 0.0)])
@pytest.mark.parametrize("total", [40, 192, 50_000])
def test_lambda_reaches_its_minimum_for_any_run_length(name, lam_min, total):
    head = losses.build(name, embedding_size=4, num_classes=3)
    head.plan_training(total)
    lams = []
    for step in range(0, total + 1, max(total // 400, 1)):
        head.step = step
        lams.append(head.lam)
    assert lams[0] == pytest.approx(1000.0)       # the papers' base at the start
    assert all(b <= a + 1e-12 for a, b in zip(lams, lams[1:]))  # never increases
    head.step = math.ceil(head.lambda_end * total)
    assert head.lam == lam_min                    # reached at the same fraction of training
    head.step = total
    assert head.lam == lam_min


def test_lambda_at_half_way_to_its_end_is_the_same_for_small_and_large_runs():
    small, large = (losses.build("sphereface", embedding_size=4, num_classes=3) for _ in "ab")
    small.plan_training(100)
    large.plan_training(100_000)
    small.step, large.step = 3, 3000  # 3% of training in both (λ_end = 6%)
    assert small.lam == pytest.approx(large.lam)
    assert 5.0 < small.lam < 1000.0


def test_a_search_plans_the_whole_run_for_the_head(tmp_path):
    cfg = config_mod.resolve(config_mod.load("sphereface"), epochs=2)
    run = search_mod.Search(cfg, tmp_path / "run")
    trainee = run.build_trainee()
    n, batch = len(run.benchmark.train), cfg["training"]["batch_size"]
    assert trainee.loss.total_steps == 2 * (n // batch)


def test_centres_converge_to_the_class_means_on_fixed_features():
    torch.manual_seed(0)
    means = torch.tensor([[3.0, 0.0], [0.0, -2.0], [1.0, 1.0]])
    labels = torch.arange(3).repeat_interleave(200)
    x = means[labels] + 0.1 * torch.randn(600, 2)
    head = losses.build("center", embedding_size=2, num_classes=3)
    head.train()
    for _ in range(60):
        for idx in torch.randperm(600).split(64):
            head(x[idx], labels[idx])
    class_means = torch.stack([x[labels == c].mean(0) for c in range(3)])
    assert torch.allclose(head.centers, class_means, atol=0.05)
    assert "centers" in head.state_dict()                     # resumed and broadcast
    assert not any(p is head.centers for p in head.parameters())  # not moved by SGD


def test_one_centre_step_is_the_papers_update():
    head = losses.build("center", embedding_size=1, num_classes=2, alpha=0.5)
    head.centers.zero_()
    head.train()
    head(torch.tensor([[2.0], [4.0], [10.0]]), torch.tensor([0, 0, 1]))
    # class 0: Δc = ((0 − 2) + (0 − 4)) / (1 + 2) = −2, c ← 0 − 0.5·(−2) = 1
    # class 1: Δc = (0 − 10) / (1 + 1) = −5, c ← 2.5
    assert head.centers.flatten().tolist() == pytest.approx([1.0, 2.5])


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lfsearch", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_reinforce_with_one_candidate_is_refused(tmp_path):
    out = _cli("search", "search_softmax", "--candidates", "1", "--epochs", "1", "--out",
               str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "controller.candidates" in lines[0] and ">= 2" in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("m1", [1.0, 1.2, 2.0])
@pytest.mark.parametrize("m2,m3", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.2), (0.2, 0.1)])
def test_combined_margin_is_a_margin_for_m1_at_least_one(m1, m2, m3):
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    ok = m1 * theta + m2 <= math.pi
    f = torch.cos(m1 * theta + m2) - m3
    assert bool((f[ok] <= torch.cos(theta[ok]) + 1e-12).all())


def test_combined_margin_below_one_gives_a_factor_below_one():
    theta = torch.tensor(2.0, dtype=torch.float64)
    assert float(torch.cos(0.8 * theta)) > float(torch.cos(theta))  # f > cos θ: A < 1
    assert "m1 >= 1" in losses.build("combined_margin", embedding_size=4, num_classes=3).formula


def test_a_validation_benchmark_sharing_test_images_is_refused(tmp_path):
    space = (config_mod.find_space("softmax")).read_text().replace(
        'validation = [{ benchmark = "main", weight = 1.0 }]',
        'validation = [{ benchmark = "digits?train_classes=4", weight = 1.0 }]')
    path = tmp_path / "overlap.toml"
    path.write_text(space)
    out = _cli("search", str(path), "--epochs", "1", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    # digits trains on 0-5 and tests on pairs of 6-9; digits?train_classes=4 validates on
    # pairs of 4-9 drawn from the same 1,797 images: 183 of the 357 test images
    assert len(lines) == 1 and "shares 183 of its images" in lines[0]
    assert not (tmp_path / "r").exists()


def test_overlap_counts_images_by_content_not_position():
    pass  # (import moved)

    a = torch.arange(24, dtype=torch.float32).reshape(4, 1, 2, 3)
    b = torch.cat([a[[2, 0]], a[:2] + 100])
    assert overlap.shared_images(a, b) == 2
    overlap.refuse_overlap("x", a[:2] + 100, a)  # disjoint: accepted
    with pytest.raises(ValueError, match="shares 2 of its images"):
        overlap.refuse_overlap("x", b, a)
