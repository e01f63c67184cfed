"""Small CNNs: digits_net (8×8 digits), the L-Softmax paper's MNIST/CIFAR nets and face_cnn
(inputs up to 112×112); models/base.py has the table of every backbone.
"""

from __future__ import annotations

from torch import Tensor, nn

from lfsearch.models.base import EmbeddingNet, conv_bn_prelu


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
