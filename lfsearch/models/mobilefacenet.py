"""MobileFaceNet (Chen et al., CCBR 2018, Table 1): inverted-residual bottlenecks with PReLU,
a global depthwise conv and a linear 1×1 embedding.
"""

from __future__ import annotations

from torch import Tensor, nn

from lfsearch.models.base import EmbeddingNet


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
