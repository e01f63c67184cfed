"""Backbones: image (N, C, H, W) -> embedding (N, D), one module per family, and the registry.

``base`` (``EmbeddingNet``: the trunk, a linear embedding and an optional BatchNorm),
``small_cnns`` (digits_net, the L-Softmax paper's nets, face_cnn), ``resnet`` (resnet20),
``iresnet`` (insightface's IResNet-18/34/50/100), ``mobilefacenet``. ``build(name, ...)`` below.
"""

from __future__ import annotations

from typing import Callable

from lfsearch.models.base import EmbeddingNet, _size
from lfsearch.models.iresnet import IRESNET_LAYERS, IResNet
from lfsearch.models.mobilefacenet import MobileFaceNet
from lfsearch.models.resnet import ResNet20
from lfsearch.models.small_cnns import DigitsNet, FaceCNN, LSoftmaxNet

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
