"""Backbones: names, shapes, the L-Softmax paper's Table 1 layers, ResNet-20, input checks."""

import pytest
import torch
from torch import nn

from lfsearch import models
from lfsearch.models import iresnet


@pytest.fixture(autouse=True, scope="module")
def models_single_thread():
    """One intra-op thread for these small forward/backward checks (much faster than two on a
    shared 2-core CPU); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_available_lists_every_contract_name():
    assert models.available() == sorted(["digits_net", "lsoftmax_mnist", "lsoftmax_cifar10",
                                         "lsoftmax_cifar100", "resnet20", "face_cnn",
                                         "iresnet18", "iresnet34", "iresnet50", "iresnet100",
                                         "mobilefacenet"])


@pytest.mark.parametrize("name,channels,size", [
    ("digits_net", 1, (8, 8)), ("lsoftmax_mnist", 1, (28, 28)), ("lsoftmax_cifar10", 3, (32, 32)),
    ("lsoftmax_cifar100", 3, (32, 32)), ("resnet20", 3, (32, 32)), ("face_cnn", 1, (112, 92)),
    ("iresnet18", 3, (112, 112)), ("mobilefacenet", 3, (112, 112)),
])
def test_every_model_maps_images_to_embeddings_and_trains(name, channels, size):
    torch.manual_seed(0)
    model = models.build(name, embedding_size=24, in_channels=channels, image_size=size)
    x = torch.randn(3, channels, *size)
    e = model(x)
    assert e.shape == (3, 24) and torch.isfinite(e).all()
    e.pow(2).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert (model.embedding_size, model.in_channels, model.image_size) == (24, channels, size)


def test_lsoftmax_mnist_follows_table_1():
    # conv0 [3x3,64]; conv1.x [3x3,64]x3; pool; conv2.x [3x3,64]x3; pool;
    # conv3.x [3x3,64]x3; pool; fc
    m = models.build("lsoftmax_mnist", embedding_size=256)
    c = convs(m)
    assert len(c) == 1 + 3 * 3
    assert all(k.kernel_size == (3, 3) and k.out_channels == 64 for k in c)
    assert sum(isinstance(k, nn.MaxPool2d) for k in m.modules()) == 3
    assert sum(isinstance(k, nn.PReLU) for k in m.modules()) == 10
    assert sum(isinstance(k, nn.BatchNorm2d) for k in m.modules()) == 10
    assert m.fc.in_features == 64 * 3 * 3  # 28 -> 14 -> 7 -> 3


@pytest.mark.parametrize("name,widths", [
    ("lsoftmax_cifar10", [64] + [64] * 4 + [96] * 4 + [128] * 4),
    ("lsoftmax_cifar100", [96] + [96] * 4 + [192] * 4 + [384] * 4),
])
def test_lsoftmax_cifar_nets_follow_table_1(name, widths):
    m = models.build(name)
    assert [k.out_channels for k in convs(m)] == widths
    assert m.fc.in_features == widths[-1] * 4 * 4  # 32 -> 16 -> 8 -> 4


def test_resnet20_has_19_convs_one_fc_and_027m_parameters():
    m = models.build("resnet20", embedding_size=64)
    c = convs(m)
    assert len(c) == 19  # 1 + 3 stages x 3 blocks x 2
    assert [k.out_channels for k in c] == [16] * 7 + [32] * 6 + [64] * 6
    n = sum(p.numel() for p in m.parameters())
    assert 0.26e6 < n < 0.28e6  # He et al. 2016, Table 6: 0.27M
    assert m(torch.randn(2, 3, 40, 40)).shape == (2, 64)  # global pooling: any size


@pytest.mark.parametrize("size", [(112, 112), (112, 96), (64, 64), (32, 32)])
def test_face_cnn_accepts_inputs_up_to_112(size):
    m = models.build("face_cnn", embedding_size=16, in_channels=3, image_size=size)
    assert m(torch.randn(2, 3, *size)).shape == (2, 16)
    assert isinstance(m.bn, nn.BatchNorm1d)  # face_cnn normalises its embedding by default


def test_embedding_batchnorm_is_optional():
    assert isinstance(models.build("digits_net").bn, nn.Identity)
    assert isinstance(models.build("digits_net", embedding_bn=True).bn, nn.BatchNorm1d)
    assert isinstance(models.build("face_cnn", embedding_bn=False).bn, nn.Identity)


def test_defaults_per_model():
    m = models.build("digits_net")
    assert (m.embedding_size, m.in_channels, m.image_size) == (32, 1, (8, 8))
    m = models.build("lsoftmax_cifar10", image_size=32)
    assert m.image_size == (32, 32) and m.in_channels == 3


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = models.build("digits_net")
    torch.manual_seed(3)
    b = models.build("digits_net")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="allowed: .*digits_net"):
        models.build("vgg")
    with pytest.raises(ValueError, match="embedding_size"):
        models.build("digits_net", embedding_size=0)
    with pytest.raises(ValueError, match="image_size"):
        models.build("digits_net", image_size=(8, 0))
    with pytest.raises(ValueError, match="8x8 or more"):
        models.build("lsoftmax_mnist", image_size=4)
    m = models.build("lsoftmax_mnist")
    with pytest.raises(ValueError, match=r"expects images \(N, 1, 28, 28\)"):
        m(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="expects images"):
        models.build("resnet20")(torch.randn(2, 1, 32, 32))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def multiply_accumulates(model: nn.Module, shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one image's forward, counted here by hand from each layer's
    shapes: a Conv2d does (C_in / groups)·kh·kw per output element, a Linear in·out."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output[0].numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize("name,millions", [
    ("iresnet18", 24.0), ("iresnet34", 34.1), ("iresnet50", 43.6), ("iresnet100", 65.2)])
def test_iresnet_parameter_counts_match_insightface(name, millions):
    # insightface's arcface_torch model table, 512-d embedding at 112x112
    m = models.build(name)
    assert (m.embedding_size, m.in_channels, m.image_size) == (512, 3, (112, 112))
    assert round(n_params(m) / 1e6, 1) == millions


def test_iresnet_block_layout():
    m = models.build("iresnet50", embedding_size=512)
    blocks = [b for b in m.modules() if isinstance(b, iresnet.IBasicBlock)]
    assert len(blocks) == 3 + 4 + 14 + 3
    widths = [b.conv2.out_channels for b in blocks]
    assert widths == [64] * 3 + [128] * 4 + [256] * 14 + [512] * 3
    firsts = {0, 3, 7, 21}  # each stage's first block: stride 2 on conv2, a 1x1 conv + BN shortcut
    for i, b in enumerate(blocks):
        assert b.conv1.stride == (1, 1)
        assert b.conv2.stride == ((2, 2) if i in firsts else (1, 1))
        assert (b.downsample is not None) == (i in firsts)
        if b.downsample is not None:
            assert b.downsample[0].kernel_size == (1, 1)
            assert isinstance(b.downsample[1], nn.BatchNorm2d)
    # BN -> conv -> BN -> PReLU -> conv -> BN: the first BN sees the block's input width
    assert blocks[3].bn1.num_features == 64 and blocks[3].bn3.num_features == 128
    stem = list(m.features)[:3]
    assert isinstance(stem[0], nn.Conv2d) and stem[0].out_channels == 64
    assert stem[0].stride == (1, 1) and isinstance(stem[2], nn.PReLU)
    assert m.fc.in_features == 512 * 7 * 7 and m.fc.out_features == 512
    # the embedding BN1d's scale is fixed at 1, as insightface's (only its shift trains)
    assert isinstance(m.bn, nn.BatchNorm1d) and not m.bn.weight.requires_grad
    assert torch.equal(m.bn.weight, torch.ones(512))


def test_iresnet_blocks_compute_the_published_formula():
    torch.manual_seed(0)
    b = iresnet.IBasicBlock(4, 8, 2).eval()
    for bn in (b.bn1, b.bn2, b.bn3, b.downsample[1]):  # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 6, 6)

    def bn(layer, t):
        return ((t - layer.running_mean[:, None, None]) / (layer.running_var[:, None, None]
                + layer.eps).sqrt() * layer.weight[:, None, None] + layer.bias[:, None, None])

    with torch.no_grad():
        out = bn(b.bn1, x)
        out = torch.nn.functional.conv2d(out, b.conv1.weight, padding=1)
        out = bn(b.bn2, out)
        out = torch.where(out >= 0, out, b.prelu.weight[:, None, None] * out)
        out = torch.nn.functional.conv2d(out, b.conv2.weight, stride=2, padding=1)
        out = bn(b.bn3, out)
        short = bn(b.downsample[1], torch.nn.functional.conv2d(x, b.downsample[0].weight,
                                                               stride=2))
        torch.testing.assert_close(b(x), out + short)


def test_mobilefacenet_matches_the_paper_size_and_compute():
    # Chen et al. 2018, Table 2: 0.99M parameters and 221M MAdds with a 128-d embedding
    m128 = models.build("mobilefacenet", embedding_size=128)
    assert 0.95e6 < n_params(m128) < 1.05e6
    assert 215e6 < multiply_accumulates(m128, (3, 112, 112)) < 227e6
    # the 512-d default: about 1.2M parameters, 0.44 GFLOPs (2 FLOPs per multiply-accumulate)
    m = models.build("mobilefacenet")
    assert 1.1e6 < n_params(m) < 1.3e6
    assert 0.42e9 < 2 * multiply_accumulates(m, (3, 112, 112)) < 0.47e9
    gdconv = [c for c in convs(m) if c.kernel_size == (7, 7)]
    assert len(gdconv) == 1 and gdconv[0].groups == 512  # the global depthwise conv
    assert m.fc.bias is None and isinstance(m.bn, nn.BatchNorm1d)
