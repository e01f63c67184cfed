"""He et al. 2016's CIFAR ResNet-20 (AM-LFS's CIFAR backbone), with option-A shortcuts."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lfsearch.models.base import EmbeddingNet


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
