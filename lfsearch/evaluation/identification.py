"""1:N identification with distractors, MegaFace-style rank-1 (docs/face_recognition.md
"1:N identification").

A gallery G of identity-labelled images (the first `gallery` images of each identity), probes
P (the other images of those identities) and distractors D (images of other people, in a
seeded random order). With n distractors the search set is G ∪ D[:n] and

    rank1@d=n = (1/|P|) Σ_{p ∈ P} [ argmax_{g ∈ G ∪ D[:n]} cos(e_p, e_g) ∈ G_{y_p} ]

(a probe whose nearest entry is a distractor, or another identity's gallery image, is a
miss; ties go to the first entry, gallery before distractors). `rank1` is the value with all
the distractors the split holds; rank1@d=0 is plain closed-gallery rank-1.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lfsearch.evaluation import metrics as metrics_mod


def rank1_with_distractors(probes: Tensor, probe_labels: Tensor, gallery: Tensor,
                           gallery_labels: Tensor, distractors: Tensor,
                           counts: Iterable[int] = (), chunk: int = 4096) -> dict[str, float]:
    """{rank1@d=n for n in (0, *counts), rank1 (all distractors)} from embeddings (the
    module docstring's formula); distractors are scanned in chunks, so a million of them
    cost O(|P|·chunk) memory."""
    p = F.normalize(probes.float(), dim=1)
    g = F.normalize(gallery.float(), dim=1)
    d = F.normalize(distractors.float(), dim=1) if distractors.shape[0] else distractors.float()
    if p.shape[0] == 0 or g.shape[0] == 0:
        raise ValueError("identification needs probes and a gallery")
    sim_g = p @ g.T
    best_g, arg = sim_g.max(1)
    hit = gallery_labels.to(arg.device)[arg] == probe_labels.to(arg.device)
    m = int(d.shape[0])
    wanted = sorted({0, *(int(c) for c in counts), m})
    out: dict[str, float] = {}
    # best distractor score among D[:n] for each wanted n, by a running maximum over chunks
    running = torch.full_like(best_g, float("-inf"))
    start = 0
    for n in wanted:
        while start < n:
            stop = min(n, start + chunk)
            running = torch.maximum(running, (p @ d[start:stop].T).max(1).values)
            start = stop
        out[f"rank1@d={n}"] = float((hit & (best_g >= running)).float().mean())
    out["rank1"] = out[f"rank1@d={m}"]
    out["probes"], out["gallery"], out["distractors"] = float(p.shape[0]), float(g.shape[0]), \
        float(m)
    return out


def evaluate_identification(model: nn.Module, split: Any, *, flip: bool = True,
                            batch_size: int = 256) -> dict[str, float]:
    """rank1 (and rank1@d=n at the split's distractor counts) of `model` on an
    IdentificationSplit."""
    norm = getattr(split, "normalise", None)
    e = metrics_mod.embed(model, split.images, batch_size, flip, norm)
    d = (metrics_mod.embed(model, split.distractors, batch_size, flip, norm)
         if split.distractors.shape[0] else e.new_empty((0, e.shape[1])))
    gal = split.gallery.to(e.device).bool()
    labels = split.labels.to(e.device)
    probes = ~gal & torch.isin(labels, labels[gal])
    return rank1_with_distractors(e[probes], labels[probes], e[gal], labels[gal], d,
                                  split.counts)
