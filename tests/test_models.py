"""Backbones: names, shapes, the L-Softmax paper's Table 1 layers, ResNet-20, input checks."""

import pytest
import torch
from torch import nn

from lfsearch import models


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
                                         "lsoftmax_cifar100", "resnet20", "face_cnn"])


@pytest.mark.parametrize("name,channels,size", [
    ("digits_net", 1, (8, 8)), ("lsoftmax_mnist", 1, (28, 28)), ("lsoftmax_cifar10", 3, (32, 32)),
    ("lsoftmax_cifar100", 3, (32, 32)), ("resnet20", 3, (32, 32)), ("face_cnn", 1, (112, 92)),
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
