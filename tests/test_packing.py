"""Packed population training: the same epoch results as one candidate after another, its
own loss parameters, optimiser state and BatchNorm statistics per candidate, divergence,
the mode choice, and at most one N x C logit matrix alive per candidate for large heads."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lfsearch import data, models
from lfsearch import losses as losses_mod
from lfsearch.search import accel as accel_mod
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import packed as packed_mod
from lfsearch.search import population as population_mod
from lfsearch.search import sequential as sequential_mod

D = 16


@pytest.fixture(scope="module")
def bench():
    b = data.load("digits-closed", seed=0)
    small = b.train.subset(slice(0, 192))
    val = b.val.subset(slice(0, 160))
    return b, small, [candidate_mod.Validation("val", val, "accuracy")]


def make_trainee(loss_name: str, optimizer: str, num_classes: int, lr: float, **loss_kw):
    torch.manual_seed(0)
    model = models.build("digits_net", embedding_size=D, in_channels=1, image_size=(8, 8))
    loss = losses_mod.build(loss_name, embedding_size=D, num_classes=num_classes, **loss_kw)
    opt = candidate_mod.make_optimizer(optimizer, list(model.parameters()) + list(loss.parameters()),
                                    lr=lr, momentum=0.9, weight_decay=5e-4)
    return candidate_mod.Trainee(model, loss, opt)


def assert_same_state(a: dict, b: dict, rtol=1e-3, atol=1e-4) -> None:
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=rtol, atol=atol, msg=k)
    assert a["loss"].keys() == b["loss"].keys()
    for k, v in a["loss"].items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(b["loss"][k], v, rtol=rtol, atol=atol, msg=k)
        else:
            assert b["loss"][k] == v, k
    oa, ob = a["optimizer"], b["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for idx, state in oa["state"].items():
        assert state.keys() == ob["state"][idx].keys()
        for k, v in state.items():
            torch.testing.assert_close(ob["state"][idx][k], v, rtol=rtol, atol=atol,
                                       msg=f"optimizer state {idx} {k}")


CASES = [  # (loss, its options, candidates, optimiser, lr)
    ("cosface", {"s": 16.0}, [{"m": 0.05}, {"m": 0.2}, {"m": 0.4}], "sgd", 0.05),
    ("modulated", {"s": 16.0}, [{"a": 1.0}, {"a": 4.0}, {"a": 20.0}], "adam", 3e-3),
    # running statistics (norm EMA, t) and seeded random margins, per candidate
    ("adaface", {"s": 16.0, "sigma": 0.05}, [{"m": 0.1}, {"m": 0.3}, {"m": 0.5}], "sgd", 0.05),
    ("curricularface", {"s": 16.0}, [{"m": 0.1}, {"m": 0.3}, {"m": 0.5}], "sgd", 0.05),
]


@pytest.mark.parametrize("loss_name, loss_kw, params, optimizer, lr", CASES,
                         ids=[c[0] for c in CASES])
def test_packed_gives_the_epoch_results_of_sequential(bench, loss_name, loss_kw, params,
                                                      optimizer, lr):
    b, train, validations = bench
    trainee = make_trainee(loss_name, optimizer, b.num_classes, lr, **loss_kw)
    kwargs = dict(train=train, validations=validations, batch_size=32, lr=lr,
                  candidate_seeds=[1, 2, 3], augment="none")
    start = trainee.state()
    for epoch in range(2):  # the second epoch starts from a state with optimiser moments
        seen = []
        seq = sequential_mod.run_epoch_sequential(trainee, start, params, data_seed=epoch, **kwargs)
        packed = packed_mod.run_epoch_packed(trainee, start, params, data_seed=epoch,
                                          on_candidate=lambda i, r: seen.append(i), **kwargs)
        assert seen == [0, 1, 2]
        assert [r.status for r in packed] == [r.status for r in seq] == ["ok"] * 3
        assert [r.params for r in packed] == params
        assert [r.reward for r in packed] == pytest.approx([r.reward for r in seq], abs=1e-9)
        assert [r.train_loss for r in packed] == pytest.approx([r.train_loss for r in seq],
                                                               rel=1e-4)
        for p, q in zip(packed, seq):  # every step's loss (tracking), mean = the epoch's
            assert len(p.step_losses) == len(q.step_losses) == len(train) // 32
            assert p.step_losses == pytest.approx(q.step_losses, rel=1e-4)
            assert sum(q.step_losses) / len(q.step_losses) == pytest.approx(q.train_loss)
        chosen = candidate_mod.choose_best(seq)
        assert candidate_mod.choose_best(packed) == chosen
        assert [r.state is not None for r in packed] == [r.state is not None for r in seq]
        assert_same_state(seq[chosen].state, packed[chosen].state)
        start = seq[chosen].state
    # the candidates did differ: different losses, different weights
    assert len({round(r.train_loss, 6) for r in packed}) == 3


def test_every_candidate_keeps_its_own_batchnorm_statistics_and_head(bench):
    b, train, validations = bench
    trainee = make_trainee("cosface", "sgd", b.num_classes, 0.05, s=16.0)
    params = [{"m": 0.0}, {"m": 0.5}]
    pop = packed_mod.PackedPopulation(trainee, trainee.state(), params, lr=0.05)
    pop.train_epoch(train, batch_size=64, generator=torch.Generator().manual_seed(0))
    first, second = pop.candidate_state(0), pop.candidate_state(1)
    key = "features.0.1.running_mean"
    assert not torch.equal(first["model"][key], second["model"][key])
    assert not torch.equal(first["loss"]["weight"], second["loss"]["weight"])
    assert first["loss"]["_extra_state"]["values"]["m"] == 0.0
    assert second["loss"]["_extra_state"]["values"]["m"] == 0.5


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


def test_a_diverging_candidate_stops_and_the_others_match_sequential(bench):
    b, train, validations = bench
    torch.manual_seed(0)
    model = models.build("digits_net", embedding_size=D, in_channels=1, image_size=(8, 8))
    loss = ExplodingLoss(losses_mod.build("softmax", embedding_size=D, num_classes=b.num_classes))
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                                    lr=0.05, momentum=0.9, weight_decay=0.0)
    trainee = candidate_mod.Trainee(model, loss, opt)
    params = [{"poison": 1.0}, {"poison": 0.0}, {"poison": 1.0}]
    kwargs = dict(train=train, validations=validations, batch_size=64, lr=0.05, data_seed=0,
                  candidate_seeds=[1, 2, 3])
    start = trainee.state()
    seq = sequential_mod.run_epoch_sequential(trainee, start, params, **kwargs)
    packed = packed_mod.run_epoch_packed(trainee, start, params, **kwargs)
    assert [r.status for r in packed] == ["diverged", "ok", "diverged"]
    assert packed[0].reward == candidate_mod.WORST_REWARD and packed[0].state is None
    assert candidate_mod.choose_best(packed) == 1
    assert packed[1].reward == pytest.approx(seq[1].reward, abs=1e-9)
    assert_same_state(seq[1].state, packed[1].state)


def test_mode_choice_and_bad_modes():
    assert accel_mod.resolve_mode("auto", "cpu") == "sequential"
    assert accel_mod.resolve_mode("auto", "cuda") == "packed"
    assert accel_mod.resolve_mode("packed", "cpu") == "packed"
    with pytest.raises(ValueError, match="training.packing.*auto, sequential, packed"):
        accel_mod.resolve_mode("vmap", "cpu")
    assert accel_mod.Accel.for_device("cpu") == accel_mod.Accel()
    gpu = accel_mod.Accel.for_device("cuda", compile=True)
    assert gpu.autocast == torch.bfloat16 and gpu.channels_last and gpu.compile


def test_run_epoch_dispatches_and_channels_last_changes_nothing_on_cpu(bench):
    b, _, validations = bench
    train = b.train.subset(slice(0, 96))
    trainee = make_trainee("arcface", "sgd", b.num_classes, 0.05, s=16.0)
    params = [{"m": 0.1}, {"m": 0.4}]
    kwargs = dict(train=train, validations=validations, batch_size=32, lr=0.05, data_seed=0,
                  candidate_seeds=[1, 2])
    start = trainee.state()
    plain = population_mod.Population.choose("packed", "cpu").run_epoch(trainee, start, params,
                                                                       **kwargs)
    last = population_mod.Population.choose("packed", "cpu", accel_mod.Accel(channels_last=True)
                                            ).run_epoch(trainee, start, params, **kwargs)
    assert [r.train_loss for r in last] == pytest.approx([r.train_loss for r in plain], rel=1e-5)
    seq = population_mod.Population.choose("auto", "cpu").run_epoch(trainee, start, params, **kwargs)
    assert [r.train_loss for r in seq] == pytest.approx([r.train_loss for r in plain], rel=1e-4)


def test_packing_refuses_an_optimizer_that_is_not_elementwise(bench):
    b, _, validations = bench
    trainee = make_trainee("cosface", "sgd", b.num_classes, 0.05)
    trainee.optimizer = torch.optim.LBFGS(trainee.model.parameters())
    with pytest.raises(ValueError, match="element-wise optimiser.*sgd, adam, adamw"):
        packed_mod.PackedPopulation(trainee, trainee.state(), [{"m": 0.1}], lr=0.1)


@pytest.mark.slow
def test_compiled_packed_backbone_gives_the_same_results(bench):
    b, _, validations = bench
    train = b.train.subset(slice(0, 96))
    trainee = make_trainee("cosface", "sgd", b.num_classes, 0.05, s=16.0)
    params = [{"m": 0.1}, {"m": 0.4}]
    kwargs = dict(train=train, validations=validations, batch_size=32, lr=0.05, data_seed=0,
                  candidate_seeds=[1, 2])
    start = trainee.state()
    plain = packed_mod.run_epoch_packed(trainee, start, params, **kwargs)
    compiled = packed_mod.run_epoch_packed(trainee, start, params,
                                        accel=accel_mod.Accel(compile=True), **kwargs)
    assert [r.train_loss for r in compiled] == pytest.approx([r.train_loss for r in plain],
                                                             rel=1e-4)


# ---------------------------------------------------------------- large heads: N x C copies
class CountLarge(TorchDispatchMode):
    """Counts tensors (distinct storages) of at least `threshold` elements alive at once."""

    def __init__(self, threshold: int) -> None:
        super().__init__()
        self.threshold, self.live, self.peak = threshold, {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() >= self.threshold:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live:
                    self.live[key] = weakref.ref(storage, lambda _, k=key: self.live.pop(k, None))
                    self.peak = max(self.peak, len(self.live))
        return out


N, C, DH = 16, 20_000, 8  # the head (C x DH) is smaller than one N x C matrix
HEADS = [("softmax", {}), ("cosface", {}), ("arcface", {}), ("modulated", {"a": 2.0}),
         ("modulated", {"bins": 4, "a": [1.0, 2.0, 3.0, 4.0]}), ("normface", {}),
         ("combined_margin", {}), ("am_lfs", {"bins": 3}), ("lsoftmax", {}),
         ("sphereface", {}), ("l2_softmax", {}), ("weighted_softmax", {})]


@pytest.mark.parametrize("name, kw", HEADS, ids=[f"{n}{'-bins' if 'bins' in k else ''}"
                                                 for n, k in HEADS])
def test_a_loss_holds_one_n_by_c_matrix_for_backward(name, kw):
    loss = losses_mod.build(name, embedding_size=DH, num_classes=C, **kw)
    x = torch.randn(N, DH, requires_grad=True)
    y = torch.randint(0, C, (N,))
    saved = set()

    def pack(t):
        if t.numel() >= N * C:
            saved.add(t.untyped_storage().data_ptr())
        return t

    with CountLarge(N * C) as count:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            value = loss(x, y)
        held = len(count.live)
        value.backward()
    assert len(saved) <= 1, f"{name} saves {len(saved)} N x C tensors for backward"
    assert held <= 1, f"{name} keeps {held} N x C tensors alive after forward"
    assert count.peak <= 2, f"{name}: {count.peak} N x C tensors alive at once"


@pytest.mark.parametrize("name, params", [
    ("cosface", [{"m": 0.1}, {"m": 0.2}, {"m": 0.3}]),
    ("arcface", [{"m": 0.1}, {"m": 0.2}, {"m": 0.3}]),
    ("modulated", [{"a": 1.0}, {"a": 2.0}, {"a": 3.0}]),
    ("softmax", [{}, {}, {}]),
])
def test_packed_training_with_a_100k_class_head_keeps_one_n_by_c_matrix_per_candidate(name,
                                                                                      params):
    classes, n, m = 100_000, 8, len(params)
    torch.manual_seed(0)
    model = models.build("digits_net", embedding_size=4, in_channels=1, image_size=(8, 8))
    loss = losses_mod.build(name, embedding_size=4, num_classes=classes)
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                                    lr=0.01, momentum=0.9, weight_decay=0.0)
    trainee = candidate_mod.Trainee(model, loss, opt)
    train = data.LabelledImages(torch.randn(2 * n, 1, 8, 8), torch.randint(0, classes, (2 * n,)))
    pop = packed_mod.PackedPopulation(trainee, trainee.state(), params, lr=0.01)
    with CountLarge(n * classes) as count:
        out = pop.train_epoch(train, batch_size=n, generator=torch.Generator().manual_seed(0))
    assert [s for _, s in out] == ["ok"] * m
    assert count.peak <= m  # in fact 2: the candidates' losses run one after another
    assert count.peak <= 2


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.05), ("adam", 3e-3)])
def test_per_candidate_starts_an_interval_epoch(bench, optimizer, lr):
    """Inside a competition interval each candidate goes on from its own state: candidate i
    from starts[i] gives what candidate i alone from starts[i] gives, packed or not, and a
    candidate whose start is None (diverged earlier) is skipped."""
    b, train, validations = bench
    trainee = make_trainee("cosface", optimizer, b.num_classes, lr, s=16.0)
    params = [{"m": 0.05}, {"m": 0.2}, {"m": 0.4}]
    kwargs = dict(train=train, validations=validations, batch_size=32, lr=lr,
                  candidate_seeds=[1, 2, 3], augment="none")
    first = sequential_mod.run_epoch_sequential(trainee, trainee.state(), params, data_seed=0,
                                            keep_all=True, **kwargs)
    starts = [r.state for r in first]
    assert all(s is not None for s in starts)
    assert not torch.equal(starts[0]["model"]["features.0.0.weight"],
                           starts[2]["model"]["features.0.0.weight"])
    seq = sequential_mod.run_epoch_sequential(trainee, starts, params, data_seed=1, keep_all=True,
                                          **kwargs)
    packed = packed_mod.run_epoch_packed(trainee, starts, params, data_seed=1, keep_all=True,
                                      **kwargs)
    for i in range(3):  # the independent expectation: candidate i on its own
        alone = sequential_mod.run_epoch_sequential(
            trainee, starts[i], [params[i]], data_seed=1,
            **{**kwargs, "candidate_seeds": [kwargs["candidate_seeds"][i]]})[0]
        assert seq[i].reward == alone.reward and seq[i].train_loss == alone.train_loss
        assert_same_state(alone.state, seq[i].state, rtol=0, atol=0)
        assert packed[i].train_loss == pytest.approx(alone.train_loss, rel=1e-4)
        assert_same_state(alone.state, packed[i].state)
    seen = []
    skipped = packed_mod.run_epoch_packed(trainee, [starts[0], None, starts[2]], params,
                                       data_seed=1, keep_all=True,
                                       on_candidate=lambda i, r: seen.append(i), **kwargs)
    assert seen == [0, 1, 2]
    assert [r.status for r in skipped] == ["ok", "diverged", "ok"]
    assert skipped[1].state is None and skipped[1].reward == candidate_mod.WORST_REWARD
    assert skipped[2].train_loss == pytest.approx(seq[2].train_loss, rel=1e-4)
