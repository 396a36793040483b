"""Perceptual signatures and the banded near-duplicate search: hashes as imagehash writes them, the
stored picture's signature, the Spark search against brute force, clusters, and select's three
hash rules (blocklisted, eval_overlap, near_duplicate) on real shards."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw
from shardkit import write_shards
from test_select import read_final, write_scores

import schemas
from pipeline import near_dup
from pipeline.config import DownloadConfig, load_config
from pipeline.errors import UserError
from pipeline.select import run_select


def photo(seed: int, w: int = 160, h: int = 120) -> Image.Image:
    """A smooth random picture (a 5×5 random field, upsampled): its pHash is as random as a photo's."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((5, 5, 3)) * 255).astype(np.uint8))
    return small.resize((w, h), Image.Resampling.BICUBIC)


def jpg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def resized(img, f=0.6):
    return img.resize((round(img.width * f), round(img.height * f)), Image.Resampling.LANCZOS)


def cropped(img, f=0.02):
    dx, dy = round(img.width * f), round(img.height * f)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


def watermarked(img):
    out = img.copy()
    ImageDraw.Draw(out).text((4, img.height - 14), "(c) example", fill=(255, 255, 255))
    return out


# --- signatures -----------------------------------------------------------------------------------


def test_phash_is_imagehash_in_hex_and_int64():
    import imagehash

    for seed in range(20):
        img = photo(seed)
        h = near_dup.phash_image(img)
        assert -(2**63) <= h < 2**63
        assert near_dup.to_hex(h) == str(imagehash.phash(img))
        assert near_dup.from_hex(near_dup.to_hex(h)) == h
    assert near_dup.from_hex("0xFFFFFFFFFFFFFFFF") == -1 and near_dup.to_hex(-1) == "f" * 16
    assert near_dup.hamming(0, -1) == 64 and near_dup.hamming(5, 6) == 2
    for bad in ("", "abc", "g" * 16, "1" * 17):
        with pytest.raises(ValueError):
            near_dup.from_hex(bad)


def test_stored_signature_describes_the_picture_not_its_padding():
    from pipeline.download import make_resizer

    dl = DownloadConfig()  # border mode: the picture centred in white padding
    img = photo(3, 300, 150)
    stored, w, h, ow, oh, err = make_resizer(dl)(io.BytesIO(jpg(img)))
    assert err is None and (w, h, ow, oh) == (256, 256, 300, 150)
    assert near_dup.content_box(w, h, ow, oh, "border") == (0, 64, 256, 192)
    assert near_dup.content_box(w, h, ow, oh, "center_crop") is None
    ph, grid, _ = near_dup.stored_signature(stored, w, h, ow, oh, dl.resize_mode)
    ph0, grid0, _ = near_dup.image_signature(jpg(img))
    assert near_dup.hamming(ph, ph0) <= 2 and max(abs(a - b) for a, b in zip(grid, grid0, strict=True)) <= 3
    padded, *_ = near_dup.image_signature(stored)  # the padding, hashed along, is another picture
    assert near_dup.hamming(padded, ph0) > 8
    assert len(grid) == 12 and all(0 <= v <= 255 for v in grid)


def test_copies_stay_close_and_other_pictures_far():
    base = photo(11)
    ph, grid, _ = near_dup.image_signature(jpg(base))
    for copy in (resized(base), cropped(base), watermarked(base), base):
        cp, cg, _ = near_dup.image_signature(jpg(copy, quality=40))
        assert near_dup.hamming(ph, cp) <= 8 and max(abs(a - b) for a, b in zip(grid, cg, strict=True)) <= 12
    others = [near_dup.image_signature(jpg(photo(s)))[0] for s in range(100, 140)]
    assert min(near_dup.hamming(ph, o) for o in others) > 8


def test_transparent_pixels_count_as_white_and_junk_raises():
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    buf = io.BytesIO()
    clear.save(buf, "PNG")
    assert near_dup.image_signature(buf.getvalue())[1] == [255] * 12
    with pytest.raises(OSError):  # PIL.UnidentifiedImageError
        near_dup.image_signature(b"not an image")
    assert near_dup.stored_signature_or_none(b"not an image", 10, 10, 10, 10, "border") == (None, None, None)


def test_bands_and_their_cost():
    assert near_dup.band_layout(3) == [(0, 22), (22, 21), (43, 21)]
    assert sum(w for _, w in near_dup.band_layout(9)) == 64
    assert near_dup.choose_bands(2_000, 8) == 9  # small: exhaustive
    big = near_dup.choose_bands(10**6, 8)
    assert 2 <= big < 9 and near_dup.expected_candidates(10**6, big) <= near_dup.CANDIDATES_PER_HASH
    h = np.array([-1, 0, 0x0123456789ABCDEF], dtype=np.int64)
    assert [int(b[2]) for b in near_dup.band_values_np(h, 4)] == [0xCDEF, 0x89AB, 0x4567, 0x0123]


# --- the Spark search -----------------------------------------------------------------------------


def _hash_frame(spark, ids, hashes, grids):
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField("id", T.LongType()), T.StructField("phash", T.LongType()),
                           T.StructField("colour_grid", T.ArrayType(T.ShortType()))])
    return spark.createDataFrame([(int(i), int(h), g) for i, h, g in zip(ids, hashes, grids, strict=True)], schema)


def test_search_finds_exactly_the_pairs_brute_force_finds(spark):
    rng = np.random.default_rng(0)
    n, d = 1500, 8
    h = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    for k in range(200):  # planted near-duplicates at 1..12 bits
        mask = sum(1 << int(b) for b in rng.choice(64, 1 + k % 12, replace=False))
        h[n - 1 - k] = h[k] ^ np.array(mask, dtype=np.uint64).view(np.int64)
    grids = [[int(v) for v in rng.integers(0, 256, 12)] if i % 7 else None for i in range(n)]
    for k in range(0, 200, 3):  # every third copy keeps its source's colours (within 12)
        if grids[k] is not None:
            grids[n - 1 - k] = [min(255, v + 5) for v in grids[k]]
    dist = near_dup.popcount64(h[:, None] ^ h[None, :])

    def colours_ok(i, j):
        return grids[i] is None or grids[j] is None or max(abs(a - b) for a, b in zip(grids[i], grids[j], strict=True)) <= 12

    want = {(i, j) for i, j in zip(*np.nonzero(np.triu(dist <= d, 1)), strict=True) if colours_ok(i, j)}
    assert 40 < len(want) < 200
    df = _hash_frame(spark, range(n), h, grids)
    got = near_dup.match_pairs(df, df, d, d + 1, 12, same=True).collect()
    assert {(r.left_id, r.right_id) for r in got} == want and len(got) == len(want)  # each pair once
    assert all(r.dist == dist[r.left_id, r.right_id] for r in got)
    fewer = {(r.left_id, r.right_id) for r in near_dup.match_pairs(df, df, d, 3, 12, same=True).collect()}
    assert fewer <= want and {p for p in want if dist[p] <= 2} <= fewer  # pigeonhole: exhaustive below 3 bands

    # Data × reference: the first 100 rows against the last 100.
    left, right = _hash_frame(spark, range(100), h[:100], grids[:100]), _hash_frame(spark, range(n - 100, n), h[-100:], grids[-100:])
    cross = {(r.left_id, r.right_id) for r in near_dup.match_pairs(left, right, d, d + 1, None).collect()}
    assert cross == {(i, j) for i in range(100) for j in range(n - 100, n) if dist[i, j] <= d}


def test_min_label_propagation_finds_components(spark):
    from pyspark.sql import Row

    edges = spark.createDataFrame([Row(a=a, b=b) for a, b in [("e", "d"), ("d", "c"), ("c", "b"), ("b", "a"),
                                                                ("x", "y"), ("x", "z")]])
    labels = spark.createDataFrame([Row(id=i, label=(i if i != "z" else "0")) for i in "abcdexyz"])
    got, rounds = near_dup.propagate_min_label(edges, labels)
    assert dict(got.collect()) == {"a": "a", "b": "a", "c": "a", "d": "a", "e": "a", "x": "0", "y": "0", "z": "0"}
    assert 4 <= rounds <= 6  # the chain's length, plus the round that sees no change


# --- select ---------------------------------------------------------------------------------------


def add_signatures(shards, rows, images):
    """Give the shards' metadata the signatures download would have written."""
    for path in sorted(shards.glob("*.parquet")):
        t = pq.read_table(path)
        keys = t.column("key").to_pylist()
        sigs = [near_dup.image_signature(images[k]) if images.get(k) else (None, None, None) for k in keys]
        t = t.set_column(t.schema.get_field_index("phash"), "phash", pa.array([s[0] for s in sigs], pa.int64()))
        t = t.set_column(t.schema.get_field_index("colour_grid"), "colour_grid",
                         pa.array([s[1] for s in sigs], t.schema.field("colour_grid").type))
        t = t.set_column(t.schema.get_field_index("copy_thumb"), "copy_thumb", pa.array([s[2] for s in sigs], pa.binary()))
        pq.write_table(t, path)


def test_select_drops_blocklisted_eval_copies_and_near_duplicates(spark, tmp_path):
    big = {"width": 400, "height": 300}
    a, b, c, e1, e2, f, g = (photo(s) for s in (1, 2, 3, 4, 5, 6, 7))
    samples = [
        ("a original", a, 0.30), ("a resized", resized(a), 0.50), ("a requality", a, 0.20),  # keep "a resized"
        ("a watermarked", watermarked(a), 0.10),
        ("b", b, 0.40), ("b requality", b, 0.39),
        ("c alone", c, 0.35),
        ("e1 copy", resized(e1, 1.3), 0.60), ("e2 copy", cropped(e2), 0.60),  # eval_overlap (folder, tar)
        ("f listed", f, 0.70), ("g near listed", resized(g, 0.8), 0.70),  # blocklisted (exact, near)
        ("no hash", photo(8), 0.33),
        ("h sha listed", photo(9), 0.80),  # blocklisted by its sha256 alone (it has no pHash)
    ]
    quality = {"b requality": 85, "a requality": 40}
    shard_samples = [{"text": t, "image": jpg(img, quality.get(t, 90)), **big} for t, img, _ in samples]
    rows = write_shards(tmp_path / "shards", shard_samples, shard_size=5)
    images = {r["key"]: s["image"] for r, s in zip(rows, shard_samples, strict=True) if s["text"] not in ("no hash", "h sha listed")}
    add_signatures(tmp_path / "shards", rows, images)
    write_scores(tmp_path / "scores", rows, {r["key"]: sc for r, (_, _, sc) in zip(rows, samples, strict=True)})

    evals = tmp_path / "eval_folder" / "cls"
    evals.mkdir(parents=True)
    (evals / "0.jpg").write_bytes(jpg(e1))
    (evals / "bad.png").write_bytes(b"not a png")
    (tmp_path / "eval_folder" / "classes.json").write_text("[]")
    with tarfile.open(tmp_path / "eval.tar", "w") as tf:
        for key, data in (("000", jpg(e2)), ("001", jpg(photo(99)))):
            ti = tarfile.TarInfo(f"{key}.jpg")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    block = tmp_path / "block.txt"
    fh = near_dup.image_signature(jpg(f))[0]
    gh = near_dup.image_signature(jpg(g))[0]
    h_sha = next(r["sha256"] for r in rows if r["text"] == "h sha listed")
    block.write_text(f"# listed by hand\n{near_dup.to_hex(fh)}\n\n0x{near_dup.to_hex(gh).upper()}  g's original\n"
                     f"{h_sha.upper()}  # an exact copy\n")

    cfg = load_config(overrides={"output_dir": str(tmp_path), "select.top_fraction": 1.0, "select.min_side": 0,
                                 "select.decontaminate": [str(tmp_path / "eval_folder"), str(tmp_path / "eval.tar")],
                                 "select.blocklist_hashes": [str(block)]})
    stats = run_select(cfg, spark)
    assert stats["drops"] == {"near_duplicate": 4, "eval_overlap": 2, "blocklisted": 3}
    manifest, _ = read_final(tmp_path / "final")
    assert sorted(m["text"] for m in manifest) == ["a resized", "b", "c alone", "no hash"]
    extra = stats["extra"]
    assert extra["eval_overlap"] == {str(tmp_path / "eval_folder"): 1, str(tmp_path / "eval.tar"): 1}
    assert extra["eval_images"] == {str(tmp_path / "eval_folder"): 1, str(tmp_path / "eval.tar"): 2}
    assert extra["eval_unreadable"] == {str(tmp_path / "eval_folder"): 1, str(tmp_path / "eval.tar"): 0}
    assert extra["blocklist"]["hashes"] == 2 and extra["blocklist"]["sha256s"] == 1
    assert extra["blocklist"]["matched"] == 3 and extra["blocklist"]["matched_exact"] == 1
    nd = extra["near_dup"]
    assert nd["clusters"] == 2 and nd["dropped"] == 4 and nd["unhashed"] == 1 and nd["exhaustive"]
    assert nd["distance"] == 12 and nd["colour_tolerance"] is None and nd["copy_confirm"]
    assert nd["unconfirmable"] == 0 and extra["eval_unconfirmable"] == 0
    assert all(m["phash"] is not None for m in manifest if m["text"] != "no hash")
    json.dumps(stats)  # _stats.json material
    dropped = pq.read_table(tmp_path / "final" / "dropped.parquet")
    schemas.validate(dropped, schemas.SELECT_DROPPED)
    text_of = {r["key"]: r["text"] for r in rows}
    why = {text_of[d["source_key"]]: (d["drop_reason"], text_of.get(d["duplicate_of"])) for d in dropped.to_pylist()}
    assert why == {"a original": ("near_duplicate", "a resized"), "a requality": ("near_duplicate", "a resized"),
                   "a watermarked": ("near_duplicate", "a resized"), "b requality": ("near_duplicate", "b"),
                   "e1 copy": ("eval_overlap", None), "e2 copy": ("eval_overlap", None),
                   "f listed": ("blocklisted", None), "g near listed": ("blocklisted", None),
                   "h sha listed": ("blocklisted", None)}

    # Off switches: nothing hash-based is dropped.
    off = load_config(overrides={"output_dir": str(tmp_path), "select.top_fraction": 1.0, "select.near_dup": False})
    assert run_select(off, spark, overwrite=True)["drops"] == {}


def test_pairs_without_a_readable_thumbnail_are_counted_and_kept(spark, tmp_path, capfd):
    """Shards written before copy thumbnails were kept (none) or with a damaged one: the hash proposes the
    pair, copy detection cannot compare it; it is counted and said, and both pictures stay."""
    a, b = photo(1), photo(2)
    samples = [("a", a), ("a copy, no thumbnail", resized(a)), ("b", b), ("b copy, damaged thumbnail", resized(b))]
    shard_samples = [{"text": t, "image": jpg(img), "width": 400, "height": 300} for t, img in samples]
    rows = write_shards(tmp_path / "shards", shard_samples, shard_size=10)
    add_signatures(tmp_path / "shards", rows, {r["key"]: s["image"] for r, s in zip(rows, shard_samples, strict=True)})
    broken = {rows[1]["key"]: None, rows[3]["key"]: b"\xff\xd8\xff not a thumbnail"}
    for path in sorted((tmp_path / "shards").glob("*.parquet")):
        t = pq.read_table(path)
        thumbs = [broken.get(k, th) for k, th in zip(t.column("key").to_pylist(), t.column("copy_thumb").to_pylist(), strict=True)]
        pq.write_table(t.set_column(t.schema.get_field_index("copy_thumb"), "copy_thumb", pa.array(thumbs, pa.binary())), path)
    write_scores(tmp_path / "scores", rows, {r["key"]: 0.5 for r in rows})
    (tmp_path / "eval" / "cls").mkdir(parents=True)
    (tmp_path / "eval" / "cls" / "b.jpg").write_bytes(jpg(b))

    cfg = load_config(overrides={"output_dir": str(tmp_path), "select.top_fraction": 1.0, "select.min_side": 0,
                                 "select.decontaminate": [str(tmp_path / "eval")]})
    stats = run_select(cfg, spark)
    assert stats["drops"] == {"eval_overlap": 1}  # "b" itself; its copy could not be compared
    assert stats["extra"]["eval_unconfirmable"] == 1 and stats["extra"]["near_dup"]["unconfirmable"] == 1
    manifest, _ = read_final(tmp_path / "final")
    assert sorted(m["text"] for m in manifest) == ["a", "a copy, no thumbnail", "b copy, damaged thumbnail"]
    err = capfd.readouterr().err
    assert "1 eval_overlap candidate pair(s) could not be compared" in err
    assert "1 near_duplicate candidate pair(s) could not be compared" in err


def test_bad_lists_and_sets_are_clear_errors(spark, tmp_path):
    rows = write_shards(tmp_path / "shards", [{"text": "x", "image": jpg(photo(1)), "width": 300, "height": 300}])
    write_scores(tmp_path / "scores", rows, {rows[0]["key"]: 0.3})
    bad = tmp_path / "bad.txt"
    bad.write_text("0123456789abcdef\n" + "a" * 64 + "\nnot-a-hash\n")
    cfg = load_config(overrides={"output_dir": str(tmp_path), "select.blocklist_hashes": [str(bad)]})
    with pytest.raises(UserError, match="line 3"):
        run_select(cfg, spark)
    empty = tmp_path / "empty"
    empty.mkdir()
    for sets, match in (([str(tmp_path / "nowhere")], "does not exist"), ([str(empty)], "no images")):
        cfg = load_config(overrides={"output_dir": str(tmp_path), "select.decontaminate": sets})
        with pytest.raises(UserError, match=match):
            run_select(cfg, spark, overwrite=True)
