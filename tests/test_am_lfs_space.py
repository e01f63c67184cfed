"""The AM-LFS search space keeps tau(p) > 0 on (0, 1]: every sample of the shipped space gives
a loss with a gradient, and a box that lets tau reach 0 is refused when the file is read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lfsearch import losses
from lfsearch.losses import margins
from lfsearch.search import config as config_mod


def space_box():
    config = config_mod.load("am_lfs")
    specs = config_mod.param_specs(config)
    return config, specs


def test_tau_is_positive_everywhere_in_the_shipped_space():
    config, specs = space_box()
    bins = config["loss"]["bins"]
    rng = np.random.default_rng(0)
    names = [s.name for s in specs]
    low = np.array([s.low for s in specs])
    high = np.array([s.high for s in specs])
    # uniform samples of the box, and every slope/intercept corner of it
    draws = low + (high - low) * rng.random((2000, len(specs)))
    groups = sorted({n.rsplit("_", 1)[0] for n in names})  # tau_slope, tau_intercept, ...
    corners = np.array([[lo if (c >> groups.index(n.rsplit("_", 1)[0])) & 1 else hi
                         for n, lo, hi in zip(names, low, high)] for c in range(2 ** len(groups))])
    # a dense grid of (0, 1] with every bin edge on it
    p = torch.cat([torch.logspace(-12, -1, 200, dtype=torch.float64),
                   torch.linspace(0.0, 1.0, 4001, dtype=torch.float64)[1:]])
    worst = np.inf
    for row in np.concatenate([draws, corners]):
        v = dict(zip(names, row))
        slopes = [v[f"tau_slope_{i}"] for i in range(bins)]
        intercepts = [v[f"tau_intercept_{i}"] for i in range(bins)]
        tau = margins.tau(p, slopes, intercepts)
        worst = min(worst, float((tau / p).min()))  # tau(p)/p: no underflow at tiny p
    assert worst > 0.0


def test_no_sample_of_the_space_hits_the_loss_cap():
    # Before the fix most samples at initialisation fell where tau <= 0: a constant loss of
    # -log(tiny) = 87.3 (float32) with no gradient. Now every sample has a finite, moving loss.
    config, specs = space_box()
    rng = np.random.default_rng(1)
    torch.manual_seed(0)
    x, labels = torch.randn(256, 8), torch.randint(0, 10, (256,))
    head = losses.build("am_lfs", embedding_size=8, num_classes=10,
                        **config_mod.loss_arguments(config), reduction="none")
    cap = -float(np.log(torch.finfo(torch.float32).tiny))
    for _ in range(20):
        head.set_params(**{s.name: s.low + (s.high - s.low) * rng.random() for s in specs})
        xx = x.clone().requires_grad_()
        loss = head(xx, labels)
        assert torch.isfinite(loss).all() and float(loss.detach().max()) < cap - 1.0
        loss.mean().backward()
        assert float(xx.grad.abs().min(dim=1).values.max()) > 0.0


def test_a_box_that_lets_tau_reach_zero_is_refused(tmp_path):
    # The old box: slope 0.5 with intercept -0.2 gives tau(p) <= 0 for p <= 0.4.
    text = config_mod.SPACES_DIR.joinpath("am_lfs.toml").read_text()
    old = text.replace("low = 0.0\nhigh = 0.2", "low = -0.2\nhigh = 0.2", 1)
    assert old != text
    path = tmp_path / "old.toml"
    path.write_text(old)
    with pytest.raises(ValueError, match=r"old.toml: \[loss\]: tau_slope_0 .* tau_intercept_0 "
                                         r"low = -0.2 allows tau\(p\) = -0.2 <= 0 at p = 0"):
        config_mod.load(path)


@pytest.mark.parametrize("slope, intercept, ok", [
    ((0.5, 1.5), (0.0, 0.2), True),     # tau(0) = 0 only for the identity's intercept 0
    ((0.5, 1.5), (-0.1, 0.2), False),   # bin 0: tau(0) = -0.1
    ((0.0, 1.5), (0.0, 0.2), False),    # slope 0, intercept 0: tau = 0 on the whole bin
    ((-0.5, 1.5), (0.2, 0.3), False),   # bin 3 at p = 1: -0.5 + 0.2 < 0
])
def test_check_ranges_matches_the_positivity_condition(slope, intercept, ok):
    head = losses.build("am_lfs", embedding_size=8, num_classes=4, bins=4, use_t=False)
    ranges = {**{f"tau_slope_{i}": slope for i in range(4)},
              **{f"tau_intercept_{i}": intercept for i in range(4)}}
    # the same question answered numerically on the corners of the box
    p = torch.linspace(1e-9, 1.0, 10001, dtype=torch.float64)
    numeric = all(bool((margins.tau(p, [a] * 4, [b] * 4) > 0).all())
                  for a in slope for b in intercept)
    assert numeric == ok
    if ok:
        head.check_ranges(ranges)
    else:
        with pytest.raises(ValueError, match="allowed: ranges with slope"):
            head.check_ranges(ranges)
