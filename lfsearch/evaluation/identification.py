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

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lfsearch.evaluation import metrics as metrics_mod

DistractorFeatures = Callable[[int, int], Tensor]


def rank1_with_distractors(probes: Tensor, probe_labels: Tensor, gallery: Tensor,
                           gallery_labels: Tensor, distractors: Tensor | DistractorFeatures,
                           counts: Iterable[int] = (), chunk: int = 4096,
                           total: int | None = None) -> dict[str, float]:
    """{rank1@d=n for n in (0, *counts), rank1 (all distractors)} from embeddings (the
    module docstring's formula). `distractors`: their embeddings (M, D), or a function
    (start, stop) -> the embeddings of distractors start..stop-1 with `total` = M, called for
    consecutive ranges of `chunk`; either way they are scanned in chunks, so a million of
    them cost O(|P|·chunk) memory."""
    p = F.normalize(probes.float(), dim=1)
    g = F.normalize(gallery.float(), dim=1)
    if p.shape[0] == 0 or g.shape[0] == 0:
        raise ValueError("identification needs probes and a gallery")
    if isinstance(distractors, Tensor):
        table = distractors
        m = int(table.shape[0])

        def read(start: int, stop: int) -> Tensor:
            return table[start:stop]
    elif total is None:
        raise ValueError("rank1_with_distractors: give total (M) with a distractor function")
    else:
        read, m = distractors, int(total)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    sim_g = p @ g.T
    best_g, arg = sim_g.max(1)
    hit = gallery_labels.to(arg.device)[arg] == probe_labels.to(arg.device)
    wanted = sorted({0, *(int(c) for c in counts), m})
    if wanted[0] < 0 or wanted[-1] > m:
        raise ValueError(f"distractor counts must lie in [0, {m}]; got {tuple(counts)}")
    out: dict[str, float] = {}
    # best distractor score among D[:n] for each wanted n, by a running maximum over chunks
    running = torch.full_like(best_g, float("-inf"))
    out["rank1@d=0"] = float(hit.float().mean())
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        d = read(start, stop).float().to(p.device)
        d = F.normalize(d, dim=1)
        cuts = [start, *(n for n in wanted if start < n < stop), stop]
        for lo, hi in itertools.pairwise(cuts):
            running = torch.maximum(running, (p @ d[lo - start:hi - start].T).max(1).values)
            if hi in wanted:
                out[f"rank1@d={hi}"] = float((hit & (best_g >= running)).float().mean())
    out["rank1"] = out[f"rank1@d={m}"]
    out["probes"], out["gallery"], out["distractors"] = float(p.shape[0]), float(g.shape[0]), \
        float(m)
    return out


def evaluate_identification(model: nn.Module, split: Any, *, flip: bool = True,
                            batch_size: int = 256, chunk: int | None = 4096,
                            screen: Callable[[Tensor], None] | None = None
                            ) -> dict[str, float]:
    """rank1 (and rank1@d=n at the split's distractor counts) of `model` on an
    IdentificationSplit. The distractors (a tensor or LazyImages) are read, embedded and
    scanned `chunk` at a time (rounded down to whole batches; None: all at once): memory is
    one chunk of images and |P| x chunk scores, never all distractors or their features.
    `screen(images)`, when given, sees the probe and gallery images and each distractor chunk
    first (heldout's overlap check raises)."""
    norm = getattr(split, "normalise", None)
    if screen is not None:
        screen(split.images)
    e = metrics_mod.embed(model, split.images, batch_size, flip, norm)
    m = int(split.distractors.shape[0])

    def distractor_features(start: int, stop: int) -> Tensor:
        images = split.distractors[start:stop]
        if screen is not None:
            screen(images)
        return metrics_mod.embed(model, images, batch_size, flip, norm)

    gal = split.gallery.to(e.device).bool()
    labels = split.labels.to(e.device)
    probes = ~gal & torch.isin(labels, labels[gal])
    return rank1_with_distractors(e[probes], labels[probes], e[gal], labels[gal],
                                  distractor_features, split.counts,
                                  chunk=metrics_mod.chunk_rows(chunk, batch_size, m), total=m)
