"""The unified family of margin-based softmax losses and the joint-supervision terms.

    from lfsearch import losses
    loss = losses.build("arcface", num_classes=10_000, embedding_size=512, m=0.5)
    found = losses.from_discovered("runs/X/discovered.toml", num_classes=C, embedding_size=D)
    found.set_epoch(e)  # epoch e's parameters of the search's schedule

Modules, bottom up: ``margins`` (the margin math, pure functions on tensors), ``base`` (the
``Loss`` interface, input checks, the fused margin cross entropy, the normalised head),
``fixed_margins`` (softmax ... combined margin, L-Softmax, SphereFace), ``modulated``
(Search-Softmax's h(a, p)), ``am_lfs`` (AM-LFS's piecewise-linear family), ``target_logit``
(the head that replaces the target logit per sample), ``adaptive_margins`` (AdaFace, MagFace,
ElasticFace, AdaCos), ``negative_reweighting`` (CurricularFace, MV-Softmax), ``subcenters``
(Sub-center ArcFace), ``joint`` (center, range, contrastive, triplet and their sum with a
head), ``registry`` (names -> classes, ``build``) and ``discovered`` (a search's result as a
loss with its schedule). The math: docs/math.md; in one's own loop: docs/library.md.
"""

from lfsearch.losses.adaptive_margins import (
    AdaCos,
    AdaFace,
    ElasticFaceArc,
    ElasticFaceArcPlus,
    ElasticFaceCos,
    ElasticFaceCosPlus,
    MagFace,
)
from lfsearch.losses.am_lfs import AMLFS
from lfsearch.losses.base import Loss
from lfsearch.losses.discovered import from_discovered
from lfsearch.losses.fixed_margins import (
    ArcFace,
    CombinedMargin,
    CosFace,
    L2Softmax,
    LSoftmax,
    NormFace,
    Softmax,
    SphereFace,
    WeightedSoftmax,
)
from lfsearch.losses.joint import CenterLoss, ContrastiveLoss, Joint, RangeLoss, TripletLoss
from lfsearch.losses.modulated import Modulated
from lfsearch.losses.negative_reweighting import CurricularFace, MVSoftmax
from lfsearch.losses.registry import (
    AUX_NAMES,
    MEMBERS,
                                              available,
                                              build,
                                              describe,
                                              describe_table,
                                              modulation_table,
)
from lfsearch.losses.subcenters import SubCenterArcFace

__all__ = [
    "Loss", "build", "from_discovered", "available", "describe", "describe_table", "AUX_NAMES",
    "MEMBERS",
    "modulation_table", "Joint", "Softmax", "WeightedSoftmax", "LSoftmax", "SphereFace",
    "L2Softmax", "NormFace", "CosFace", "ArcFace", "CombinedMargin", "Modulated", "AMLFS",
    "CenterLoss", "RangeLoss", "ContrastiveLoss", "TripletLoss", "AdaFace", "MagFace",
    "ElasticFaceArc", "ElasticFaceCos", "ElasticFaceArcPlus", "ElasticFaceCosPlus",
    "CurricularFace", "MVSoftmax", "SubCenterArcFace", "AdaCos",
]
