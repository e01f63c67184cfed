"""The noise of each test metric in a compare folder: seed-to-seed std against a bootstrap over
the test identities (issue 19: keep the metric with the best signal-to-noise).

    python benchmarks/metric_noise.py runs/cmp [--replicates 200] [--out noise.csv]

For every complete run (its checkpoint.pt: the tested weights, loaded with weights_only=True
where the file allows) the test split is embedded once (with the run's test flip), then:

  seed std       per benchmark, method and metric: the sample std (ddof 1) over seeds of the
                 run's test metric (results.json): training noise and split noise together.
  bootstrap std  per run: the std over B replicates of the metric recomputed on a resample of
                 the test IDENTITIES with replacement (multiplicity w_c of identity c), the
                 mean over the method's runs. Each image pair counts w_c times when genuine
                 (both of identity c) and w_c·w_c' times when impostor (c ≠ c'); pairs between
                 two copies of one identity are left out. Weighted, with W_I the impostor
                 weight: tar@far=f_all = Σ_genuine w·[s > t] / Σ_genuine w, t the impostor score
                 where the cumulative weight (descending) first exceeds floor(f·W_I);
                 verification_accuracy: the split's pairs repeated by their weights, LFW's
                 10-fold protocol; rank1: the gallery of the drawn identities, each probe
                 weighted w_c.
  ratio          seed std / bootstrap std: near 1, most of the seed-to-seed spread is the
                 test split's own sampling noise.

Only the open-set splits with identity labels are bootstrapped (digits, *-open, folder, rec).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lfsearch import data
from lfsearch.evaluation import metrics as metrics_mod
from lfsearch.experiments import run_plan
from lfsearch.experiments.evaluate_run import load_run_model

METRICS = ("verification_accuracy", "tar@far=1e-3_all", "tar@far=1e-4_all", "rank1")


def _weighted_tar(gen: np.ndarray, gen_w: np.ndarray, imp: np.ndarray, imp_w: np.ndarray,
                  far: float) -> float:
    total = float(imp_w.sum())
    k = math.floor(far * total + 1e-9)
    if k < 1 or gen_w.sum() == 0:
        return math.nan
    order = np.argsort(-imp, kind="stable")
    cum = np.cumsum(imp_w[order])
    j = int(np.searchsorted(cum, k, side="right"))  # first index with cumulative weight > k
    threshold = imp[order][j] if j < len(order) else -math.inf
    return float(gen_w[gen > threshold].sum() / gen_w.sum())


class SplitScores:
    """One run's test split embedded once: every score the bootstrap needs."""

    def __init__(self, e: torch.Tensor, split: data.VerificationSplit):
        raw, e = e, F.normalize(e.float(), dim=1)  # float32 scores, as evaluation.metrics
        labels = split.labels.cpu().numpy()
        self.ids, self.label_index = np.unique(labels, return_inverse=True)
        i, j = torch.triu_indices(len(labels), len(labels), 1)
        s = (e @ e.T)[i, j].double().numpy()
        li, lj = self.label_index[i.numpy()], self.label_index[j.numpy()]
        same = li == lj
        self.gen, self.gen_id = s[same], li[same]
        self.imp, self.imp_a, self.imp_b = s[~same], li[~same], lj[~same]
        pairs = split.pairs.cpu().numpy()
        self.pair_scores = metrics_mod.pair_scores(raw, split.pairs).double().numpy()
        self.pair_same = split.same.cpu().numpy().astype(bool)
        self.pair_folds = split.folds.cpu().numpy()
        self.pair_a = self.label_index[pairs[:, 0]]
        self.pair_b = self.label_index[pairs[:, 1]]
        first: dict[int, int] = {}
        for n, c in enumerate(self.label_index.tolist()):
            first.setdefault(c, n)
        gallery = np.zeros(len(labels), bool)
        gallery[list(first.values())] = True
        self.g_id = self.label_index[gallery]
        self.p_id = self.label_index[~gallery]
        self.sim = (e[torch.from_numpy(~gallery)] @ e[torch.from_numpy(gallery)].T).double().numpy()

    def metrics(self, w: np.ndarray) -> dict[str, float]:
        """Every metric with identity multiplicities w (all ones: the split itself)."""
        out = {}
        gw, iw = w[self.gen_id], w[self.imp_a] * w[self.imp_b]
        for far in (1e-3, 1e-4):
            out[metrics_mod.all_pairs_key(far)] = _weighted_tar(self.gen, gw, self.imp, iw, far)
        pw = np.where(self.pair_same, w[self.pair_a], w[self.pair_a] * w[self.pair_b])
        idx = np.repeat(np.arange(self.pair_scores.size), pw.astype(np.int64))
        try:
            out["verification_accuracy"] = metrics_mod.verification_metrics(
                self.pair_scores[idx], self.pair_same[idx], self.pair_folds[idx],
                far_targets=())["verification_accuracy"]
        except ValueError:
            out["verification_accuracy"] = math.nan
        cols = w[self.g_id] > 0
        probe_w = w[self.p_id] * (w[self.p_id] > 0)
        if cols.any() and probe_w.sum() > 0:
            nearest = self.g_id[cols][self.sim[:, cols].argmax(1)]
            out["rank1"] = float(((nearest == self.p_id) * probe_w).sum() / probe_w.sum())
        else:
            out["rank1"] = math.nan
        return out


def bootstrap(scores: SplitScores, replicates: int, seed: int) -> dict[str, float]:
    """Std (ddof 1) over replicates of each metric on resampled identities."""
    rng = np.random.default_rng(seed)
    n = len(scores.ids)
    rows = [scores.metrics(np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64))
            for _ in range(replicates)]
    frame = pd.DataFrame(rows)
    return {m: float(frame[m].dropna().std(ddof=1)) if frame[m].notna().sum() >= 2 else math.nan
            for m in frame}


def run_noise(run_dir: Path, replicates: int) -> dict[str, float] | None:
    run = load_run_model(run_dir)
    cfg = run.config
    bench = data.load(cfg["training"]["benchmark"], seed=cfg["run"]["seed"])
    split = bench.test
    if not isinstance(split, data.VerificationSplit) or split.labels is None:
        return None
    e = metrics_mod.embed(run.model, split.images, flip=bench.flip, normalise=split.normalise)
    return bootstrap(SplitScores(e, split), replicates, seed=int(cfg["run"]["seed"]))


def noise_table(folder: Path, replicates: int = 200) -> pd.DataFrame:
    runs = run_plan.collect_runs(run_plan.find_run_dirs(folder))
    runs = runs[runs["status"] == "complete"]
    boot = {}
    for r in runs.itertuples():
        print(f"bootstrapping {r.run_dir}", file=sys.stderr)
        boot[r.run_dir] = run_noise(Path(r.run_dir), replicates)
    rows = []
    for (bench, method), g in runs.groupby(["benchmark", "method"], sort=False):
        for m in METRICS:
            col = f"test/{m}"
            values = g[col].astype(float).dropna() if col in g else pd.Series(dtype=float)
            b = [boot[d][m] for d in g["run_dir"] if boot.get(d) and math.isfinite(boot[d][m])]
            seed_std = float(values.std(ddof=1)) if len(values) >= 2 else math.nan
            boot_std = float(np.mean(b)) if b else math.nan
            rows.append({"benchmark": bench, "method": method, "metric": m,
                         "n": len(values), "mean": float(values.mean()) if len(values)
                         else math.nan, "seed_std": seed_std, "bootstrap_std": boot_std,
                         "ratio": seed_std / boot_std if boot_std and math.isfinite(boot_std)
                         else math.nan})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.replicates < 2:
        parser.error("--replicates must be >= 2")
    table = noise_table(args.folder, args.replicates)
    if args.out:
        from lfsearch.search.config import atomic_write_text

        atomic_write_text(args.out, table.to_csv(index=False))
    try:
        print(table.to_markdown(index=False, floatfmt=".4f"))
    except ImportError:  # pandas' to_markdown needs tabulate
        print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
