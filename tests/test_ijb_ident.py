"""IJB-B/C template verification (lfsearch/evaluation/ijb.py, data/ijb.py) and 1:N
identification with distractors (evaluation/identification.py, data/ident.py): tiny sets in
insightface's layout built here, values worked out by hand in the comments; then both as
[test] benchmarks of a search and in `lfsearch evaluate`, against an independent numpy
computation of the protocol."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from heldout_data import digit_images
from PIL import Image

from lfsearch import data, models
from lfsearch.cli import main as cli_main
from lfsearch.data import alignment
from lfsearch.data.lazy import LazyImages
from lfsearch.evaluation import identification, ijb
from lfsearch.report import writer
from lfsearch.search import config as config_mod
from lfsearch.search import search


class Colour(torch.nn.Module):
    """Embedding = the mean pixel colour (x in [-1, 1] back to 0..255): solid images of colour
    (r, g, b) embed as (r, g, b); with flip, 2·(r, g, b)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return (x.mean((2, 3)) + 1.0) * 127.5 + 0 * self.dummy


def solid(path: Path, rgb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), rgb, np.uint8)).save(path)


# image name, colour, template, media, detector score
IJB_IMAGES = [("1.png", (200, 0, 0), 1, 1, 1.0), ("2.png", (0, 200, 0), 1, 1, 0.5),
              ("3.png", (0, 0, 150), 1, 2, 1.0), ("4.png", (80, 60, 0), 2, 3, 1.0),
              ("5.png", (0, 100, 100), 3, 4, 1.0), ("6.png", (0, 100, 100), 3, 5, 0.25),
              ("7.png", (100, 0, 0), 4, 6, 1.0), ("8.png", (0, 0, 100), 5, 7, 1.0),
              ("9.png", (0, 100, 0), 6, 8, 1.0)]
IDENTITY = {1: "A", 2: "A", 3: "A", 4: "B", 5: "B", 6: "C"}


def write_ijb(root: Path, images=IJB_IMAGES, prefix="ijbc", identity=IDENTITY) -> None:
    (root / "meta").mkdir(parents=True)
    tid, pts = [], []
    for name, rgb, t, m, score in images:
        solid(root / "loose_crop" / name, rgb) if rgb is not None else None
        tid.append(f"{name} {t} {m}")
        pts.append(" ".join([name, *["38.5"] * 10, str(score)]))
    ts = sorted(identity)
    pairs = [f"{a} {b} {int(identity[a] == identity[b])}"
             for i, a in enumerate(ts) for b in ts[i + 1:]]
    (root / "meta" / f"{prefix}_face_tid_mid.txt").write_text("\n".join(tid) + "\n")
    (root / "meta" / f"{prefix}_name_5pts_score.txt").write_text("\n".join(pts) + "\n")
    (root / "meta" / f"{prefix}_template_pair_label.txt").write_text("\n".join(pairs) + "\n")


def test_ijb_template_features_and_tar_match_the_hand_worked_example(tmp_path):
    write_ijb(tmp_path / "IJBC")
    bench = data.load(f"ijb:{tmp_path / 'IJBC'}?align=no")  # solid 4x4 crops
    split = bench.test
    assert split.protocol == "templates" and bench.train is None and split.images.shape[0] == 9
    # By hand (flip doubles every embedding; scores weight it; media mean; template sum):
    # T1: media 1 = mean(2(200,0,0)·1, 2(0,200,0)·0.5) = (200,100,0); media 2 = (0,0,300);
    #     g1 = (200,100,300)/|.| = (2,1,3)/√14.      T2: g2 = (0.8, 0.6, 0).
    # T3: 2(0,100,100)·1 and 2(0,100,100)·0.25 in two media: (0,250,250) -> (0,1,1)/√2.
    # T4..T6: (1,0,0), (0,0,1), (0,1,0).
    ids, feats = ijb.template_features(
        ijb.metrics_mod.embed(Colour(), split.images, flip=True, normalise=split.normalise),
        split.templates, split.media, split.scores)
    r14, r2 = math.sqrt(14), math.sqrt(2)
    want = torch.tensor([[2 / r14, 1 / r14, 3 / r14], [0.8, 0.6, 0], [0, 1 / r2, 1 / r2],
                         [1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.float64)
    assert ids.tolist() == [1, 2, 3, 4, 5, 6]
    assert torch.allclose(feats, want, atol=1e-9)
    # Pair scores: positives (1,2) 2.2/√14 = .588, (1,3) 4/√28 = .756, (2,3) .6/√2 = .424,
    # (4,5) 0; negatives .802 (1,5), .8 (2,4), .707 (3,5), .707 (3,6), .6 (2,6), .535 (1,4),
    # .267 (1,6) and four 0s: 11 negatives.
    # FAR 0.1 allows 1 negative (1/11): threshold above .8 accepts no positive -> TAR 0;
    # FAR 0.3 allows 3 (0 < 2/11 <= .3 < 4/11): above .7071 -> only .756 -> TAR 1/4;
    # FAR 0.5 allows 5: threshold .588 -> .756 and .588 -> TAR 1/2 at threshold 2.2/√14.
    out, roc = ijb.evaluate_templates(Colour(), split, far_targets=(0.1, 0.3, 0.5), roc=True)
    assert out["tar@far=1e-1"] == 0.0
    assert out["tar@far=3e-1"] == pytest.approx(0.25)
    assert out["tar@far=5e-1"] == pytest.approx(0.5)
    assert out["threshold@far=5e-1"] == pytest.approx(2.2 / r14)
    # AUC = P(positive > negative) + ½P(tie): (9 + 6 + 5 + ½·4) / 44 = 0.5
    assert out["roc_auc"] == pytest.approx(0.5)
    assert (out["pairs"], out["negative_pairs"], out["templates"]) == (15, 11, 6)
    assert roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    # default FARs: 1e-6 .. 1e-2 need 100+ negatives -> NaN; 1e-1 is measured
    full = ijb.evaluate_templates(Colour(), split)
    assert all(math.isnan(full[f"tar@far=1e-{k}"]) for k in (6, 5, 4, 3, 2))
    assert full["tar@far=1e-1"] == 0.0


def test_ijb_without_norm_and_detector_scores_averages_unit_features():
    # T1 of the example with unit features and no detector score: media 1 = mean((1,0,0),
    # (0,1,0)) = (.5,.5,0), media 2 = (0,0,1); g1 = (.5,.5,1)/√1.5
    f = torch.tensor([[200.0, 0, 0], [0, 100, 0], [0, 0, 300]])
    _, g = ijb.template_features(f, torch.tensor([1, 1, 1]), torch.tensor([1, 1, 2]),
                                 None, norm_score=False)
    assert torch.allclose(g[0], torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)
                          / math.sqrt(1.5))
    # keeping the norm (insightface's default), the larger features weigh more
    _, g = ijb.template_features(f, torch.tensor([1, 1, 1]), torch.tensor([1, 1, 2]))
    assert torch.allclose(g[0], torch.tensor([100.0, 50, 300], dtype=torch.float64)
                          / math.sqrt(100 ** 2 + 50 ** 2 + 300 ** 2))


def test_ijb_loader_refuses_bad_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="ijb_face_tid_mid|IJB layout"):
        data.load(f"ijb:{tmp_path}")
    write_ijb(tmp_path / "a")
    (tmp_path / "a" / "meta" / "ijbc_template_pair_label.txt").write_text("1 99 1\n")
    with pytest.raises(ValueError, match="template 99 has no image"):
        data.load(f"ijb:{tmp_path / 'a'}")
    write_ijb(tmp_path / "b")
    with pytest.raises(ValueError, match="target='x': allowed values ijbb, ijbc"):
        data.load(f"ijb:{tmp_path / 'b'}?target=x")
    write_ijb(tmp_path / "c", prefix="ijbb")
    assert data.load(f"ijb:{tmp_path / 'c'}?target=ijbb&align=no").test.pairs.shape == (15, 2)


def write_ident(root: Path) -> None:
    for name, rgb in [("A/1.png", (200, 0, 0)), ("A/2.png", (200, 40, 0)),
                      ("B/1.png", (0, 200, 0)), ("B/2.png", (0, 200, 60)),
                      ("C/1.png", (0, 0, 200)), ("C/2.png", (100, 0, 120))]:
        solid(root / "people" / name, rgb)
    for name, rgb in [("d1.png", (210, 20, 0)), ("sub/d2.png", (0, 10, 200)),
                      ("sub/d3.png", (0, 210, 70))]:
        solid(root / "distractors" / name, rgb)


def test_identification_rank1_with_distractors_matches_the_hand_worked_example(tmp_path):
    write_ident(tmp_path)
    spec = (f"ident:{tmp_path / 'people'}?distractors={tmp_path / 'distractors'}"
            "&distractor_counts=1,2,3")
    split = data.load(spec, seed=0).test
    assert split.gallery.tolist() == [True, False] * 3 and split.counts == (1, 2, 3)
    # Without distractors each probe finds its own gallery image: A2 (cos .981 to A1),
    # B2 (.958 to B1), C2 = (100,0,120): .768 to C1 against .640 to A1.
    # d1 (210,20,0) is nearer A2 (.995) than A1 is; d3 (0,210,70) nearer B2 (.9996 > .958);
    # d2 (0,10,200) is .767 from C2, below C1's .768: it steals nothing.
    out = identification.evaluate_identification(Colour(), split)
    order = np.random.default_rng(0).permutation(3)  # the seeded order of [d1, d2, d3]
    stealers = np.isin(order, [0, 2])
    assert out["rank1@d=0"] == 1.0
    for n in (1, 2, 3):
        assert out[f"rank1@d={n}"] == pytest.approx(1 - stealers[:n].sum() / 3)
    assert out["rank1"] == pytest.approx(1 / 3)
    assert (out["probes"], out["gallery"], out["distractors"]) == (3, 3, 3)


def test_rank1_with_distractors_in_chunks_and_ties_to_the_gallery():
    probes = torch.tensor([[1.0, 0], [0, 1]])
    gallery = torch.tensor([[1.0, 0.1], [0.1, 1]])
    labels = torch.tensor([0, 1])
    # gallery cosines .995 each; distractor 0 (.5,.5) is .707 from both probes: no steal;
    # distractor 1 (1, .1) ties probe 0's gallery image: the gallery keeps the tie;
    # distractor 2 (0, 1) is probe 1 itself (cos 1 > .995): probe 1 is lost
    d = torch.tensor([[0.5, 0.5], [1.0, 0.1], [0.0, 1.0]])
    out = identification.rank1_with_distractors(probes, labels, gallery, labels, d,
                                                (1, 2), chunk=1)
    assert (out["rank1@d=0"], out["rank1@d=1"], out["rank1@d=2"], out["rank1@d=3"]) == \
        (1.0, 1.0, 1.0, 0.5)


def test_ident_refuses_bad_options(tmp_path):
    write_ident(tmp_path)
    people = tmp_path / "people"
    with pytest.raises(ValueError, match="distractor_counts='x'"):
        data.load(f"ident:{people}?distractors={tmp_path / 'distractors'}&distractor_counts=x")
    with pytest.raises(ValueError, match="4 is more than the 3 distractors"):
        data.load(f"ident:{people}?distractors={tmp_path / 'distractors'}&distractor_counts=4")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(f"ident:{people}?distractors={tmp_path / 'none'}")
    with pytest.raises(ValueError, match="no probe"):
        data.load(f"ident:{people}?gallery=2")


# ------------------------------------------------------------- [test] and lfsearch evaluate
def write_digit_sets(root: Path) -> None:
    """An IJB set and an identification set of digits 6-9 (8x8 grey, unseen by digits)."""
    images, labels = digit_images()
    rows, ident = [], {}
    (root / "ijb" / "meta").mkdir(parents=True)
    t = 0
    for digit in (6, 7, 8, 9):
        idx = np.flatnonzero(labels == digit)
        for k in range(3):  # 3 templates per digit, 2 media of 1-2 images each
            t += 1
            ident[t] = digit
            for j, (m, score) in enumerate([(2 * t, 0.9), (2 * t, 0.6), (2 * t + 1, 1.0)]):
                name = f"{t}_{j}.png"
                Image.fromarray(images[idx[3 * k + j]]).save(root / "ijb" / "meta" / ".." / name)
                rows.append((name, t, m, score))
    (root / "ijb" / "loose_crop").mkdir()
    for name, *_ in rows:
        (root / "ijb" / name).rename(root / "ijb" / "loose_crop" / name)
    meta = root / "ijb" / "meta"
    (meta / "ijbb_face_tid_mid.txt").write_text("".join(f"{n} {t} {m}\n" for n, t, m, _ in rows))
    (meta / "ijbb_name_5pts_score.txt").write_text(
        "".join(f"{n} {' '.join(['1'] * 10)} {s}\n" for n, _, _, s in rows))
    ts = sorted(ident)
    (meta / "ijbb_template_pair_label.txt").write_text("".join(
        f"{a} {b} {int(ident[a] == ident[b])}\n" for i, a in enumerate(ts) for b in ts[i + 1:]))
    for digit in (6, 7, 8, 9):
        for j, k in enumerate(np.flatnonzero(labels == digit)[40:43]):
            (root / "people" / str(digit)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[k]).save(root / "people" / str(digit) / f"{j}.png")
    (root / "distractors").mkdir()
    for j, k in enumerate(np.flatnonzero(labels == 6)[60:75]):
        Image.fromarray(images[k]).save(root / "distractors" / f"{j:02d}.png")


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("sets")
    write_digit_sets(root)
    return {"ijb": f"ijb:{root / 'ijb'}?channels=1&size=8x8&align=no",
            "ident": f"ident:{root / 'people'}?channels=1&size=8x8&distractors="
                     f"{root / 'distractors'}&distractor_counts=5,15",
            "root": str(root)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, sets) -> Path:
    out = tmp_path_factory.mktemp("run") / "softmax"
    search("softmax", epochs=1, seed=2, device="cpu", out=out,
           test_benchmarks=[sets["ijb"], sets["ident"]])
    return out


def _by_hand(run_dir: Path, root: Path):
    """The checkpoint's model and its flip-added embeddings (insightface's protocol)."""
    cfg = config_mod.load(run_dir / "config.toml")
    model = models.build("digits_net", embedding_size=cfg["training"]["embedding_size"],
                         in_channels=1, image_size=(8, 8))
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False)
                          ["state"]["model"])
    model.eval()

    def embed(paths):
        x = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in paths])).float()
        x = x[:, None] / 127.5 - 1
        with torch.no_grad():
            return (model(x) + model(x.flip(-1))).double().numpy()
    return embed


def test_ijb_and_identification_as_test_benchmarks_and_in_evaluate(run_dir, sets, tmp_path,
                                                                   capsys):
    root = Path(sets["root"])
    results = json.loads((run_dir / "results.json").read_text())["test_benchmarks"]
    assert results[sets["ijb"]]["metric"] == "tar@far=1e-4"
    assert results[sets["ident"]]["metric"] == "rank1"
    embed = _by_hand(run_dir, root)
    # IJB by hand: v = score·e, media means, template sums, cosines
    rows = [ln.split() for ln in (root / "ijb/meta/ijbb_face_tid_mid.txt").read_text().splitlines()]
    score = {ln.split()[0]: float(ln.split()[-1]) for ln in
             (root / "ijb/meta/ijbb_name_5pts_score.txt").read_text().splitlines()}
    e = embed([root / "ijb/loose_crop" / r[0] for r in rows])
    templates = {}
    for (name, t, m), v in zip(rows, e):
        templates.setdefault(int(t), {}).setdefault(int(m), []).append(score[name] * v)
    g = {t: sum(np.mean(vs, 0) for vs in media.values()) for t, media in templates.items()}
    g = {t: v / np.linalg.norm(v) for t, v in g.items()}
    pairs = [ln.split() for ln in
             (root / "ijb/meta/ijbb_template_pair_label.txt").read_text().splitlines()]
    s = np.array([g[int(a)] @ g[int(b)] for a, b, _ in pairs])
    y = np.array([lab == "1" for _, _, lab in pairs])
    neg = np.sort(s[~y])[::-1]
    # TAR at FAR 0.1 = share of positives above the (k+1)-th best negative, k = ⌊0.1·n_neg⌋
    k = int(np.floor(0.1 * len(neg) + 1e-9))
    tar = float((s[y] > neg[k]).mean())
    got = results[sets["ijb"]]["metrics"]
    assert got["tar@far=1e-1"] == pytest.approx(tar)
    assert got["tar@far=1e-4"] is None  # 54 negatives cannot measure FAR 1e-4
    # identification by hand: gallery = first image per digit, distractors in seeded order
    people = sorted((root / "people").glob("*/*.png"))
    ep = embed(people)
    ep /= np.linalg.norm(ep, axis=1, keepdims=True)
    lab = np.array([p.parent.name for p in people])
    gal = np.array([p.name == "0.png" for p in people])
    dist = sorted((root / "distractors").glob("*.png"))
    order = np.random.default_rng(2).permutation(len(dist))
    ed = embed([dist[i] for i in order])
    ed /= np.linalg.norm(ed, axis=1, keepdims=True)
    for n in (0, 5, 15):
        cand = np.concatenate([ep[gal], ed[:n]])
        cand_lab = np.concatenate([lab[gal], ["-"] * n])
        nearest = (ep[~gal] @ cand.T).argmax(1)
        want = float((cand_lab[nearest] == lab[~gal]).mean())
        assert results[sets["ident"]]["metrics"][f"rank1@d={n}"] == pytest.approx(want), n
    # lfsearch evaluate gives the same, prints one line each and writes the JSON
    target = tmp_path / "eval.json"
    assert cli_main(["evaluate", str(run_dir), "--benchmark", sets["ijb"], "--benchmark",
                     sets["ident"], "--out", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "tar@far=1e-4 = n/a, roc_auc = " in printed and "rank1@d=15 = " in printed
    written = json.loads(target.read_text())["benchmarks"]
    for spec in (sets["ijb"], sets["ident"]):
        assert written[spec]["metrics"] == pytest.approx(results[spec]["metrics"], nan_ok=True)
    # and the run report's table shows them
    table = writer.test_benchmarks_table(results)
    assert sorted(table["metric"]) == ["rank1", "tar@far=1e-4"]
    assert "rank1" in table.columns


def test_evaluate_refuses_a_bad_identification_spec(run_dir, sets, capsys):
    bad = sets["ident"].replace("distractor_counts=5,15", "distractor_counts=-1")
    assert cli_main(["evaluate", str(run_dir), "--benchmark", bad]) == 2
    assert "distractor_counts='-1'" in capsys.readouterr().err


def test_distractors_may_not_be_the_training_data_and_ijb_is_no_validation_set(tmp_path,
                                                                               sets):
    train = "folder:tests/data/orl_faces_subset"
    with pytest.raises(ValueError, match="reads the same data as training.benchmark"):
        config_mod.check_test_disjoint(
            [f"ident:{sets['root']}/people?distractors=tests/data/orl_faces_subset"], train, [])
    space = tmp_path / "s.toml"
    body = (Path(__file__).parents[1] / "search_spaces" / "softmax.toml").read_text()
    space.write_text(body.replace('validation = [', f'validation = [{{ benchmark = '
                                  f'"{sets["ijb"]}", weight = 1.0 }}, ', 1))
    if sets["ijb"] not in space.read_text():
        pytest.fail("softmax.toml has no [reward] validation list to extend")
    with pytest.raises(ValueError, match="templates benchmark, for \\[test\\] benchmarks"):
        search(space, epochs=1, device="cpu", out=tmp_path / "run")


# ------------------------------------------- 5-point alignment, chunked reading, distractors
def _similarity(angle_deg: float, scale: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def test_similarity_transform_recovers_rotation_scale_and_shift():
    src = alignment.ARCFACE_TEMPLATE
    cr, t = _similarity(25.0, 1.7), np.array([12.5, -7.25])
    dst = src @ cr.T + t
    m = alignment.similarity_transform(src, dst)
    assert np.allclose(m[:, :2], cr, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-9)
    # the inverse direction: scale 1/1.7, angle -25 degrees
    back = alignment.similarity_transform(dst, src)
    assert np.allclose(back[:, :2], _similarity(-25.0, 1 / 1.7), atol=1e-9)
    # least squares: a mirror image is fitted by a rotation, never a reflection
    assert np.linalg.det(alignment.similarity_transform(src, src * [-1, 1])[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        alignment.similarity_transform(np.ones((5, 2)), src)


def _blob(shape, centre, sigma=3.0) -> np.ndarray:
    yy, xx = np.indices(shape)
    return np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma ** 2))


def _centroid(channel: np.ndarray) -> tuple[float, float]:
    w = channel.astype(np.float64)
    w = np.where(w > 0.1 * w.max(), w, 0)
    yy, xx = np.indices(w.shape)
    return float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())


def test_align_puts_a_landmark_dot_on_the_template_point():
    # a face 1.6x the template's size, turned by 20 degrees, shifted by (70, 40) in a 240x260
    # (WxH) image: landmarks L = A·T + u; bright blobs at the left eye (red) and the right
    # mouth corner (green)
    a, u = _similarity(20.0, 1.6), np.array([70.0, 40.0])
    lm = alignment.ARCFACE_TEMPLATE @ a.T + u
    img = np.zeros((260, 240, 3), np.uint8)
    img[..., 0] = np.round(255 * _blob((260, 240), lm[0], sigma=4.0))
    img[..., 1] = np.round(255 * _blob((260, 240), lm[4], sigma=4.0))
    out = np.asarray(alignment.align(Image.fromarray(img), lm))
    assert out.shape == (112, 112, 3)
    for channel, k in ((0, 0), (1, 4)):
        x, y = _centroid(out[..., channel])
        tx, ty = alignment.ARCFACE_TEMPLATE[k]
        # (Pillow's pixel-centre convention left unshifted puts it 0.3 px off)
        assert abs(x - tx) < 0.1 and abs(y - ty) < 0.1, (channel, x, y)
        assert np.unravel_index(out[..., channel].argmax(), (112, 112)) == (round(ty), round(tx))


def write_unaligned(root: Path, seed: int = 0) -> None:
    """The hand-worked IJB set as 240x240 loose crops: each face (a solid square, black
    around it) turned, scaled and placed at random, its 5 landmarks written where the
    template's points fall; aligned, every crop is the solid colour again."""
    from PIL import ImageDraw

    write_ijb(root)
    rng = np.random.default_rng(seed)
    rows = []
    for name, rgb, _, _, score in IJB_IMAGES:
        a = _similarity(rng.uniform(-30, 30), rng.uniform(0.9, 1.2))
        u = np.array([120.0, 120.0]) - a @ np.array([55.5, 55.5]) + rng.uniform(-8, 8, 2)
        lm = alignment.ARCFACE_TEMPLATE @ a.T + u
        corners = np.array([[0, 0], [111, 0], [111, 111], [0, 111]], float) @ a.T + u
        middle = corners.mean(0)
        corners = middle + (corners - middle) * (1 + 4 / np.linalg.norm(corners[0] - middle))
        img = Image.new("RGB", (240, 240))
        ImageDraw.Draw(img).polygon([tuple(p) for p in corners], fill=rgb)
        img.save(root / "loose_crop" / name)
        rows.append(" ".join([name, *(f"{v:.6f}" for v in lm.reshape(-1)), str(score)]))
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(rows) + "\n")


def test_ijb_aligns_loose_crops_by_their_landmarks(tmp_path):
    write_unaligned(tmp_path / "IJBC")
    bench = data.load(f"ijb:{tmp_path / 'IJBC'}")  # align=yes is the default
    split = bench.test
    assert bench.image_size == (112, 112) and isinstance(split.images, LazyImages)
    first = split.images[0:2]
    assert first.shape == (2, 3, 112, 112)
    assert (first[0] == torch.tensor([200, 0, 0], dtype=torch.uint8)[:, None, None]).all()
    # aligned, the crops are the solid colours of the hand-worked example: the same metrics
    out = ijb.evaluate_templates(Colour(), split, far_targets=(0.1, 0.3, 0.5))
    assert out["tar@far=1e-1"] == 0.0 and out["tar@far=3e-1"] == pytest.approx(0.25)
    assert out["tar@far=5e-1"] == pytest.approx(0.5) and out["roc_auc"] == pytest.approx(0.5)
    # used as they are, the black around each face changes the features
    plain = ijb.evaluate_templates(Colour(), data.load(f"ijb:{tmp_path / 'IJBC'}?align=no").test,
                                   far_targets=(0.5,))
    assert plain["threshold@far=5e-1"] != pytest.approx(out["threshold@far=5e-1"])
    with pytest.raises(ValueError, match="option align='maybe': allowed values yes"):
        data.load(f"ijb:{tmp_path / 'IJBC'}?align=maybe")
    write_ijb(tmp_path / "flat")  # every landmark at (38.5, 38.5)
    with pytest.raises(ValueError, match="landmarks of 9 image.*coincide.*align: allowed"):
        data.load(f"ijb:{tmp_path / 'flat'}")


class Reads(LazyImages):
    """LazyImages that note how many images each read decodes."""

    def __init__(self, lazy: LazyImages, log: list[int]):
        super().__init__(lazy.source, lazy.items, lazy.size, lazy.channels, lazy.crop,
                         lazy.landmarks, lazy.device)
        self.log = log

    def __getitem__(self, index):
        out = super().__getitem__(index)
        self.log.append(int(out.shape[0]))
        return out


def test_chunked_evaluation_reads_a_chunk_at_a_time_and_gives_the_same_metrics(sets):
    torch.manual_seed(0)
    model = models.build("digits_net", embedding_size=16, in_channels=1, image_size=(8, 8))
    split = data.load(sets["ijb"]).test
    reads: list[int] = []
    chunked = dataclasses.replace(split, images=Reads(split.images, reads))
    in_memory = dataclasses.replace(split, images=split.images[0:len(split)])
    assert isinstance(in_memory.images, torch.Tensor)
    a = ijb.evaluate_templates(model, chunked, chunk=3, batch_size=3)
    b = ijb.evaluate_templates(model, in_memory, chunk=None, batch_size=3)
    assert max(reads) == 3 and sum(reads) == len(split)
    assert a == pytest.approx(b, nan_ok=True, rel=0, abs=0)
    split = data.load(sets["ident"], seed=2).test
    reads.clear()
    chunked = dataclasses.replace(split, distractors=Reads(split.distractors, reads))
    in_memory = dataclasses.replace(split, distractors=split.distractors[0:15])
    a = identification.evaluate_identification(model, chunked, chunk=3, batch_size=3)
    b = identification.evaluate_identification(model, in_memory, chunk=None, batch_size=3)
    assert max(reads) == 3 and sum(reads) == 15
    assert a == b and set(a) >= {"rank1@d=5", "rank1@d=15"}


def test_distractors_that_are_probe_or_gallery_images_are_dropped(tmp_path, caplog):
    write_ident(tmp_path)
    dist = tmp_path / "distractors"
    shutil.copy(tmp_path / "people" / "A" / "2.png", dist / "copy_of_a_probe.png")
    shutil.copy(tmp_path / "people" / "C" / "1.png", dist / "sub" / "gallery.png")
    spec = f"ident:{tmp_path / 'people'}?distractors={dist}"
    with caplog.at_level("WARNING", logger="lfsearch.data.ident"):
        split = data.load(spec, seed=0).test
    assert "dropped 2 distractor(s) byte-identical to a probe or gallery image" in caplog.text
    names = [Path(split.distractors.name(k)).name for k in range(len(split.distractors))]
    assert sorted(names) == ["d1.png", "d2.png", "d3.png"] and split.counts == (3,)
    with pytest.raises(ValueError, match="distractor_counts: 4 is more than the 3 distractors"
                                         ".* left after dropping 2"):
        data.load(spec + "&distractor_counts=4", seed=0)


def test_evaluate_refuses_distractors_from_the_runs_validation_split(run_dir, sets, tmp_path,
                                                                     capsys):
    # the run (digits, seed 2) was rewarded on digits' validation split: three of its images
    # among the distractors make the benchmark refused, exit 2 with a one-line error
    val = data.load("digits", seed=2).val.images[:3]
    (tmp_path / "d").mkdir()
    for k, image in enumerate(val):
        Image.fromarray(image[0].numpy()).save(tmp_path / "d" / f"{k}.png")
    spec = (f"ident:{sets['root']}/people?channels=1&size=8x8&distractors={tmp_path / 'd'}")
    assert cli_main(["evaluate", str(run_dir), "--benchmark", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert "shares 3 of its images with the val split" in err and len(err.splitlines()) == 1


def test_lazy_images_read_a_rec_serially_and_decode_on_threads(tmp_path):
    # 70 records (a slice of 64 or more decodes on threads): the slice equals image by image
    from lfsearch.data.ident import distractor_source
    from lfsearch.data.recordio import IRHeader, RecordWriter

    rng = np.random.default_rng(0)
    writer = RecordWriter(tmp_path / "d.rec", tmp_path / "d.idx")
    for k in range(70):
        blob = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(blob, "PNG")
        writer.write(k, IRHeader(0, float(k), k, 0), blob.getvalue())
    writer.commit()
    lazy = LazyImages(distractor_source(tmp_path / "d.rec"), np.arange(70)[::-1], (8, 8), 1)
    whole = lazy[0:70]
    assert whole.shape == (70, 1, 8, 8) and whole.dtype == torch.uint8
    assert torch.equal(whole, torch.stack([lazy[k] for k in range(70)]))
    assert not torch.equal(whole[0], whole[1])
