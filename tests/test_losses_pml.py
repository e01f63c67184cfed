"""Value-for-value agreement with pytorch-metric-learning on identical weights and inputs.

pml conventions, converted (not copied): its class weights W are (D, C) (ours (C, D));
ArcFaceLoss takes its margin in degrees; CosFaceLoss's margin is a cosine offset;
LargeMarginSoftmaxLoss and SphereFaceLoss take an integer m and a `scale` (1 here) and
have no λ annealing (ours: lambda_base = lambda_min = 0); NormalizedSoftmaxLoss takes a
temperature = 1/s. Both sides average over the batch.
"""

import math

import pytest
import torch

from lfsearch import losses

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
# pml's own use of scipy/numpy raises a NumPy 2 deprecation warning: not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

N, D, C = 40, 8, 6
NO_ANNEALING = {"lambda_base": 0.0, "lambda_min": 0.0}

CASES = [
    ("arcface", {"s": 64.0, "m": 0.5},
     lambda: pml_losses.ArcFaceLoss(C, D, margin=math.degrees(0.5), scale=64)),
    ("arcface", {"s": 30.0, "m": 0.3},
     lambda: pml_losses.ArcFaceLoss(C, D, margin=math.degrees(0.3), scale=30)),
    ("cosface", {"s": 64.0, "m": 0.35},
     lambda: pml_losses.CosFaceLoss(C, D, margin=0.35, scale=64)),
    ("am_softmax", {"s": 30.0, "m": 0.2},
     lambda: pml_losses.CosFaceLoss(C, D, margin=0.2, scale=30)),
    ("sphereface", {"m": 4, **NO_ANNEALING},
     lambda: pml_losses.SphereFaceLoss(C, D, margin=4, scale=1)),
    ("sphereface", {"m": 2, **NO_ANNEALING},
     lambda: pml_losses.SphereFaceLoss(C, D, margin=2, scale=1)),
    ("lsoftmax", {"m": 4, **NO_ANNEALING},
     lambda: pml_losses.LargeMarginSoftmaxLoss(C, D, margin=4, scale=1)),
    ("lsoftmax", {"m": 3, **NO_ANNEALING},
     lambda: pml_losses.LargeMarginSoftmaxLoss(C, D, margin=3, scale=1)),
    ("normface", {"s": 20.0},
     lambda: pml_losses.NormalizedSoftmaxLoss(C, D, temperature=0.05)),
]


@pytest.mark.parametrize("name,params,make_ref", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_agrees_with_pytorch_metric_learning(name, params, make_ref):
    g = torch.Generator().manual_seed(7)
    ours = losses.build(name, embedding_size=D, num_classes=C, generator=g, **params).double()
    ref = make_ref().double()
    with torch.no_grad():
        ref.W.copy_(ours.weight.t())
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=g)
    # some embeddings almost opposite their class (θ near π: ArcFace's fallback region)
    w = ours.weight.detach()
    x[:6] = -w[y[:6]] * 3.0 + 0.02 * torch.randn(6, D, generator=g, dtype=torch.float64)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    value, expected = ours(x_ours, y), ref(x_ref, y)
    assert value.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    value.backward()
    expected.backward()
    assert torch.allclose(x_ours.grad, x_ref.grad, rtol=1e-7, atol=1e-10)
    assert torch.allclose(ours.weight.grad, ref.W.grad.t(), rtol=1e-7, atol=1e-10)
