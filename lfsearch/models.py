"""Backbones: (N, C, H, W) float images -> (N, embedding_size) embeddings.

Every model is an `EmbeddingNet` and ends in a linear embedding layer of the requested size
(optionally followed by BatchNorm1d, `embedding_bn`); the loss head (class weights) lives in
the loss module, not here.

=================  ==========================================================================
digits_net         a tiny CNN for 8x8 digits: [3x3,32]x2, pool, [3x3,64], pool, fc.
lsoftmax_mnist     L-Softmax paper (Liu et al., ICML 2016), Table 1, MNIST:
                   conv0 [3x3,64]; conv1.x [3x3,64]x3; pool; conv2.x [3x3,64]x3; pool;
                   conv3.x [3x3,64]x3; pool; fc.
lsoftmax_cifar10   Table 1, CIFAR-10: conv0 [3x3,64]; conv1.x [3x3,64]x4; pool;
                   conv2.x [3x3,96]x4; pool; conv3.x [3x3,128]x4; pool; fc.
lsoftmax_cifar100  Table 1, CIFAR-100: conv0 [3x3,96]; conv1.x [3x3,96]x4; pool;
                   conv2.x [3x3,192]x4; pool; conv3.x [3x3,384]x4; pool; fc.
resnet20           He et al. 2016's CIFAR ResNet-20 (AM-LFS's CIFAR backbone): [3x3,16];
                   3 stages of 3 basic blocks (16, 32, 64 channels, stride 2 between stages,
                   parameter-free "option A" shortcuts); global average pool; fc (19 conv + 1 fc).
face_cnn           a small face CNN for inputs up to 112x112: [3x3,32]; 4 stages of a stride-2
                   [3x3] and a residual [3x3]x2 block (32, 64, 128, 256 channels); BN,
                   flatten, fc, BN (insightface's output layer "E", without dropout).
iresnet18/34/      insightface's "improved" ResNets (Deng et al., ArcFace, CVPR 2019; Duta et
iresnet50/         al. 2020): stem [3x3,64] BN PReLU; 4 stages of IBasicBlocks (widths 64, 128,
iresnet100         256, 512, each stage's first block stride 2; blocks [2,2,2,2], [3,4,6,3],
                   [3,4,14,3], [3,13,30,3]); BN2d, dropout, flatten, fc (512·7·7 -> 512), BN1d.
                   24.0M, 34.1M, 43.6M, 65.2M parameters at 112x112 with a 512-d embedding.
mobilefacenet      MobileFaceNet (Chen et al., CCBR 2018, Table 1): inverted-residual
                   bottlenecks with PReLU, a global depthwise 7x7 conv (GDConv), a linear 1x1
                   embedding: about 1.2M parameters (512-d) and 0.45 GFLOPs at 112x112.
=================  ==========================================================================

The L-Softmax nets use 3x3 convolutions with padding 1, each followed by BatchNorm and PReLU
(the paper uses BN and PReLU throughout), and 2x2 max pooling with stride 2; the fc input is
the flattened last feature map. The paper gives no fc width for the embedding: it is
`embedding_size` here.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or not all(isinstance(v, int) and v > 0 for v in image_size)):
        raise ValueError("image_size must be an int or (H, W) of positive ints; "
                         f"got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def conv_bn_prelu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (padding 1, no bias) -> BatchNorm2d -> PReLU (one slope per channel)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.PReLU(c_out))


class EmbeddingNet(nn.Module):
    """Base: `features` (conv trunk) then `embedding` (flatten or pool, linear, optional BN).

    Checks the input's channels (and size when the net has a fixed fc input)."""

    def __init__(self, features: nn.Module, flat: int, *, embedding_size: int, in_channels: int,
                 image_size: tuple[int, int], embedding_bn: bool, pool: bool = False,
                 fixed_size: bool = True) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1) if pool else nn.Identity()
        self.fc = nn.Linear(flat, embedding_size)
        self.bn = nn.BatchNorm1d(embedding_size) if embedding_bn else nn.Identity()
        self.embedding_size = embedding_size
        self.in_channels = in_channels
        self.image_size = image_size
        self.fixed_size = fixed_size

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or (
                self.fixed_size and tuple(x.shape[2:]) != self.image_size):
            want = (f"(N, {self.in_channels}, {self.image_size[0]}, {self.image_size[1]})"
                    if self.fixed_size else f"(N, {self.in_channels}, H, W)")
            raise ValueError(f"{type(self).__name__} expects images {want}; got {tuple(x.shape)}")
        x = self.pool(self.features(x))
        return self.bn(self.fc(torch.flatten(x, 1)))


class DigitsNet(EmbeddingNet):
    """Tiny CNN for 8x8 digits: [3x3,32]x2, maxpool, [3x3,64], maxpool, fc."""

    def __init__(self, *, embedding_size: int, in_channels: int, image_size: tuple[int, int],
                 embedding_bn: bool) -> None:
        h, w = image_size
        if h < 4 or w < 4:
            raise ValueError(f"digits_net needs images of 4x4 or more; got image_size {image_size}")
        features = nn.Sequential(conv_bn_prelu(in_channels, 32), conv_bn_prelu(32, 32),
                                 nn.MaxPool2d(2), conv_bn_prelu(32, 64), nn.MaxPool2d(2))
        super().__init__(features, 64 * (h // 4) * (w // 4), embedding_size=embedding_size,
                         in_channels=in_channels, image_size=image_size, embedding_bn=embedding_bn)


class LSoftmaxNet(EmbeddingNet):
    """The L-Softmax paper's plain CNN: conv0, then three stages of `depth` 3x3 convolutions
    each followed by 2x2 max pooling, then fc."""

    def __init__(self, widths: tuple[int, int, int, int], depth: int, *, embedding_size: int,
                 in_channels: int, image_size: tuple[int, int], embedding_bn: bool) -> None:
        h, w = image_size
        if h < 8 or w < 8:
            raise ValueError(f"L-Softmax nets pool three times and need images of 8x8 or more; "
                             f"got image_size {image_size}")
        layers: list[nn.Module] = [conv_bn_prelu(in_channels, widths[0])]
        c = widths[0]
        for width in widths[1:]:
            for _ in range(depth):
                layers.append(conv_bn_prelu(c, width))
                c = width
            layers.append(nn.MaxPool2d(2, 2))
        super().__init__(nn.Sequential(*layers), c * (h // 8) * (w // 8),
                         embedding_size=embedding_size, in_channels=in_channels,
                         image_size=image_size, embedding_bn=embedding_bn)


class BasicBlock(nn.Module):
    """ResNet basic block: x + BN(conv(ReLU(BN(conv x)))) then ReLU; the shortcut of a
    down-sampling block takes every other pixel and zero-pads the new channels (option A)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.extra = stride, c_out - c_in

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.extra:
            short = F.pad(short, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(out + short)


class ResNet20(EmbeddingNet):
    """CIFAR ResNet-20 (He et al. 2016, section 4.2) with n = 3: 6n + 2 = 20 layers."""

    def __init__(self, *, embedding_size: int, in_channels: int, image_size: tuple[int, int],
                 embedding_bn: bool, n: int = 3) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
        c = 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                layers.append(BasicBlock(c, width, 2 if stage > 0 and i == 0 else 1))
                c = width
        super().__init__(nn.Sequential(*layers), 64, embedding_size=embedding_size,
                         in_channels=in_channels, image_size=image_size,
                         embedding_bn=embedding_bn, pool=True, fixed_size=False)


class ResidualUnit(nn.Module):
    """x + BN(conv(PReLU(BN(conv x)))) at constant width."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_prelu(c, c), nn.Conv2d(c, c, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(c))
        self.act = nn.PReLU(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


class FaceCNN(EmbeddingNet):
    """Small face CNN: [3x3,32], then per stage a stride-2 [3x3] conv and a residual unit
    (32, 64, 128, 256 channels: 112x112 -> 7x7), BN, flatten, fc, BN."""

    def __init__(self, *, embedding_size: int, in_channels: int, image_size: tuple[int, int],
                 embedding_bn: bool, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        h, w = image_size
        layers: list[nn.Module] = [conv_bn_prelu(in_channels, widths[0])]
        c = widths[0]
        for width in widths:
            layers += [conv_bn_prelu(c, width, stride=2), ResidualUnit(width)]
            c = width
            h, w = (h + 1) // 2, (w + 1) // 2
        layers.append(nn.BatchNorm2d(c))
        super().__init__(nn.Sequential(*layers), c * h * w, embedding_size=embedding_size,
                         in_channels=in_channels, image_size=image_size,
                         embedding_bn=embedding_bn)


class IBasicBlock(nn.Module):
    """insightface's IResNet block: out = BN(conv3x3_s(PReLU(BN(conv3x3(BN(x)))))) + short(x),
    with short(x) = BN(conv1x1_s(x)) when the block changes stride or width, else x. The
    stride s sits on the second convolution; there is no activation after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.prelu = nn.PReLU(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                         nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


IRESNET_LAYERS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3),
                  "iresnet50": (3, 4, 14, 3), "iresnet100": (3, 13, 30, 3)}


class IResNet(EmbeddingNet):
    """IResNet: stem [3x3,64] BN PReLU; stages of IBasicBlocks (64, 128, 256, 512 channels,
    the first block of each stride 2: 112x112 -> 7x7); BN2d; dropout; flatten; fc; BN1d.

    As insightface: convolution weights start from N(0, 0.1²), BatchNorm at weight 1 and bias 0,
    and the embedding BN1d's scale is fixed at 1 (requires_grad False; its shift is trained).
    """

    def __init__(self, layers: tuple[int, int, int, int], *, embedding_size: int,
                 in_channels: int, image_size: tuple[int, int], embedding_bn: bool,
                 dropout: float = 0.0) -> None:
        h, w = image_size
        trunk: list[nn.Module] = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(64), nn.PReLU(64)]
        c = 64
        for width, blocks in zip((64, 128, 256, 512), layers):
            for i in range(blocks):
                trunk.append(IBasicBlock(c, width, 2 if i == 0 else 1))
                c = width
            h, w = (h + 1) // 2, (w + 1) // 2  # a 3x3 stride-2 conv with padding 1: ceil(h/2)
        trunk += [nn.BatchNorm2d(c), nn.Dropout(dropout)]
        super().__init__(nn.Sequential(*trunk), c * h * w, embedding_size=embedding_size,
                         in_channels=in_channels, image_size=image_size,
                         embedding_bn=embedding_bn)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.bn, nn.BatchNorm1d):
            nn.init.ones_(self.bn.weight)
            self.bn.weight.requires_grad_(False)


def conv_bn(c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1,
            prelu: bool = True) -> nn.Sequential:
    """conv (padding kernel // 2, no bias) -> BatchNorm2d [-> PReLU]; linear without PReLU."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2,
                                         groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    if prelu:
        layers.append(nn.PReLU(c_out))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """MobileNetV2 inverted residual with PReLU: 1x1 expand (t·c_in) -> 3x3 depthwise (stride s)
    -> linear 1x1 project; x + that when s = 1 and c_in = c_out."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.body = nn.Sequential(conv_bn(c_in, hidden),
                                  conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                  conv_bn(hidden, c_out, prelu=False))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) if self.residual else self.body(x)


#: MobileFaceNet's Table 1 bottleneck stages: (expansion t, channels c, repeats n, stride s)
MOBILEFACENET_STAGES = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2),
                        (2, 128, 2, 1))


class MobileFaceNet(EmbeddingNet):
    """MobileFaceNet, Table 1: conv3x3 s2 (64); depthwise conv3x3 (64); the bottleneck stages
    of MOBILEFACENET_STAGES (112 -> 56 -> 28 -> 14 -> 7); conv1x1 (512); linear GDConv (a
    depthwise conv over the whole 7x7 map, + BN); linear 1x1 embedding (no bias) + BN1d."""

    def __init__(self, *, embedding_size: int, in_channels: int, image_size: tuple[int, int],
                 embedding_bn: bool) -> None:
        h, w = image_size
        layers: list[nn.Module] = [conv_bn(in_channels, 64, 3, 2), conv_bn(64, 64, 3, groups=64)]
        h, w = (h + 1) // 2, (w + 1) // 2
        c = 64
        for t, width, n, s in MOBILEFACENET_STAGES:
            for i in range(n):
                layers.append(Bottleneck(c, width, s if i == 0 else 1, t))
                c = width
            if s == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
        layers.append(conv_bn(c, 512))
        # GDConv: one kxk filter per channel covering the whole final map (7x7 at 112x112)
        layers += [nn.Conv2d(512, 512, (h, w), groups=512, bias=False), nn.BatchNorm2d(512)]
        super().__init__(nn.Sequential(*layers), 512, embedding_size=embedding_size,
                         in_channels=in_channels, image_size=image_size,
                         embedding_bn=embedding_bn)
        self.fc = nn.Linear(512, embedding_size, bias=False)


# name -> (constructor, defaults: embedding_size, in_channels, image_size, embedding_bn)
_MODELS: dict[str, tuple[Callable[..., EmbeddingNet], dict]] = {
    "digits_net": (DigitsNet, dict(embedding_size=32, in_channels=1, image_size=(8, 8),
                                   embedding_bn=False)),
    "lsoftmax_mnist": (lambda **kw: LSoftmaxNet((64, 64, 64, 64), 3, **kw),
                       dict(embedding_size=256, in_channels=1, image_size=(28, 28),
                            embedding_bn=False)),
    "lsoftmax_cifar10": (lambda **kw: LSoftmaxNet((64, 64, 96, 128), 4, **kw),
                         dict(embedding_size=256, in_channels=3, image_size=(32, 32),
                              embedding_bn=False)),
    "lsoftmax_cifar100": (lambda **kw: LSoftmaxNet((96, 96, 192, 384), 4, **kw),
                          dict(embedding_size=512, in_channels=3, image_size=(32, 32),
                               embedding_bn=False)),
    "resnet20": (ResNet20, dict(embedding_size=64, in_channels=3, image_size=(32, 32),
                                embedding_bn=False)),
    "face_cnn": (FaceCNN, dict(embedding_size=128, in_channels=3, image_size=(112, 112),
                               embedding_bn=True)),
    **{name: ((lambda layers: lambda **kw: IResNet(layers, **kw))(layers),
              dict(embedding_size=512, in_channels=3, image_size=(112, 112), embedding_bn=True))
       for name, layers in IRESNET_LAYERS.items()},
    "mobilefacenet": (MobileFaceNet, dict(embedding_size=512, in_channels=3,
                                          image_size=(112, 112), embedding_bn=True)),
}


def available() -> list[str]:
    """Model names `build` knows."""
    return sorted(_MODELS)


def build(name: str, embedding_size: int | None = None, in_channels: int | None = None,
          image_size: int | tuple[int, int] | None = None,
          embedding_bn: bool | None = None) -> EmbeddingNet:
    """Build model `name`; arguments left None take the model's defaults (digits_net: 32, 1,
    8x8; lsoftmax_mnist: 256, 1, 28x28; lsoftmax_cifar10: 256, 3, 32x32; lsoftmax_cifar100:
    512, 3, 32x32; resnet20: 64, 3, 32x32; face_cnn: 128, 3, 112x112, BN on the embedding;
    iresnet* and mobilefacenet: 512, 3, 112x112, BN on the embedding)."""
    if name not in _MODELS:
        raise ValueError(f"model {name!r} is not known; allowed: {', '.join(available())}")
    ctor, defaults = _MODELS[name]
    embedding_size = defaults["embedding_size"] if embedding_size is None else embedding_size
    in_channels = defaults["in_channels"] if in_channels is None else in_channels
    size = _size(defaults["image_size"] if image_size is None else image_size)
    if not isinstance(embedding_size, int) or embedding_size < 1:
        raise ValueError(f"embedding_size must be a positive int; got {embedding_size!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int; got {in_channels!r}")
    bn = defaults["embedding_bn"] if embedding_bn is None else bool(embedding_bn)
    return ctor(embedding_size=embedding_size, in_channels=in_channels, image_size=size,
                embedding_bn=bn)
