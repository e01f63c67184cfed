"""Issue 20, the CUDA paths checked on CPU: the packed-memory guard, float32 margin heads under
autocast, the backend flags, host reads per training step, chunked closed-set scoring and the
warm-up scaled to --epochs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lfsearch import data, models
from lfsearch import losses as losses_mod
from lfsearch.evaluation import metrics
from lfsearch.search import accel as accel_mod
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import config as config_mod
from lfsearch.search import memory
from lfsearch.search import packed as packed_mod
from lfsearch.search import population as population_mod
from lfsearch.search import sequential as sequential_mod

D, MIB, GIB = 16, 2**20, 2**30


# ------------------------------------------------------------------ 1. memory guard
def test_activation_estimate_counts_saved_inputs_once_per_image():
    # Linear(12 -> 20) saves its input (12 floats), ReLU its output (20), the second Linear
    # saves that same output again (the same storage, counted once): (12 + 20)·4 bytes/image
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 5))
    assert memory.activation_bytes_per_image(model, (1, 3, 4), "cpu") == (12 + 20) * 4


def test_activation_estimate_leaves_batchnorm_statistics_alone():
    model = models.build("digits_net", embedding_size=D, in_channels=1, image_size=(8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = memory.activation_bytes_per_image(model, (1, 8, 8), "cpu")
    assert a > 8 * 8 * 4  # at least the input image is saved
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_plan_packs_what_fits_in_a_fake_budget():
    a, state, fixed = 75 * MIB, 500 * MIB, 2 * GIB  # IResNet-50, bf16, batch 128
    per = int(128 * a * memory.SAFETY) + state  # one candidate: ~14.6 GiB
    kw = dict(batch_size=128, activation_per_image=a, state_per_candidate=state, fixed=fixed)
    everything = memory.plan_packing(4, budget=fixed + 4 * per, **kw)
    assert (everything.mode, everything.chunk) == ("packed", 4)
    three = memory.plan_packing(4, budget=fixed + 4 * per - 1, **kw)
    assert (three.mode, three.chunk) == ("packed", 3)
    two = memory.plan_packing(8, budget=fixed + 2 * per + per // 2, **kw)
    assert (two.mode, two.chunk) == ("packed", 2)
    alone = memory.plan_packing(4, budget=fixed + 2 * per - 1, **kw)
    assert (alone.mode, alone.chunk) == ("sequential", None) and "sequential" in alone.reason
    unguarded = memory.plan_packing(4, budget=None, **kw)
    assert (unguarded.mode, unguarded.chunk) == ("packed", 4)
    assert alone.describe()["budget_bytes"] == fixed + 2 * per - 1


def test_population_follows_the_plan():
    acc = accel_mod.Accel()
    kw = dict(batch_size=8, activation_per_image=100, state_per_candidate=0, fixed=0)
    chunked = population_mod.Population.choose("packed", "cpu", acc,
                                               plan=memory.plan_packing(4, budget=2400, **kw))
    assert (chunked.mode, chunked.chunk) == ("packed", 2)
    seq = population_mod.Population.choose("packed", "cpu", acc,
                                           plan=memory.plan_packing(4, budget=1000, **kw))
    assert seq.mode == "sequential"
    # a plan never turns a sequential run into a packed one
    assert population_mod.Population.choose(
        "sequential", "cpu", acc, plan=memory.plan_packing(4, budget=None, **kw)).mode == \
        "sequential"


@pytest.fixture(scope="module")
def bench():
    b = data.load("digits-closed", seed=0)
    return b, b.train.subset(slice(0, 96)), [candidate_mod.Validation(
        "val", b.val.subset(slice(0, 96)), "accuracy")]


def make_trainee(num_classes: int, loss: str = "cosface", **kw):
    torch.manual_seed(0)
    model = models.build("digits_net", embedding_size=D, in_channels=1, image_size=(8, 8))
    head = losses_mod.build(loss, embedding_size=D, num_classes=num_classes, s=16.0, **kw)
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(head.parameters()),
                                       lr=0.05, momentum=0.9, weight_decay=5e-4)
    return candidate_mod.Trainee(model, head, opt)


def test_chunks_of_candidates_give_the_packed_results(bench):
    b, train, vals = bench
    params = [{"m": 0.05}, {"m": 0.2}, {"m": 0.3}, {"m": 0.4}]
    kw = dict(train=train, validations=vals, batch_size=16, lr=0.05, data_seed=3,
              candidate_seeds=[1, 2, 3, 4], keep_all=True)
    t = make_trainee(b.num_classes)
    whole = packed_mod.run_epoch_packed(t, t.state(), params, **kw)
    t = make_trainee(b.num_classes)
    seen = []
    parts = packed_mod.run_in_chunks(t, t.state(), params, 3,
                                     on_candidate=lambda i, r: seen.append(i), **kw)
    assert seen == [0, 1, 2, 3]
    for a, c in zip(whole, parts):
        assert abs(a.train_loss - c.train_loss) < 1e-5 and a.status == c.status == "ok"
    # without keep_all only the best state over all chunks is kept
    t = make_trainee(b.num_classes)
    best = packed_mod.run_in_chunks(t, t.state(), params, 2, **{**kw, "keep_all": False})
    kept = [i for i, r in enumerate(best) if r.state is not None]
    assert kept == [candidate_mod.choose_best(best)]


# ------------------------------------------------------------ 2. heads in float32
@pytest.mark.parametrize("name", ["arcface", "cosface", "modulated", "adaface"])
def test_margin_heads_run_in_float32_under_bf16_autocast(name):
    torch.manual_seed(0)
    c = 2000
    head = losses_mod.build(name, embedding_size=64, num_classes=c, s=64.0)
    x = torch.randn(32, 64)
    labels = torch.randint(0, c, (32,))
    with torch.no_grad():  # cos θ_y ≈ 0.7: the regime where bf16 logits were 7–9% off
        w = nn.functional.normalize(head.weight[labels], dim=1)
        x = 0.7 * w + 0.71 * nn.functional.normalize(torch.randn(32, 64), dim=1)
    backbone = nn.Linear(64, 64)  # stays bf16 under autocast
    with torch.no_grad():
        backbone.weight.copy_(torch.eye(64))
        backbone.bias.zero_()

    def grad(head_under_autocast: bool):
        e = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            emb = backbone(e)  # bf16, in both runs
            if head_under_autocast:
                value, logits = head(emb, labels), head.logits(emb)
        if not head_under_autocast:  # the reference: a float32 head outside autocast
            value, logits = head(emb.float(), labels), head.logits(emb.float())
        value.backward()
        return value, logits, e.grad

    assert grad(True)[0].dtype == grad(True)[1].dtype == torch.float32
    ref_value, ref_logits, ref = grad(False)
    value, logits, g = grad(True)
    # the head under autocast is the float32 head (bf16 logits: 1–6% off here, 7–9% at 20k)
    rel = float((g - ref).norm() / ref.norm())
    assert rel < 1e-4, rel
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    assert abs(value.item() - ref_value.item()) < 1e-5 * abs(ref_value.item())


def test_head_gradient_is_exact_when_autocast_sees_float32_embeddings():
    torch.manual_seed(1)
    head = losses_mod.build("arcface", embedding_size=32, num_classes=500, s=64.0)
    x = torch.randn(16, 32, requires_grad=True)
    labels = torch.randint(0, 500, (16,))
    head(x, labels).backward()
    ref = x.grad.clone()
    x.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = head(x, labels)
    value.backward()  # outside autocast, as the training paths do
    torch.testing.assert_close(x.grad, ref, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------ 3. backend flags
def test_backend_flags_for_cuda_only():
    assert accel_mod.backend_settings("cpu") == {}
    cuda = accel_mod.backend_settings("cuda")
    assert cuda == {"cudnn_benchmark": True, "cudnn_tf32": True, "matmul_tf32": False}
    before = torch.backends.cudnn.benchmark
    assert accel_mod.apply_backends("cpu") == {}
    assert torch.backends.cudnn.benchmark == before


# ------------------------------------------------------------ 4. host reads per step
class HostReads:
    """Counts the Tensor -> host reads that block on a GPU (item, tolist, bool, float, int,
    cpu, numpy): the CPU-countable proxy for host-device syncs."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            real = getattr(torch.Tensor, name)

            def counting(t, *a, _real=real, **k):
                self.count += 1
                return _real(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counting)


@pytest.mark.parametrize("path", ["sequential", "packed"])
def test_host_reads_do_not_grow_with_the_steps(bench, monkeypatch, path):
    b, train, _ = bench
    reads = []
    for n in (32, 96):  # 2 and 6 steps of 16
        t = make_trainee(b.num_classes)
        gen = torch.Generator().manual_seed(0)
        counter = HostReads(monkeypatch)
        if path == "sequential":
            loss, status = candidate_mod.train_one_epoch(t, train.subset(slice(0, n)),
                                                         batch_size=16, generator=gen, lr=0.05)
        else:
            pop = packed_mod.PackedPopulation(t, t.state(), [{"m": 0.1}, {"m": 0.3}], lr=0.05)
            (loss, status), _ = pop.train_epoch(train.subset(slice(0, n)), batch_size=16,
                                                generator=gen)
        monkeypatch.undo()
        assert status == "ok"
        reads.append(counter.count)
    # the first step's input check and the end-of-epoch read only: 0 reads per later step
    assert reads[0] == reads[1] and reads[1] <= 4, reads


def test_late_read_still_marks_a_diverged_candidate(bench):
    b, train, vals = bench
    t = make_trainee(b.num_classes)
    results = sequential_mod.run_epoch_sequential(
        t, t.state(), [{"m": 0.2}], train=train, validations=vals, batch_size=16, lr=1e30,
        data_seed=0, candidate_seeds=[0])
    assert results[0].status == "diverged" and results[0].state is None


# ------------------------------------------------------------ 6. chunked evaluation
def test_chunked_accuracy_equals_the_whole():
    torch.manual_seed(0)
    head = losses_mod.build("arcface", embedding_size=8, num_classes=13, s=16.0)
    e, labels = torch.randn(50, 8), torch.randint(0, 13, (50,))
    whole = metrics.classification_accuracy(head.logits(e), labels)
    sizes = []

    def logits(x):
        sizes.append(x.shape[0])
        return head.logits(x)

    for chunk in (1, 7, 50, 64):
        sizes.clear()
        assert metrics.chunked_accuracy(logits, e, labels, chunk=chunk) == pytest.approx(whole)
        assert max(sizes) == min(chunk, 50) and sum(sizes) == 50
    with pytest.raises(ValueError, match="chunk"):
        metrics.chunked_accuracy(logits, e, labels, chunk=0)


def test_embed_under_autocast_returns_float32_close_to_full_precision():
    torch.manual_seed(0)
    model = models.build("digits_net", embedding_size=D, in_channels=1, image_size=(8, 8))
    images = torch.rand(20, 1, 8, 8)
    full = metrics.embed(model, images, autocast=None)
    half = metrics.embed(model, images, autocast=torch.bfloat16)
    assert half.dtype == torch.float32
    assert not torch.equal(full, half)  # autocast did run
    torch.testing.assert_close(half, full, rtol=0.1, atol=0.05)
    torch.testing.assert_close(metrics.embed(model, images), full)  # auto = none on CPU


# ------------------------------------------------------------ 7. warm-up and --epochs
def test_face_recipe_runs_one_epoch_with_the_warm_up_scaled():
    recipe = config_mod.load("face_recipe")
    assert recipe["training"]["warmup_epochs"] == 1 and recipe["training"]["epochs"] == 20
    one = config_mod.resolve(recipe, epochs=1)
    assert one["training"]["epochs"] == 1 and one["training"]["warmup_epochs"] == 0
    kept = config_mod.resolve(recipe, epochs=5)  # it fits: unchanged
    assert kept["training"]["warmup_epochs"] == 1
    longer = {**recipe, "training": {**recipe["training"], "warmup_epochs": 8}}
    assert config_mod.resolve(longer, epochs=5)["training"]["warmup_epochs"] == 2  # ⌊8·5/20⌋
    with pytest.raises(ValueError, match="warmup_epochs"):  # the file itself is still checked
        config_mod.resolve({**recipe, "training": {**recipe["training"], "warmup_epochs": 20}})


# ------------------------------------------------------------ the GPU check's plumbing
@pytest.mark.slow
def test_gpu_check_runs_dry_on_cpu(tmp_path):
    import json
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "DRY": "1", "WORK": str(tmp_path)}
    done = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    for part in ("[population]", "[heads]", "[search]", "[syncs]", "[stream]"):
        assert part in done.stdout
    figures = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert figures["failed_parts"] == 0
    assert figures["syncs"]["sequential"]["reads_per_step"] == 0
    assert figures["syncs"]["packed"]["reads_per_step"] == 0
    assert figures["search_face_recipe"]["value"] is not None
    for model in ("face_cnn", "iresnet18"):  # packing = auto's trial, forced on CPU
        auto = figures["population"][model]["auto"]
        assert auto["reason"] == "measured" and auto["trial"]["ratio"] > 0
    assert figures["search_search_softmax"]["packing"]["reason"] == "cpu default"


# ------------------------------------------------------------ 5. streaming defaults
def test_streamed_workers_default_to_usable_cpus_and_persist():
    import os
    from pathlib import Path

    from lfsearch.data import stream

    assert stream.default_workers() == len(os.sched_getaffinity(0))
    root = Path(__file__).parent / "data" / "orl_small"
    spec = f"folder:{root}?val=0.25&test=0.25&pairs=200&size=28x23"
    streamed = data.load(f"{spec}&stream=yes&workers=1", seed=0).train
    memory_split = data.load(f"{spec}&stream=no", seed=0).train
    streamed.cache_bytes = 0  # decode every epoch: the workers do the work
    loaders = []
    for epoch in range(2):
        got = list(data.batches(streamed, 8, generator=torch.Generator().manual_seed(epoch)))
        want = list(data.batches(memory_split, 8,
                                 generator=torch.Generator().manual_seed(epoch)))
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                   for a, b in zip(got, want)) and len(got) == len(want)
        loaders.append(streamed._loader)
    assert loaders[0] is loaders[1] and loaders[0].persistent_workers
    assert streamed.decodes == 2 * len(want)
