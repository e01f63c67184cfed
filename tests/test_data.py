"""Benchmarks: bundled digits, real ORL faces and MNIST t10k subsets in tests/data, and
tiny files written here in the exact MNIST IDX, CIFAR pickle, LFW pairs and insightface .bin
formats."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lfsearch import data

TEST_DATA = Path(__file__).resolve().parent / "data"  # real subsets, credits in its README.md


@pytest.fixture(scope="module")
def orl_faces_dir() -> Path:
    return TEST_DATA / "orl_faces_subset"  # ORL people s1..s20, 10 images each


@pytest.fixture(scope="module")
def mnist_t10k_dir() -> Path:
    return TEST_DATA / "mnist_small"  # the first 300 images of MNIST's t10k set


# --- writers of the exact file formats -------------------------------------------------------


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: 0x00 0x00, type 0x08 (ubyte), ndim, big-endian uint32 dims, raw bytes."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def read_real_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_mnist(root: Path, train_x, train_y, test_x, test_y, gz: bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(root / f"train-images-idx3-ubyte{ext}", train_x)
    write_idx(root / f"train-labels-idx1-ubyte{ext}", train_y)
    write_idx(root / f"t10k-images-idx3-ubyte{ext}", test_x)
    write_idx(root / f"t10k-labels-idx1-ubyte{ext}", test_y)


def cifar_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar_batch(path: Path, rows: np.ndarray, labels: list[int], key: bytes) -> None:
    """A CIFAR 'python version' batch: a pickled dict with bytes keys."""
    d = {b"batch_label": b"test batch", key: labels, b"data": rows,
         b"filenames": [b"img%d.png" % i for i in range(len(labels))]}
    if key == b"fine_labels":
        d[b"coarse_labels"] = [label // 5 for label in labels]
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def grey_image(value: int, size=(20, 24), mode="L") -> Image.Image:
    return Image.new(mode, size, value if mode == "L" else (value, value, value))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- digits ----------------------------------------------------------------------------------


def test_digits_is_open_set_with_disjoint_val_and_test():
    b = data.load("digits", seed=0)
    assert (b.name, b.num_classes, b.in_channels, b.image_size) == ("digits", 6, 1, (8, 8))
    assert b.default_model == "digits_net" and b.augment == "none"
    assert set(b.train.labels.tolist()) == set(range(6))
    # stored as uint8 pixels 0..16 (scikit-learn's values), normalised as x / 8 - 1 per batch
    assert b.train.images.shape[1:] == (1, 8, 8) and b.train.images.dtype == torch.uint8
    assert int(b.train.images.min()) == 0 and int(b.train.images.max()) == 16
    x = b.train.normalise(b.train.images)
    assert x.dtype == torch.float32 and torch.equal(x, b.train.images.float() / 8 - 1)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    for split in (b.val, b.test):
        assert isinstance(split, data.VerificationSplit)
        assert set(split.labels.tolist()) == {6, 7, 8, 9}  # digits never seen in training
        lab = split.labels[split.pairs]
        assert torch.equal(split.same, lab[:, 0] == lab[:, 1])
        assert int(split.same.sum()) * 2 == split.num_pairs == 6000
        for k in range(10):  # LFW-like folds: 300 same + 300 different each
            assert int(split.same[split.folds == k].sum()) == 300
            assert int((split.folds == k).sum()) == 600
        assert len(set(map(tuple, split.pairs.tolist()))) == split.num_pairs  # no repeats
    # every image of digits 6-9 is in exactly one of val and test: 1797 - 1083 (0-5) = 714
    assert len(b.train) + b.val.images.shape[0] + b.test.images.shape[0] == 1797
    val_rows = {tuple(r) for r in b.val.images.flatten(1).tolist()}
    test_rows = {tuple(r) for r in b.test.images.flatten(1).tolist()}
    assert len(val_rows & test_rows) <= 2  # only images that occur twice in the data set


def test_digits_is_deterministic_from_seed():
    a, b, c = data.load("digits", seed=5), data.load("digits", seed=5), data.load("digits", seed=6)
    assert torch.equal(a.test.pairs, b.test.pairs) and torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.test.pairs, c.test.pairs)


def test_digits_options_from_spec_or_keywords():
    b = data.load("digits?pairs=200&train_classes=5")
    assert b.num_classes == 5 and b.val.num_pairs == 200
    assert set(b.test.labels.tolist()) == {5, 6, 7, 8, 9}
    assert data.load("digits?pairs=200", pairs=100).val.num_pairs == 100  # keyword wins


def test_digits_closed_is_a_stratified_classification_split():
    b = data.load("digits-closed", seed=0)
    assert isinstance(b.test, data.ClassificationSplit) and isinstance(b.val,
                                                                      data.ClassificationSplit)
    assert b.num_classes == 10
    assert len(b.train) + len(b.val) + len(b.test) == 1797
    assert abs(len(b.test) - 0.2 * 1797) < 12
    assert set(b.test.labels.tolist()) == set(range(10))


# --- batches and augmentation ----------------------------------------------------------------


def small_set(n=10) -> data.LabelledImages:
    images = torch.arange(n * 2 * 4 * 5, dtype=torch.float32).view(n, 2, 4, 5)
    return data.LabelledImages(images, torch.arange(n))


def test_batches_cover_every_sample_once_in_a_seeded_order():
    train = small_set(10)
    runs = [[(x, y) for x, y in data.batches(train, 4, generator=torch.Generator().manual_seed(s))]
            for s in (1, 1, 2)]
    assert [len(y) for _, y in runs[0]] == [4, 4, 2]
    assert sorted(torch.cat([y for _, y in runs[0]]).tolist()) == list(range(10))
    assert all(torch.equal(x, train.images[y]) for x, y in runs[0])
    assert torch.equal(torch.cat([y for _, y in runs[0]]), torch.cat([y for _, y in runs[1]]))
    assert not torch.equal(torch.cat([y for _, y in runs[0]]), torch.cat([y for _, y in runs[2]]))
    dropped = list(data.batches(train, 4, generator=torch.Generator().manual_seed(1),
                                drop_last=True))
    assert [len(y) for _, y in dropped] == [4, 4]


def test_flip_augmentation_flips_some_images_left_right():
    train = small_set(64)
    x, y = next(data.batches(train, 64, generator=torch.Generator().manual_seed(0),
                             augment="flip"))
    orig = train.images[y]
    flipped = torch.tensor([torch.equal(a, b.flip(-1)) for a, b in zip(x, orig)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(x, orig)])
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54


def test_crop_augmentation_is_a_shifted_window_of_the_zero_padded_image():
    train = small_set(32)
    x, y = next(data.batches(train, 32, generator=torch.Generator().manual_seed(0),
                             augment="crop=2"))
    assert x.shape == (32, 2, 4, 5)
    shifts = set()
    for out, src in zip(x, train.images[y]):
        padded = torch.nn.functional.pad(src, (2, 2, 2, 2))
        match = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(padded[:, dy:dy + 4, dx:dx + 5], out)]
        assert match
        shifts.add(match[0])
    assert len(shifts) > 5


def test_augmentation_is_seeded_and_rejects_unknown_names():
    train = small_set(16)
    a = next(data.batches(train, 16, generator=torch.Generator().manual_seed(3),
                          augment="crop=1,flip"))[0]
    b = next(data.batches(train, 16, generator=torch.Generator().manual_seed(3),
                          augment="crop=1,flip"))[0]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="allowed: 'none', 'flip'"):
        next(data.batches(train, 4, generator=torch.Generator(), augment="rotate"))

def test_stored_uint8_pixels_give_the_batches_of_their_float_images():
    """uint8 storage is 4x smaller than float32 and changes nothing: the batches equal those of
    the same images normalised up front (x / 127.5 - 1), augmentation included."""
    pixels = torch.randint(0, 256, (40, 3, 6, 5), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    labels = torch.arange(40)
    stored = data.LabelledImages(pixels, labels, data.BYTE_PIXELS)
    floats = data.LabelledImages(pixels.float() / 127.5 - 1, labels)
    assert stored.images.element_size() * 4 == floats.images.element_size()
    for augment in ("none", "crop=2,flip"):
        got = list(data.batches(stored, 16, generator=torch.Generator().manual_seed(7),
                                augment=augment))
        want = list(data.batches(floats, 16, generator=torch.Generator().manual_seed(7),
                                 augment=augment))
        assert len(got) == len(want) == 3
        for (x, y), (wx, wy) in zip(got, want):
            assert x.dtype == torch.float32 and torch.equal(y, wy) and torch.equal(x, wx)


def test_uint8_images_need_a_pixel_scale_and_float_images_take_none():
    pixels = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8 images need pixels=PixelScale"):
        data.LabelledImages(pixels, torch.arange(2))
    with pytest.raises(ValueError, match="already normalised; pixels must be None"):
        data.LabelledImages(pixels.float(), torch.arange(2), data.BYTE_PIXELS)
    with pytest.raises(ValueError, match="uint8 .* or float"):
        data.LabelledImages(pixels.long(), torch.arange(2))
    half = data.LabelledImages(pixels, torch.arange(2), data.PixelScale(8.0, 1.0)).subset(
        slice(0, 1))
    assert len(half) == 1 and half.pixels == data.PixelScale(8.0, 1.0)



# --- MNIST IDX -------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_tiny_idx_files_exactly(tmp_path, gz):
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    train_y = np.repeat(np.arange(10), 6).astype(np.uint8)
    test_x = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    test_y = np.repeat(np.arange(10), 2).astype(np.uint8)
    write_mnist(tmp_path, train_x, train_y, test_x, test_y, gz)
    b = data.load(f"mnist:{tmp_path}", seed=0)
    assert b.num_classes == 10 and b.default_model == "lsoftmax_mnist"
    assert (b.in_channels, b.image_size) == (1, (28, 28))
    assert b.test.images.dtype == torch.uint8 and b.test.pixels == data.BYTE_PIXELS
    assert torch.equal(b.test.images[:, 0], torch.from_numpy(test_x))  # the file's bytes
    assert b.test.labels.tolist() == test_y.tolist()
    assert len(b.val) == 10 and len(b.train) == 50  # 10% of each class, stratified
    assert set(b.val.labels.tolist()) == set(range(10))
    # train + val are exactly the train file's images
    both = torch.cat([b.train.images, b.val.images])[:, 0]
    want = torch.from_numpy(train_x)
    assert sorted(map(lambda r: tuple(r), both.flatten(1).tolist())) == sorted(
        map(lambda r: tuple(r), want.flatten(1).tolist()))


def test_mnist_on_real_t10k_digits_split_into_own_files(tmp_path, mnist_t10k_dir):
    images = read_real_idx(mnist_t10k_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_real_idx(mnist_t10k_dir / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (300, 28, 28) and labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    write_mnist(tmp_path, images[:200], labels[:200], images[200:], labels[200:], gz=True)
    b = data.load(f"mnist:{tmp_path}?val=0.2", seed=1)
    assert len(b.train) + len(b.val) == 200 and len(b.test) == 100
    assert abs(len(b.val) - 40) <= 10
    assert b.test.labels.tolist() == labels[200:].tolist()
    assert torch.equal(b.test.images[3, 0], torch.from_numpy(images[203].copy()))  # uint8 kept
    o = data.load(f"mnist-open:{tmp_path}?pairs=100", seed=1)
    assert o.num_classes == 6 and set(o.train.labels.tolist()) == set(range(6))
    assert len(o.train) == int((labels[:200] < 6).sum())
    assert set(o.val.labels.tolist()) == {6, 7, 8, 9} == set(o.test.labels.tolist())
    assert o.val.images.shape[0] == int((labels[:200] >= 6).sum())
    assert o.test.num_pairs == 100 and int(o.test.same.sum()) == 50


def test_mnist_missing_or_malformed_files_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load(f"mnist:{tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load(f"mnist:{tmp_path}")
    x = np.zeros((4, 28, 28), np.uint8)
    write_mnist(tmp_path, x, np.arange(4), x, np.arange(4), gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x08\x03\x00\x00garbage")
    with pytest.raises(ValueError, match="not an IDX file(.|\n)*t10k-images-idx3-ubyte"):
        data.load(f"mnist:{tmp_path}")
    write_idx(tmp_path / "t10k-images-idx3-ubyte", x)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(3))
    with pytest.raises(ValueError, match="expected 4 labels"):
        data.load(f"mnist:{tmp_path}")


# --- CIFAR pickles ---------------------------------------------------------------------------


def test_cifar10_reads_python_version_batches(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rows, labels = [], []
    for i in range(1, 6):
        r, lab = cifar_rows(20, rng), [int(v) for v in np.tile(np.arange(10), 2)]
        write_cifar_batch(root / f"data_batch_{i}", r, lab, b"labels")
        rows.append(r)
        labels += lab
    test_rows = cifar_rows(20, rng)
    write_cifar_batch(root / "test_batch", test_rows, list(range(10)) * 2, b"labels")
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                                      b"dog", b"frog", b"horse", b"ship", b"truck"]}, f, protocol=2)
    b = data.load(f"cifar10:{tmp_path}", seed=0)  # finds the cifar-10-batches-py sub-folder
    assert (b.num_classes, b.in_channels, b.image_size) == (10, 3, (32, 32))
    assert b.augment == "crop=4,flip" and b.default_model == "lsoftmax_cifar10"
    assert b.class_names[0] == "airplane"
    assert len(b.train) + len(b.val) == 100 and len(b.val) == 10
    # a row is the red plane, then green, then blue, each 32x32 row-major
    img = b.test.images[7]
    row = test_rows[7]
    assert int(img[0, 0, 0]) == row[0] and int(img[1, 0, 0]) == row[1024]
    assert int(img[2, 3, 5]) == row[2048 + 3 * 32 + 5]
    assert float(b.test.normalise(img)[2, 3, 5]) == pytest.approx(row[2048 + 101] / 127.5 - 1)
    o = data.load(f"cifar10-open:{root}?pairs=40", seed=0)
    assert o.num_classes == 6 and set(o.test.labels.tolist()) == {6, 7, 8, 9}


def test_cifar100_reads_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    fine = [i % 100 for i in range(300)]
    write_cifar_batch(tmp_path / "train", cifar_rows(300, rng), fine, b"fine_labels")
    write_cifar_batch(tmp_path / "test", cifar_rows(200, rng), list(range(100)) * 2,
                      b"fine_labels")
    b = data.load(f"cifar100:{tmp_path}?val=0.34", seed=0)
    assert b.num_classes == 100 and b.default_model == "lsoftmax_cifar100"
    assert b.test.labels.tolist() == list(range(100)) * 2
    assert len(b.val) == 100 and len(b.train) == 200
    o = data.load(f"cifar100-open:{tmp_path}?pairs=100", seed=0)
    assert o.num_classes == 80 and int(o.train.labels.max()) == 79
    assert set(o.val.labels.tolist()) == set(range(80, 100))


def test_cifar_missing_or_malformed_files_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        data.load(f"cifar10:{tmp_path}")
    (tmp_path / "train").write_bytes(b"not a pickle")
    (tmp_path / "test").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot read pickle(.|\n)*fine_labels"):
        data.load(f"cifar100:{tmp_path}")
    with open(tmp_path / "train", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"uint8 \(N, 3072\)"):
        data.load(f"cifar100:{tmp_path}")


def test_pickles_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "bad.bin", "wb") as f:
        pickle.dump(([Evil()], []), f)
    with pytest.raises(ValueError, match="refusing to load"):
        data.load(f"bin:{tmp_path / 'bad.bin'}")


# --- folder (real ORL faces) -----------------------------------------------------------------


def test_folder_on_real_orl_faces_splits_by_identity(orl_faces_dir):
    b = data.load(f"folder:{orl_faces_dir}", seed=0)
    assert (b.in_channels, b.image_size) == (1, (112, 92))  # grey PGM, native size kept
    assert b.default_model == "face_cnn" and "flip" in b.augment
    assert b.num_classes == 12 and len(b.train) == 120  # 20 people: 12 train, 4 val, 4 test
    assert sorted(set(b.train.labels.tolist())) == list(range(12))
    val_people = set(b.val.labels.tolist())
    test_people = set(b.test.labels.tolist())
    assert len(val_people) == len(test_people) == 4 and not val_people & test_people
    train_names = set(b.class_names)
    assert len(train_names) == 12
    # balanced pairs: all 4 x C(10, 2) = 180 same pairs and as many different ones
    for split in (b.val, b.test):
        assert split.num_pairs == 360 and int(split.same.sum()) == 180
        lab = split.labels[split.pairs]
        assert torch.equal(split.same, lab[:, 0] == lab[:, 1])
    # the first training image is s1/1.pgm if s1 is a training identity, read exactly
    if "s1" in b.class_names:
        want = np.asarray(Image.open(orl_faces_dir / "s1" / "1.pgm"))
        assert np.array_equal(b.train.images[0, 0].numpy(), want)
    again = data.load(f"folder:{orl_faces_dir}", seed=0)
    assert torch.equal(again.test.pairs, b.test.pairs) and again.class_names == b.class_names
    other = data.load(f"folder:{orl_faces_dir}", seed=1)
    assert other.class_names != b.class_names


def test_folder_resizes_and_converts(orl_faces_dir):
    b = data.load(f"folder:{orl_faces_dir}?size=32x28&channels=3&pairs=100", seed=0)
    assert b.train.images.shape[1:] == (3, 32, 28) and b.image_size == (32, 28)
    assert b.test.num_pairs == 100
    c = data.load(f"folder-closed:{orl_faces_dir}", size=16, seed=0)
    assert isinstance(c.test, data.ClassificationSplit) and c.num_classes == 20
    assert (len(c.train), len(c.val), len(c.test)) == (120, 40, 40)  # 6/2/2 of each person


def test_folder_errors_name_the_layout_or_the_corrupt_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="one sub-folder per identity"):
        data.load(f"folder:{tmp_path}")
    for person in ("a", "b", "c", "d", "e", "f"):
        (tmp_path / person).mkdir()
        for i in range(3):
            grey_image(40 * i + 10).save(tmp_path / person / f"{i}.png")
    b = data.load(f"folder:{tmp_path}", seed=0)
    assert b.image_size == (24, 20) and b.in_channels == 1 and b.num_classes == 2
    bad = tmp_path / "c" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match=f"cannot read image {bad}"):
        data.load(f"folder:{tmp_path}")


# --- LFW pairs -------------------------------------------------------------------------------


def make_lfw(root: Path, pairs_text: str) -> dict[tuple[str, int], int]:
    """People with constant-grey JPEGs; returns each image's grey level."""
    levels = {}
    for p, name in enumerate(["Ann_A", "Bob_B", "Cid_C", "Dee_D"]):
        (root / "lfw" / name).mkdir(parents=True)
        for n in (1, 2, 3):
            level = 20 + 60 * p + 15 * n
            grey_image(level, (50, 50), "RGB").save(root / "lfw" / name / f"{name}_{n:04d}.jpg")
            levels[(name, n)] = level
    (root / "pairs.txt").write_text(pairs_text)
    return levels


LFW_PAIRS = """2\t2
Ann_A\t1\t2
Bob_B\t1\t3
Ann_A\t1\tBob_B\t2
Cid_C\t3\tDee_D\t1
Cid_C\t1\t2
Dee_D\t2\t3
Ann_A\t3\tDee_D\t3
Bob_B\t1\tCid_C\t2
"""


def test_lfw_reads_pairs_with_header_as_folds(tmp_path):
    levels = make_lfw(tmp_path, LFW_PAIRS)
    b = data.load(f"lfw:{tmp_path}?size=16", seed=0)
    assert b.train is None and b.evaluation_only and b.val is b.test
    assert (b.in_channels, b.image_size) == (3, (16, 16))
    s = b.test
    assert s.same.tolist() == [True, True, False, False] * 2
    assert s.folds.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    expected = [(("Ann_A", 1), ("Ann_A", 2)), (("Bob_B", 1), ("Bob_B", 3)),
                (("Ann_A", 1), ("Bob_B", 2)), (("Cid_C", 3), ("Dee_D", 1)),
                (("Cid_C", 1), ("Cid_C", 2)), (("Dee_D", 2), ("Dee_D", 3)),
                (("Ann_A", 3), ("Dee_D", 3)), (("Bob_B", 1), ("Cid_C", 2))]
    for (i, j), (a, c) in zip(s.pairs.tolist(), expected):
        for idx, key in ((i, a), (j, c)):  # JPEG of a constant grey stays within 2 levels
            assert abs(float(s.images[idx].float().mean()) - levels[key]) < 2
    assert s.images.shape[0] == 12  # distinct images named in the pairs (each read once)


def test_lfw_reads_pairs_without_header(tmp_path):
    body = "\n".join(LFW_PAIRS.splitlines()[1:]) + "\n"
    make_lfw(tmp_path, body)
    b = data.load(f"lfw:{tmp_path}", seed=0)
    assert b.image_size == (50, 50)
    assert b.test.num_pairs == 8 and int(b.test.same.sum()) == 4
    # no header: each kind split into contiguous folds in file order
    assert b.test.folds[b.test.same].tolist() == [0, 1, 2, 3]


def test_lfw_errors_show_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="pairs.txt"):
        data.load(f"lfw:{tmp_path}")
    make_lfw(tmp_path, "Ann_A\t1\n")
    with pytest.raises(ValueError, match="line 1(.|\n)*name1 n1 name2 n2"):
        data.load(f"lfw:{tmp_path}")
    (tmp_path / "pairs.txt").write_text("Ann_A\t1\t9\nAnn_A\t1\tBob_B\t1\n")
    with pytest.raises(FileNotFoundError, match="Ann_A_0009.jpg"):
        data.load(f"lfw:{tmp_path}")
    (tmp_path / "pairs.txt").write_text("3\t1\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t1\n")
    with pytest.raises(ValueError, match="header says 3 set"):
        data.load(f"lfw:{tmp_path}")


# --- insightface .bin ------------------------------------------------------------------------


def test_bin_reads_insightface_pairs(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(24)]
    blobs = [png_bytes(Image.fromarray(a)) for a in arrays]
    issame = [bool(i % 2) for i in range(12)]
    path = tmp_path / "lfw.bin"
    with open(path, "wb") as f:
        pickle.dump((blobs, issame), f, protocol=pickle.HIGHEST_PROTOCOL)
    b = data.load(f"bin:{path}", seed=0)
    assert b.train is None and b.val is b.test and b.name == f"bin:{path}"
    s = b.test
    assert (b.in_channels, b.image_size) == (3, (12, 10))
    assert s.pairs.tolist() == [[2 * i, 2 * i + 1] for i in range(12)]
    assert s.same.tolist() == issame
    assert s.folds.tolist() == [0, 0, 1, 2, 3, 4, 5, 5, 6, 7, 8, 9]  # contiguous, i * 10 // 12
    want = torch.from_numpy(arrays[5]).permute(2, 0, 1)
    assert torch.equal(s.images[5], want)  # PNG is lossless: exact pixels
    grey = data.load(f"bin:{path}?channels=1&size=8x8")
    assert grey.test.images.shape == (24, 1, 8, 8)


def test_bin_errors_name_the_file_and_image(tmp_path):
    path = tmp_path / "cfp.bin"
    with pytest.raises(FileNotFoundError, match="insightface verification file"):
        data.load(f"bin:{path}")
    blobs = [png_bytes(grey_image(i * 10)) for i in range(4)]
    with open(path, "wb") as f:
        pickle.dump((blobs, [True]), f)
    with pytest.raises(ValueError, match="4 images for 1 is-same flags"):
        data.load(f"bin:{path}")
    blobs[3] = b"\xff\xd8\xff not really a jpeg"
    with open(path, "wb") as f:
        pickle.dump((blobs, [True, False]), f)
    with pytest.raises(ValueError, match=f"cannot read image 3 of {path}"):
        data.load(f"bin:{path}")


# --- specs, options, devices -----------------------------------------------------------------


def test_bad_specs_and_options_name_the_allowed_values():
    with pytest.raises(ValueError, match="allowed: .*digits.*mnist"):
        data.load("imagenet:/x")
    with pytest.raises(ValueError, match="option 'size' is not known for benchmark 'digits'"):
        data.load("digits?size=8")
    with pytest.raises(ValueError, match="needs a path"):
        data.load("mnist")
    with pytest.raises(ValueError, match="fraction in"):
        data.load("digits-closed", val=1.5)
    with pytest.raises(ValueError, match="channels"):
        data.load("folder:/x?channels=2")
    assert data.parse_spec("folder:/a/b?size=64x48&channels=3") == (
        "folder", "/a/b", {"size": "64x48", "channels": "3"})


def test_benchmark_to_device_keeps_val_and_test_shared():
    b = data.load("digits?pairs=20")
    moved = b.to("cpu")
    assert moved.train.images.device.type == "cpu" and moved.test.pairs.device.type == "cpu"
    s = data.VerificationSplit(torch.zeros(2, 1, 2, 2), torch.tensor([[0, 1]]),
                               torch.tensor([True]), torch.tensor([0]))
    e = data.Benchmark("x", None, s, s, 0, 1, (2, 2), "digits_net")
    moved_e = e.to("cpu")
    assert moved_e.val is moved_e.test


def test_make_pairs_samples_large_sets_without_repeats():
    labels = np.repeat(np.arange(5), 1000)  # 2.5 M same and 10 M different pairs: sampled
    pairs, same, folds = data.make_pairs(labels, 2000, np.random.default_rng(0))
    assert pairs.shape == (2000, 2) and same.sum() == 1000
    assert (labels[pairs[:, 0]] == labels[pairs[:, 1]]).tolist() == same.tolist()
    assert len({tuple(p) for p in np.sort(pairs, 1).tolist()}) == 2000
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert np.bincount(folds).tolist() == [200] * 10
