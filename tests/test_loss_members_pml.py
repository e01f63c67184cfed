"""Sub-center ArcFace against pytorch-metric-learning's SubCenterArcFaceLoss, value and
gradient, on identical weights: ours (C·K, D) in class-major order is pml's W.t() (pml's W
is (D, C·K) and its cosines are viewed as (N, C, K)). pml takes its margin in degrees.
pytorch-metric-learning is a test dependency (pyproject's `test` extra): no skip."""

import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from lfsearch import losses as losses_mod

# pml's own use of scipy/numpy raises a NumPy 2 deprecation warning: not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

N, D, C = 40, 8, 6


@pytest.mark.parametrize("s,m,K", [(64.0, 0.5, 3), (30.0, 0.3, 2), (16.0, 0.5, 1),
                                   (64.0, 0.2, 4)])
def test_subcenter_arcface_agrees_with_pml(s, m, K):
    g = torch.Generator().manual_seed(3)
    ours = losses_mod.build("subcenter_arcface", embedding_size=D, num_classes=C,
                            s=s, m=m, K=K, generator=g).double()
    assert ours.weight.shape == (C * K, D)
    ref = pml_losses.SubCenterArcFaceLoss(num_classes=C, embedding_size=D,
                                          margin=math.degrees(m), scale=s,
                                          sub_centers=K).double()
    with torch.no_grad():
        ref.W.copy_(ours.weight.t())
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=g)
    # a few embeddings almost opposite one sub-centre of their class (θ near π: the fallback)
    w = ours.weight.detach().view(C, K, D)[y[:6], 0]
    x[:6] = -w * 3.0 + 0.02 * torch.randn(6, D, generator=g, dtype=torch.float64)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    value, expected = ours(x_ours, y), ref(x_ref, y)
    assert value.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    value.backward()
    expected.backward()
    assert torch.allclose(x_ours.grad, x_ref.grad, rtol=1e-7, atol=1e-10)
    assert torch.allclose(ours.weight.grad, ref.W.grad.t(), rtol=1e-7, atol=1e-10)
    # closed-set scores: the largest sub-centre cosine per class, as pml's get_logits
    assert torch.allclose(ours.logits(x), ref.get_logits(x), rtol=1e-12)
