"""insightface RecordIO: the reader against bytes built here by hand from the format
description (struct.pack, not the project's writer), the writer against the same bytes, and
`lfsearch data pack/show/bin` on the real faces of tests/data/orl_small."""

from __future__ import annotations

import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lfsearch import data
from lfsearch.cli import main as cli_main
from lfsearch.data import recordio

ORL_SMALL = Path(__file__).resolve().parent / "data" / "orl_small"
MAGIC = 0xCED7230A


def png(value: int, size=(6, 5)) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


def hand_record(payload: bytes, cflag: int = 0) -> bytes:
    """magic (uint32 LE), length word (cflag << 29 | length), payload, zero pad to 4 bytes."""
    return (struct.pack("<II", MAGIC, (cflag << 29) | len(payload)) + payload
            + b"\0" * (-len(payload) % 4))


def ir(flag: int, label: float, rid: int, labels=()) -> bytes:
    """IRHeader 'IfQQ' (flag, label, id, id2), then `flag` float32 labels."""
    return struct.pack("<IfQQ", flag, label, rid, 0) + struct.pack(f"<{len(labels)}f", *labels)


def write_hand_rec(folder: Path, images: list[tuple[int, bytes]], n_ids: int) -> Path:
    """An insightface training set: record 0 labels (N+1, N+1+K), images 1..N (label =
    identity), identity records (start, end); train.idx 'index<TAB>offset'; property."""
    n = len(images)
    records = [ir(2, 0.0, 0, (n + 1, n + 1 + n_ids))]
    records += [ir(0, float(ident), i + 1) + blob for i, (ident, blob) in enumerate(images)]
    ids = [ident for ident, _ in images]
    for j in range(n_ids):
        start = ids.index(j) + 1
        records.append(ir(2, 0.0, n + 1 + j, (start, start + ids.count(j))))
    rec, idx, offset = b"", [], 0
    for key, payload in enumerate(records):
        idx.append(f"{key}\t{offset}")
        chunk = hand_record(payload)
        rec += chunk
        offset += len(chunk)
    (folder / "train.rec").write_bytes(rec)
    (folder / "train.idx").write_text("\n".join(idx) + "\n")
    (folder / "property").write_text(f"{n_ids},5,6\n")
    return folder / "train.rec"


def test_the_reader_reads_a_hand_built_insightface_file(tmp_path):
    images = [(0, png(10)), (0, png(20)), (1, png(30)), (1, png(40)), (1, png(50)), (2, png(60))]
    path = write_hand_rec(tmp_path, images, 3)
    coll = recordio_set(path)
    assert coll.names == ["0", "1", "2"] and coll.identity.tolist() == [0, 0, 1, 1, 1, 2]
    assert [coll.source.read(i) for i in range(6)] == [b for _, b in images]  # bytes unchanged
    head, rest = coll.source.record(2)
    assert (head.flag, head.label, head.id) == (0, 1.0, 3) and rest == images[2][1]
    assert recordio.read_property(tmp_path / "property") == (3, 5, 6)


def write_hand_records(path: Path, payloads: list[bytes]) -> Path:
    """Records 0..n-1 of the given payloads into path, and path's .idx beside it."""
    rec, idx = b"", []
    for key, payload in enumerate(payloads):
        idx.append(f"{key}\t{len(rec)}")
        rec += hand_record(payload)
    path.write_bytes(rec)
    path.with_suffix(".idx").write_text("\n".join(idx) + "\n")
    return path


def test_a_plain_rec_takes_every_record_and_the_first_float_label(tmp_path):
    """No header record (record 0 is an image, flag 0): every record is an image, identity =
    its label; an image with flag 2 carries float labels (7, 0.5) before its bytes."""
    blobs = [png(v) for v in (10, 20, 30, 40, 50)]
    payloads = [ir(0, 7.0, 0) + blobs[0], ir(0, 3.0, 1) + blobs[1],
                ir(2, 0.0, 2, (7.0, 0.5)) + blobs[2], ir(0, 3.0, 3) + blobs[3],
                ir(0, 9.0, 4) + blobs[4]]
    coll = recordio_set(write_hand_records(tmp_path / "plain.rec", payloads))
    assert coll.names == ["3", "7", "9"]
    assert coll.identity.tolist() == [1, 0, 1, 0, 2]  # records 0..4, record 0 included
    assert [coll.source.read(i) for i in range(5)] == blobs  # the 8 label bytes stripped
    head, _ = coll.source.record(2)
    assert head.flag == 2 and head.label.tolist() == [7.0, 0.5]


def test_a_header_with_one_label_gives_the_image_range_only(tmp_path):
    """Record 0 with flag 1, label (4,): images are records 1..3, identities their labels;
    record 4 (past the range) is not an image."""
    blobs = [png(v) for v in (10, 20, 30)]
    payloads = [ir(1, 0.0, 0, (4.0,)), ir(0, 5.0, 1) + blobs[0], ir(0, 6.0, 2) + blobs[1],
                ir(0, 5.0, 3) + blobs[2], ir(0, 99.0, 4) + b"not an image of the set"]
    coll = recordio_set(write_hand_records(tmp_path / "r.rec", payloads))
    assert coll.names == ["5", "6"] and coll.identity.tolist() == [0, 1, 0]
    assert [coll.source.read(i) for i in range(3)] == blobs


@pytest.mark.parametrize("ranges, words", [
    ([(1, 3), (2, 4)], "identity record 5 range \\[2, 4\\) overlaps another"),
    ([(1, 2), (3, 4)], "image record 2 belongs to no identity record"),
    ([(1, 3), (3, 9)], "identity record 5 range \\[3, 9\\) overlaps another or leaves"),
])
def test_hand_built_identity_records_that_do_not_cover_the_images_are_refused(tmp_path, ranges,
                                                                                words):
    payloads = [ir(2, 0.0, 0, (4.0, 4.0 + len(ranges)))]
    payloads += [ir(0, 0.0, k) + png(10 * k) for k in (1, 2, 3)]
    payloads += [ir(2, 0.0, 4 + j, r) for j, r in enumerate(ranges)]
    path = write_hand_records(tmp_path / "t.rec", payloads)
    with pytest.raises(ValueError, match=words):
        recordio_set(path)


def test_a_hand_built_rec_streams_the_pixels_of_its_records(tmp_path):
    """rec:FILE?stream=yes decodes each record's image bytes (PNGs of known grey levels)."""
    images = [(k // 4, png(8 * k)) for k in range(24)]  # 6 identities x 4 images
    path = write_hand_rec(tmp_path, images, 6)
    bench = data.load(f"rec:{path}?val=0&test=0.34&pairs=10&stream=yes&workers=0", seed=0)
    train = bench.train
    assert isinstance(train, data.StreamedImages) and len(train) == 16  # 4 of 6 identities
    x = train.decoder()[torch.arange(len(train))]
    want = [8 * int(i) for i in train.members]  # member i is record i + 1, grey level 8 i
    assert x.shape == (16, 1, 5, 6) and x.amax(dim=(1, 2, 3)).tolist() == want
    assert x.amin(dim=(1, 2, 3)).tolist() == want


def recordio_set(path):
    from lfsearch.data.rec import open_record_set
    return open_record_set(path)


def test_a_payload_holding_the_magic_is_split_and_joined_as_dmlc_does(tmp_path):
    magic = struct.pack("<I", MAGIC)
    payload = b"abcd" + magic + b"efgh" + magic + b"xy"  # magics at aligned offsets 4 and 12
    by_hand = (hand_record(b"abcd", 1)[:8 + 4] + struct.pack("<II", MAGIC, (2 << 29) | 4)
               + b"efgh" + hand_record(b"xy", 3))
    assert recordio.encode_record(payload) == by_hand
    (tmp_path / "x.rec").write_bytes(b"junk" * 2 + by_hand)
    with open(tmp_path / "x.rec", "rb") as f:
        assert recordio.read_record_at(f, 8, "x") == payload
        with pytest.raises(ValueError, match="bad magic 0x6b6e756a at offset 0"):
            recordio.read_record_at(f, 0, "x")
    unaligned = b"a" + magic + b"b"  # not on a 4-byte boundary: one plain record
    assert recordio.encode_record(unaligned) == hand_record(unaligned)


def test_pack_and_unpack_follow_the_irheader_layout():
    head = recordio.IRHeader(0, 7.0, 5, 9)
    assert recordio.pack(head, b"IMG") == struct.pack("<IfQQ", 0, 7.0, 5, 9) + b"IMG"
    multi = recordio.pack(recordio.IRHeader(0, np.array([3.0, 8.0]), 1, 0), b"Z")
    assert multi == struct.pack("<IfQQ", 2, 0.0, 1, 0) + struct.pack("<2f", 3.0, 8.0) + b"Z"
    back, rest = recordio.unpack(multi)
    assert back.flag == 2 and back.label.tolist() == [3.0, 8.0] and rest == b"Z"
    with pytest.raises(ValueError, match="flag 5 needs 20 label bytes"):
        recordio.unpack(struct.pack("<IfQQ", 5, 0.0, 0, 0) + b"abc")


def test_pack_folder_writes_what_the_hand_reader_parses(tmp_path):
    info = data.pack.pack_folder(ORL_SMALL, tmp_path / "train")
    assert (info["identities"], info["images"]) == (8, 80)
    raw = (tmp_path / "train.rec").read_bytes()
    offsets = [int(line.split("\t")[1]) for line in
               (tmp_path / "train.idx").read_text().splitlines()]
    assert len(offsets) == 1 + 80 + 8
    records = []
    for off in offsets:  # parse by hand: magic, length word, IRHeader, labels, image
        magic, word = struct.unpack_from("<II", raw, off)
        assert magic == MAGIC and word >> 29 == 0
        payload = raw[off + 8: off + 8 + (word & (2 ** 29 - 1))]
        flag, label, rid, _ = struct.unpack_from("<IfQQ", payload)
        labels = struct.unpack_from(f"<{flag}f", payload, 24)
        records.append((flag, label, rid, labels, payload[24 + 4 * flag:]))
    assert records[0][0] == 2 and records[0][3] == (81.0, 89.0)
    files = sorted(ORL_SMALL.glob("s*/*.jpg"), key=lambda p: (p.parent.name, p.name))
    for key in range(1, 81):
        flag, label, rid, _, image = records[key]
        assert (flag, rid) == (0, key) and image == files[key - 1].read_bytes()
        assert label == sorted(p.name for p in ORL_SMALL.glob("s*")).index(
            files[key - 1].parent.name)
    assert [r[3] for r in records[81:]] == [(1 + 10 * j, 11 + 10 * j) for j in range(8)]
    assert (tmp_path / "property").read_text() == "8,56,46\n"
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_rec_benchmark_is_the_folder_benchmark_of_its_images(tmp_path):
    data.pack.pack_folder(ORL_SMALL, tmp_path / "train")
    opts = "?val=0.25&test=0.25&pairs=100&stream=no"
    rec = data.load(f"rec:{tmp_path / 'train.rec'}{opts}", seed=0)
    folder = data.load(f"folder:{ORL_SMALL}{opts}", seed=0)
    assert rec.num_classes == folder.num_classes == 4 and rec.augment == folder.augment
    assert torch.equal(rec.train.images, folder.train.images)
    assert torch.equal(rec.train.labels, folder.train.labels)
    assert torch.equal(rec.test.pairs, folder.test.pairs)
    assert torch.equal(rec.val.images, folder.val.images)


def test_rec_errors_name_the_file_and_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="rec: file .* does not exist(.|\n)*train.idx"):
        data.load(f"rec:{tmp_path / 'none.rec'}")
    path = write_hand_rec(tmp_path, [(0, png(1)), (1, png(2))], 2)
    (tmp_path / "train.idx").write_text("0\tzero\n")
    with pytest.raises(ValueError, match="line 1: '0\\\\tzero' is not 'index<TAB>offset'"):
        data.load(f"rec:{path}")
    with pytest.raises(ValueError, match="needs a path: write rec:FILE"):
        data.load("rec")


def test_cli_data_pack_show_and_bin(tmp_path, capsys):
    assert cli_main(["data", "pack", str(ORL_SMALL), "--out", str(tmp_path / "faces")]) == 0
    assert "8 identities, 80 images" in capsys.readouterr().out
    sheet = tmp_path / "sheet.png"
    assert cli_main(["data", "show", str(tmp_path / "faces.rec"), "--sheet", str(sheet)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["identities"], shown["images"]) == (8, 80)
    assert shown["images_per_identity"] == {"min": 10, "median": 10.0, "max": 10}
    img = Image.open(sheet)
    assert img.format == "PNG" and img.size == (8 * 64, 8 * 64)
    # LFW-style pairs over the ORL names: NAME/NAME_NNNN.jpg
    lfw = tmp_path / "lfw"
    for person in ("s1", "s2", "s3"):
        (lfw / person).mkdir(parents=True)
        for k in (1, 2, 3):
            (lfw / person / f"{person}_{k:04d}.jpg").write_bytes(
                (ORL_SMALL / person / f"{k}.jpg").read_bytes())
    # 10 pairs (a .bin needs one per fold of the 10-fold protocol), alternately same/different
    pairs = ["s1 1 2", "s1 1 s2 2", "s2 1 2", "s2 1 s1 2", "s1 1 3", "s2 3 s3 2", "s3 1 2",
             "s3 1 s1 3", "s2 2 3", "s3 3 s2 1"]
    (tmp_path / "pairs.txt").write_text("".join(p.replace(" ", "\t") + "\n" for p in pairs))
    out = tmp_path / "v.bin"
    assert cli_main(["data", "bin", str(tmp_path / "pairs.txt"), "--root", str(lfw),
                     "--out", str(out)]) == 0
    assert "10 pairs (5 same), images 112x112 (20 resized)" in capsys.readouterr().out
    blobs, issame = pickle.loads(out.read_bytes())
    assert issame == [True, False] * 5 and len(blobs) == 20
    assert {Image.open(io.BytesIO(blob)).size for blob in blobs} == {(112, 112)}
    b = data.load(f"bin:{out}")
    assert b.test.num_pairs == 10 and b.image_size == (112, 112)
    kept = tmp_path / "kept.bin"  # asked at the images' own size: their bytes unchanged
    assert cli_main(["data", "bin", str(tmp_path / "pairs.txt"), "--root", str(lfw),
                     "--out", str(kept), "--size", "56x46"]) == 0
    blobs, _ = pickle.loads(kept.read_bytes())
    assert blobs[2] == (ORL_SMALL / "s1" / "1.jpg").read_bytes()
    assert data.load(f"bin:{kept}").image_size == (56, 46)
    # bad input: one line, exit 2, nothing written
    assert cli_main(["data", "pack", str(tmp_path / "nowhere"), "--out",
                     str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["data", "bin", str(tmp_path / "pairs.txt"), "--root", str(tmp_path),
                     "--out", str(tmp_path / "y.bin")]) == 2
    assert not (tmp_path / "x.rec").exists() and not (tmp_path / "y.bin").exists()
    assert not list(tmp_path.glob("*.tmp*"))


def test_data_tools_refuse_bad_input_in_one_line_and_write_nothing(tmp_path, capsys):
    one = tmp_path / "one"  # a folder of one identity: packing needs 2 or more
    (one / "s1").mkdir(parents=True)
    (one / "s1" / "1.jpg").write_bytes((ORL_SMALL / "s1" / "1.jpg").read_bytes())
    (tmp_path / "bad_pairs.txt").write_text("s1\t1\n")
    (tmp_path / "fake.rec").write_bytes(b"not a record file")
    (tmp_path / "fake.idx").write_text("0\t0\n")
    cases = [
        (["data", "pack", str(one), "--out", str(tmp_path / "a")], "1 identit"),
        (["data", "pack", str(ORL_SMALL), "--out", str(tmp_path / "no" / "a")],
         "does not exist"),
        (["data", "show", str(tmp_path / "none.rec")], "does not exist"),
        (["data", "show", str(tmp_path / "fake.rec"), "--sheet", str(tmp_path / "s.png")],
         "bad magic"),
        (["data", "bin", str(tmp_path / "bad_pairs.txt"), "--root", str(ORL_SMALL),
          "--out", str(tmp_path / "b.bin")], "line 1"),
        (["data", "bin", str(tmp_path / "bad_pairs.txt"), "--root", str(ORL_SMALL),
          "--out", str(tmp_path / "b.bin"), "--size", "112xA"], "expected H or HxW"),
        (["data", "frobnicate"], "invalid choice"),
        (["data", "pack", str(ORL_SMALL)], "--out"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, words in cases:
        try:
            rc = cli_main(argv)
        except SystemExit as stop:  # argparse's own errors exit (OneLineParser, status 2)
            rc = stop.code
        assert rc == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("lfsearch: error:") and "\n" not in err and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp file


@pytest.mark.parametrize("argv, words", [
    (["data", "pack"], ["PREFIX.rec", "PREFIX.idx", "property", "rec:PREFIX.rec", "Example"]),
    (["data", "show"], ["identity and image counts", "contact sheet", "Example"]),
    (["data", "bin"], ["same/different", "bin:FILE", "Example"]),
    (["evaluate"], ["checkpoint", "10-fold", "TAR@FAR", "rank-1"]),
])
def test_help_explains_each_tool(argv, words, capsys):
    with pytest.raises(SystemExit) as stop:
        cli_main(argv + ["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for w in words:
        assert w in text, w


# ------------------------------------------------------------- insightface's files as found
def insightface_load_bin(path: Path, image_size=(112, 112)) -> torch.Tensor:
    """insightface's eval/verification.py load_bin, transcribed with PIL for mx.image:
    imdecode (RGB), resize_short to image_size[0] when the width differs, HWC -> CHW, then
    copied into a (2P, 3, H, W) tensor (which fails for an image of another shape)."""
    bins, issame_list = pickle.load(open(path, "rb"), encoding="bytes")
    data_list = torch.empty((len(issame_list) * 2, 3, image_size[0], image_size[1]))
    for idx in range(len(issame_list) * 2):
        img = Image.open(io.BytesIO(bins[idx])).convert("RGB")
        if img.size[0] != image_size[0]:  # mx: img.shape[1] (width) != image_size[0]
            w, h = img.size
            short = image_size[0]
            new = (short, round(h * short / w)) if w <= h else (round(w * short / h), short)
            img = img.resize(new, Image.BILINEAR)
        arr = np.asarray(img).transpose(2, 0, 1)
        data_list[idx][:] = torch.from_numpy(arr.copy())
    return data_list


def test_data_bin_of_non_square_images_is_read_by_insightfaces_load_bin(tmp_path):
    lfw = tmp_path / "lfw"
    for person in ("s1", "s2", "s3"):  # ORL faces are 46 x 56: not square
        (lfw / person).mkdir(parents=True)
        for k in (1, 2, 3):
            (lfw / person / f"{person}_{k:04d}.jpg").write_bytes(
                (ORL_SMALL / person / f"{k}.jpg").read_bytes())
    # 10 pairs (a .bin needs one per fold of the 10-fold protocol), alternately same/different
    pairs = ["s1 1 2", "s1 1 s2 2", "s2 1 2", "s2 1 s1 2", "s1 1 3", "s2 3 s3 2", "s3 1 2",
             "s3 1 s1 3", "s2 2 3", "s3 3 s2 1"]
    (tmp_path / "pairs.txt").write_text("".join(p.replace(" ", "\t") + "\n" for p in pairs))
    raw = tmp_path / "raw.bin"  # the files' bytes as they are: insightface cannot read it
    blobs = [(lfw / n / f"{n}_{k:04d}.jpg").read_bytes()
             for n, k in (("s1", 1), ("s1", 2), ("s1", 1), ("s2", 2))]
    raw.write_bytes(pickle.dumps((blobs, [True, False])))
    with pytest.raises(RuntimeError):
        insightface_load_bin(raw)
    info = data.pack.write_bin(tmp_path / "pairs.txt", lfw, tmp_path / "v.bin")
    assert info["size"] == [112, 112] and info["resized"] == 20
    theirs = insightface_load_bin(tmp_path / "v.bin")
    ours = data.load(f"bin:{tmp_path / 'v.bin'}").test.images
    assert ours.shape == (20, 3, 112, 112) and torch.equal(theirs, ours.float())
    # the face is the source image resized: close to a direct resize of the original
    direct = np.asarray(Image.open(ORL_SMALL / "s1" / "1.jpg").convert("RGB")
                        .resize((112, 112), Image.BILINEAR), dtype=np.float32)
    assert np.abs(theirs[0].numpy().transpose(1, 2, 0) - direct).mean() < 3.0
    # another size asked
    data.pack.write_bin(tmp_path / "pairs.txt", lfw, tmp_path / "w.bin", size="96x96")
    assert insightface_load_bin(tmp_path / "w.bin", (96, 96)).shape == (20, 3, 96, 96)


def test_a_property_written_by_rec2shufrec_is_read(tmp_path):
    images = [(0, png(10)), (0, png(20)), (1, png(30)), (1, png(40))]
    path = write_hand_rec(tmp_path, images, 2)
    # insightface's rec2shufrec.py: "num_classes,h,w", then the image count and "shuffled"
    (tmp_path / "property").write_text("2,5,6\n4\nshuffled\n")
    assert recordio.read_property(tmp_path / "property") == (2, 5, 6)
    assert data.pack.summarise(path)["property"] == (2, 5, 6)
    coll = recordio_set(path)
    assert coll.names == ["0", "1"] and len(coll) == 4
    (tmp_path / "property").write_text("two,5,6\n4\n")
    with pytest.raises(ValueError, match="first line 'two,5,6' is not "
                                         "'num_classes,height,width'"):
        recordio.read_property(tmp_path / "property")


def test_a_rec_without_its_idx_is_indexed_by_one_scan(tmp_path, caplog):
    data.pack.pack_folder(ORL_SMALL, tmp_path / "train")
    written = recordio.read_index(tmp_path / "train.idx")
    opts = "?val=0.25&test=0.25&pairs=100&stream=no"
    with_idx = data.load(f"rec:{tmp_path / 'train.rec'}{opts}", seed=0)
    (tmp_path / "train.idx").unlink()
    assert recordio.scan_index(tmp_path / "train.rec") == written
    with caplog.at_level("WARNING"):
        without = data.load(f"rec:{tmp_path / 'train.rec'}{opts}", seed=0)
    assert len(written) == 1 + 80 + 8  # header, 80 images, 8 identity records
    assert "no train.idx beside it; built the index by scanning the file once (89 records" \
        in caplog.text
    assert torch.equal(with_idx.train.images, without.train.images)
    assert torch.equal(with_idx.train.labels, without.train.labels)
    assert torch.equal(with_idx.test.pairs, without.test.pairs)
    # a record split at embedded magics (parts 1, 2, 3) is one record; a damaged file refused
    magic = struct.pack("<I", MAGIC)
    parts = recordio.encode_record(b"abcd" + magic + b"efgh" + magic + b"xy")
    blob = hand_record(b"first") + parts + hand_record(b"last")
    (tmp_path / "s.rec").write_bytes(blob)
    assert recordio.scan_index(tmp_path / "s.rec") == {
        0: 0, 1: len(hand_record(b"first")), 2: len(hand_record(b"first")) + len(parts)}
    (tmp_path / "s.rec").write_bytes(blob[:-3])
    with pytest.raises(ValueError, match="the last record is truncated"):
        recordio.scan_index(tmp_path / "s.rec")
    (tmp_path / "s.rec").write_bytes(b"junk" + blob)
    with pytest.raises(ValueError, match="bad magic 0x6b6e756a at offset 0"):
        recordio.scan_index(tmp_path / "s.rec")
