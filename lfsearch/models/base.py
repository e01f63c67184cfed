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

import torch
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
