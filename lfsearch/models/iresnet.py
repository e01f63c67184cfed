"""insightface's "improved" ResNets, IResNet-18/34/50/100 (IBasicBlock: BN, conv, BN, PReLU,
conv, BN, plus the shortcut), with the E output layer (BN, dropout, fc, BN).
"""

from __future__ import annotations

from torch import Tensor, nn

from lfsearch.models.base import EmbeddingNet


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
