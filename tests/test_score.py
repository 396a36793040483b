"""`wit score`: our batched scores equal open_clip's own encode_image/encode_text cosine; bad
images become score_error rows; finished shards are skipped on a rerun; Spark mode agrees."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from shardkit import jpeg, write_shards

import schemas
from pipeline.config import load_config
from pipeline.score import Scorer, list_shards, run_score


def reference_scores(scorer: Scorer, images: list[bytes], texts: list[str]) -> np.ndarray:
    """open_clip's own path: PIL → preprocess → encode_image; tokenizer → encode_text; cosine."""
    model = scorer.model
    x = torch.stack([scorer.preprocess(Image.open(io.BytesIO(b))) for b in images])
    with torch.no_grad():
        img = model.encode_image(x, normalize=True)
        txt = model.encode_text(scorer.tokenizer(texts), normalize=True)
    return (img * txt).sum(-1).numpy()


def read_scores(folder) -> dict[str, dict]:
    t = pq.read_table([str(p) for p in sorted(folder.glob("*.parquet"))])
    schemas.validate(t, schemas.SCORES)
    return {r["key"]: r for r in t.to_pylist()}


def cfg_for(tmp_path, **score):
    base = {"model": "wit-tiny", "device": "cpu", "batch_size": 4, "num_workers": 0}
    base.update(score)
    return load_config(overrides={"output_dir": str(tmp_path), **{f"score.{k}": v for k, v in base.items()}})


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Scorer("wit-tiny", None, "cpu")


def synthetic_samples():
    good = jpeg(80, 60, 1)
    samples = [{"text": f"a picture number {i} of noise", "image": jpeg(40 + 7 * i, 50 + 3 * i, i)} for i in range(14)]
    samples[3] = {"text": "a png image", "image": jpeg(64, 64, 99, fmt="PNG"), "ext": "png"}
    samples[5] = {"text": "corrupt bytes", "image": b"\xff\xd8\xff\xe0 this is not a jpeg at all"}
    samples[8] = {"text": "truncated jpeg", "image": good[: len(good) // 2]}
    samples[11] = {"text": "failed download", "image": None}
    samples[12] = {"text": "grey image", "image": jpeg(30, 90, 5, fmt="PNG")}
    return samples


@pytest.mark.parametrize("workers", [0, 2])
def test_parity_and_bad_images(tmp_path, tiny, workers):
    samples = synthetic_samples()
    rows = write_shards(tmp_path / "shards", samples, shard_size=5)
    cfg = cfg_for(tmp_path, num_workers=workers)
    from pipeline import score as score_mod

    score_mod._SCORERS.clear()
    score_mod._SCORERS[(cfg.score.model, None, "cpu", "auto")] = tiny
    stats = run_score(cfg)
    got = read_scores(tmp_path / "scores")
    assert (tmp_path / "scores" / "_SUCCESS").exists()
    downloaded = [(r, s) for r, s in zip(rows, samples, strict=True) if s["image"] is not None]
    assert set(got) == {r["key"] for r, _ in downloaded}  # one row per sample in the tars
    bad = {"corrupt bytes", "truncated jpeg"}
    for r, s in downloaded:
        g = got[r["key"]]
        assert g["uid"] == r["uid"] and g["shard"] == r["shard"]
        if s["text"] in bad:
            assert g["clip_score"] is None and g["score_error"] == "decode_error"
        else:
            assert g["score_error"] is None
    ok = [(r, s) for r, s in downloaded if s["text"] not in bad]
    ref = reference_scores(tiny, [s["image"] for _, s in ok], [s["text"] for _, s in ok])
    ours = np.array([got[r["key"]]["clip_score"] for r, _ in ok])
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert stats["drops"] == {"decode_error": 2} and stats["output_rows"] == len(ok)


def _odd_jpegs() -> list[dict]:
    """JPEGs at the edges of the device path: CMYK and one that looks complete (start and end
    markers) but that no decoder reads (both left to PIL), greyscale, and one with an EXIF rotation
    tag (open_clip's PIL path ignores it, so no decoder may apply it)."""
    rng = np.random.default_rng(7)
    cmyk, grey, rotated = io.BytesIO(), io.BytesIO(), io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 56, 4), dtype=np.uint8), "CMYK").save(cmyk, "JPEG")
    Image.fromarray(rng.integers(0, 256, (52, 36), dtype=np.uint8), "L").save(grey, "JPEG")
    Image.fromarray(rng.integers(0, 256, (30, 70, 3), dtype=np.uint8)).save(rotated, "JPEG", exif=rotated_exif())
    return [{"text": "a cmyk photo", "image": cmyk.getvalue()}, {"text": "a grey photo", "image": grey.getvalue()},
            {"text": "a photo tagged as rotated", "image": rotated.getvalue()},
            {"text": "complete but corrupt", "image": b"\xff\xd8\xff\xdb garbage garbage \xff\xd9"}]


def rotated_exif() -> bytes:
    """EXIF saying "rotate 90° to display" (orientation 6), as phone photos carry."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def test_which_jpegs_the_device_may_decode(monkeypatch):
    """One rule for scoring and training: complete RGB or greyscale JPEGs within PIL's bomb limit."""
    from pipeline.image_decode import jpeg_for_device

    good = jpeg(64, 48, 1)
    odd = {x["text"]: x["image"] for x in _odd_jpegs()}
    assert jpeg_for_device(good) == (64, 48)
    assert jpeg_for_device(odd["a grey photo"]) is not None
    assert jpeg_for_device(odd["a photo tagged as rotated"]) == (70, 30)  # as stored, not as displayed
    assert jpeg_for_device(odd["a cmyk photo"]) is None  # the workers decode CMYK
    assert jpeg_for_device(good[: len(good) // 2]) is None  # truncated: PIL judges it
    assert jpeg_for_device(odd["complete but corrupt"]) is None
    assert jpeg_for_device(jpeg(64, 64, 2, fmt="PNG")) is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64×48 = 3,072 > 2×1,000: a "bomb" now
    assert jpeg_for_device(good) is None


def pil_written_jpegs(seed: int, max_side: int):
    """(label, components, bytes) for every kind of JPEG PIL writes: progressive, optimised,
    subsampled or not, with EXIF (a rotation tag) or ICC segments, restart markers; RGB, greyscale, CMYK."""
    rng = np.random.default_rng(seed)
    kinds = [{}, {"progressive": True}, {"optimize": True}, {"subsampling": 0}, {"subsampling": 1},
             {"subsampling": 2, "quality": 30}, {"quality": 100}, {"exif": rotated_exif() + b"x" * 300},
             {"icc_profile": b"\0" * 5000}, {"restart_marker_blocks": 1}]
    for kw in kinds:
        for mode, bands in (("RGB", 3), ("L", 1), ("CMYK", 4)):
            w, h = int(rng.integers(1, max_side)), int(rng.integers(1, max_side))
            arr = rng.integers(0, 256, (h, w, bands) if bands > 1 else (h, w), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr, mode).save(buf, "JPEG", **kw)
            yield f"{mode} {kw}"[:90], bands, buf.getvalue()


def test_jpeg_size_reads_the_frame_header_as_pil_does():
    """The cheap header walk agrees with PIL on every kind of JPEG PIL writes."""
    from pipeline.image_decode import jpeg_size

    for label, bands, data in pil_written_jpegs(3, 700):
        with Image.open(io.BytesIO(data)) as im:
            assert jpeg_size(data) == (*im.size, bands, 8), label
    assert jpeg_size(b"\xff\xd8\xff\xda\x00\x02") is None  # a scan before any frame header
    assert jpeg_size(b"\xff\xd8\xff\xc0\x00") is None  # cut inside the frame header
    assert jpeg_size(b"\xff\xd8junk") is None
    good, rng = jpeg(64, 48, 1), np.random.default_rng(3)
    for _ in range(500):  # damaged headers: an answer or None, never an error
        bad = bytearray(good[:rng.integers(2, 700)])
        for at in rng.integers(2, len(bad), size=4) if len(bad) > 2 else []:
            bad[at] = int(rng.integers(0, 256))
        header = jpeg_size(bytes(bad))
        assert header is None or len(header) == 4


def _pil_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def test_worker_decoding_gives_pils_pixels(monkeypatch):
    """gpu_preprocess=resize workers decode JPEGs with torchvision, not PIL: the pixels must be PIL's,
    for every kind of JPEG PIL writes (CMYK and non-JPEGs take PIL itself); bad images still raise."""
    from pipeline import image_decode
    from pipeline.image_decode import decode_full

    by_pil = []
    pil = image_decode.decode_image
    monkeypatch.setattr(image_decode, "decode_image", lambda data, *a: by_pil.append(data) or pil(data, *a))
    for label, bands, data in pil_written_jpegs(11, 400):
        got = decode_full(data)
        assert got.dtype == np.uint8 and np.array_equal(got, _pil_pixels(data)), label
        assert (data in by_pil) == (bands == 4), label  # torchvision decoded all but CMYK
    png = jpeg(30, 20, 4, fmt="PNG")
    assert np.array_equal(decode_full(png), _pil_pixels(png))
    good = jpeg(80, 60, 1)
    for bad in (good[: len(good) // 2], b"\xff\xd8\xff\xdb garbage garbage \xff\xd9", b"not an image"):
        with pytest.raises(Exception):  # noqa: B017 - whatever PIL raises: one decode_error drop
            decode_full(bad)


@pytest.mark.parametrize(("where", "threads", "workers"), [("resize", None, 0), ("decode", 0, 2), ("decode", 2, 0), ("decode", None, 2)])
def test_device_preprocessing_paths_agree_with_the_exact_path(tmp_path, tiny, where, threads, workers):
    """Decoding/resizing on the device (here torchvision's CPU kernels stand in for the GPU's), with
    or without CPU decoding threads beside it, scores the same pairs and drops the same bad images
    as exact PIL."""
    from pipeline.score import score_shards

    samples = synthetic_samples() + _odd_jpegs()
    write_shards(tmp_path / "shards", samples, shard_size=6)
    shards = list_shards(str(tmp_path / "shards"))
    try:
        tiny.set_gpu_preprocess("none")
        exact = score_shards(tiny, shards, str(tmp_path / "exact"), batch_size=4, num_workers=0)
        tiny.set_gpu_preprocess(where, threads)
        counts = score_shards(tiny, shards, str(tmp_path / where), batch_size=4, num_workers=workers)
    finally:
        tiny.set_gpu_preprocess("none")
    decoded_by = counts.pop("jpegs_decoded_by", None)
    assert tiny.decoder is None  # the scorer's own decoder lives for one pass only
    assert counts == exact and exact["errors"] == 3  # corrupt, truncated, complete-but-corrupt
    if where == "decode":  # every JPEG the device path may take went to one side or the other
        from pipeline.image_decode import jpeg_for_device

        eligible = sum(1 for x in samples if x["image"] and jpeg_for_device(x["image"]) is not None)
        assert sum(decoded_by.values()) == eligible
        if threads == 0:
            assert decoded_by["cpu_threads"] == 0
    a, b = read_scores(tmp_path / "exact"), read_scores(tmp_path / where)
    assert a.keys() == b.keys()
    for key, row in a.items():
        assert row["score_error"] == b[key]["score_error"], key
        if row["clip_score"] is not None:  # torch's antialiased bicubic vs PIL's: a small difference
            assert abs(row["clip_score"] - b[key]["clip_score"]) < 5e-3, key


def test_hybrid_decoder_splits_work_and_keeps_order():
    """CPU threads decode what they started, the device what no thread had started; every image
    comes back in order with PIL's pixels, and one no decoder reads is None, on either side."""
    from concurrent.futures import Future

    from pipeline.gpu_feed import HybridJpegDecoder
    from pipeline.image_decode import pack_blobs, unpack_blobs

    raw = [jpeg(20 + 3 * i, 30 + (i % 4), i) for i in range(10)]
    raw[4] = raw[7] = b"\xff\xd8 not a jpeg \xff\xd9"
    blobs = unpack_blobs(pack_blobs(raw))
    want = [None if i in (4, 7) else np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).transpose(2, 0, 1)
            for i, b in enumerate(raw)]

    def check(out):
        assert len(out) == len(raw)
        for o, w in zip(out, want, strict=True):
            assert (o is None) if w is None else np.array_equal(o.numpy(), w)

    cpu = torch.device("cpu")
    for threads in (0, 2):
        dec = HybridJpegDecoder(cpu, threads, chunk=3)
        started = dec.begin(blobs)
        if threads:  # the threads got to every chunk (done before finish)
            for f in started[1]:
                f.result()
        check(dec.finish(started))
        assert dec.decoded == ({"cpu_threads": 0, "device": 10} if threads == 0 else {"cpu_threads": 10, "device": 0})
        dec.close()
    dec = HybridJpegDecoder(cpu, 1, chunk=3)
    started = dec.begin(blobs)
    for f in started[1]:
        f.result()
    chunks = list(started[1])
    chunks[1] = chunks[3] = Future()  # chunks no thread has picked up yet: the device takes them
    check(dec.finish((started[0], chunks)))
    assert dec.decoded == {"cpu_threads": 6, "device": 4}
    dec.close()


def test_begun_calls_begin_ahead_and_keeps_order():
    from pipeline.gpu_feed import begun, prefetch

    calls = []
    got = []
    for b in begun(range(5), calls.append, lookahead=2):
        got.append((b, list(calls)))
    assert [b for b, _ in got] == list(range(5))
    assert got[0][1] == [0, 1, 2] and got[2][1] == [0, 1, 2, 3, 4]  # begun 2 batches before use
    out = list(prefetch(range(4), lambda b: b * 10, torch.device("cpu"), begin=lambda b: None, lookahead=3))
    assert out == [(0, 0), (1, 10), (2, 20), (3, 30)]


def test_truncated_tar_and_embeddings(tmp_path, tiny):
    samples = [{"text": f"caption {i}", "image": jpeg(50, 50, i)} for i in range(8)]
    write_shards(tmp_path / "shards", samples, shard_size=8)
    tar = tmp_path / "shards" / "00000.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: int(len(data) * 0.6)])  # a download killed mid-write
    out = tmp_path / "scores"
    from pipeline.score import score_shards

    counts = score_shards(tiny, list_shards(str(tmp_path / "shards")), str(out), batch_size=3, num_workers=0, save_embeddings=True)
    got = read_scores(out)
    assert 0 < counts["scored"] < 8 and len(got) == counts["scored"] + counts["errors"]
    r = next(iter(got.values()))
    ie, te = np.frombuffer(r["image_embedding"], "<f2"), np.frombuffer(r["text_embedding"], "<f2")
    assert ie.shape == (128,) and abs(np.linalg.norm(ie.astype(float)) - 1) < 1e-2
    assert abs(float(ie.astype(float) @ te.astype(float)) - r["clip_score"]) < 5e-3


def test_resume_skips_finished_shards(tmp_path, tiny):
    samples = [{"text": f"caption {i}", "image": jpeg(48, 48, i)} for i in range(12)]
    write_shards(tmp_path / "shards", samples, shard_size=4)
    cfg = cfg_for(tmp_path)
    from pipeline import score as score_mod

    score_mod._SCORERS[(cfg.score.model, None, "cpu", "auto")] = tiny
    run_score(cfg)
    out = tmp_path / "scores"
    first = read_scores(out)
    # Simulate a killed run: shard 1 never finished, a temporary was left behind, no _SUCCESS.
    (out / "00001.parquet").unlink()
    (out / "_SUCCESS").unlink()
    (out / "00002.parquet.tmp-deadbeef").write_bytes(b"partial")
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("0000[02].parquet")}
    stats = run_score(cfg)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("0000[02].parquet")} == mtimes
    assert stats["extra"]["shards_scored_now"] == 1 and not list(out.glob("*.tmp-*"))
    again = read_scores(out)
    assert again.keys() == first.keys()
    assert all(abs(again[k]["clip_score"] - first[k]["clip_score"]) < 1e-6 for k in first)
    assert run_score(cfg)["output_rows"] == 12  # complete: skipped


def test_stats_say_which_side_decoded_the_jpegs(tmp_path, tiny):
    """With gpu_preprocess=decode, _stats.json records how many JPEGs the CPU threads and the device
    decoded (together: every JPEG the device path took); other paths record nothing."""
    samples = [{"text": f"caption {i}", "image": jpeg(40, 40 + i, i)} for i in range(9)]
    samples.append({"text": "a png", "image": jpeg(30, 30, 1, fmt="PNG"), "ext": "png"})  # decoded by the workers
    write_shards(tmp_path / "shards", samples, shard_size=5)
    from pipeline import score as score_mod

    try:
        cfg = cfg_for(tmp_path, gpu_preprocess="decode", decode_threads=1)
        score_mod._SCORERS[(cfg.score.model, None, "cpu", "auto")] = tiny
        stats = run_score(cfg)
    finally:
        tiny.set_gpu_preprocess("none")
    by = stats["extra"]["jpegs_decoded_by_this_run"]
    assert set(by) == {"cpu_threads", "device"} and sum(by.values()) == 9 and stats["output_rows"] == 10
    cfg = cfg_for(tmp_path / "exact")
    score_mod._SCORERS[(cfg.score.model, None, "cpu", "auto")] = tiny
    write_shards(tmp_path / "exact" / "shards", samples, shard_size=5)
    assert run_score(cfg)["extra"]["jpegs_decoded_by_this_run"] is None


def coco_samples(shared_data, n=16):
    root = shared_data / "coco_mini"
    d = json.loads((root / "captions_val2017.json").read_text())
    caps = {}
    for a in d["annotations"]:
        caps.setdefault(a["image_id"], a["caption"])
    out = []
    for im in d["images"][:n]:
        p = root / "val2017" / im["file_name"]
        if p.exists() and im["id"] in caps:
            out.append({"text": caps[im["id"]], "image": p.read_bytes(), "width": im["width"], "height": im["height"]})
    return out


@pytest.mark.shared_data
def test_parity_coco_vit_b32(tmp_path, shared_data):
    """A real 224-px transform (bicubic resize of non-square photos, center crop) on COCO photos."""
    samples = coco_samples(shared_data)
    assert len(samples) >= 10
    write_shards(tmp_path / "shards", samples, shard_size=6)
    torch.manual_seed(0)
    scorer = Scorer("ViT-B-32", None, "cpu")
    from pipeline.score import score_shards

    score_shards(scorer, list_shards(str(tmp_path / "shards")), str(tmp_path / "scores"), batch_size=8, num_workers=0)
    got = read_scores(tmp_path / "scores")
    keys = sorted(got)
    ref = reference_scores(scorer, [s["image"] for s in samples], [s["text"] for s in samples])
    np.testing.assert_allclose([got[k]["clip_score"] for k in keys], ref, atol=1e-4)


@pytest.mark.shared_data
def test_worker_decoding_gives_pils_pixels_on_coco(shared_data):
    from pipeline.image_decode import decode_full

    samples = coco_samples(shared_data)
    assert len(samples) >= 10
    for s in samples:
        assert np.array_equal(decode_full(s["image"]), _pil_pixels(s["image"]))


@pytest.mark.slow
def test_spark_mode_matches_local(tmp_path, spark, tiny):
    samples = [{"text": f"caption {i}", "image": jpeg(48, 40, i)} for i in range(9)]
    rows = write_shards(tmp_path / "shards", samples, shard_size=3)
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save({"state_dict": tiny.model.state_dict()}, ckpt)  # workers load the same weights
    cfg = cfg_for(tmp_path, mode="spark", pretrained=str(ckpt))
    stats = run_score(cfg, spark=spark)
    assert stats["extra"]["shards"] == 3
    got = read_scores(tmp_path / "scores")
    ref = reference_scores(tiny, [s["image"] for s in samples], [s["text"] for s in samples])
    np.testing.assert_allclose([got[r["key"]]["clip_score"] for r in rows], ref, atol=1e-4)


def test_cli_errors_and_run(tmp_path, capsys, monkeypatch):
    from pipeline.cli import main


    assert main(["score", "-o", str(tmp_path), "--device", "cpu"]) == 2
    assert "shards folder not found" in capsys.readouterr().err
    write_shards(tmp_path / "shards", [{"text": "hello", "image": jpeg(32, 32, 0)}], shard_size=4)
    assert main(["score", "-o", str(tmp_path), "--model", "no-such-model", "--device", "cpu"]) == 2
    assert "unknown open_clip model" in capsys.readouterr().err
    rc = main(["score", "-o", str(tmp_path), "--model", "wit-tiny", "--device", "cpu", "--num-workers", "0"])
    assert rc == 0 and "[score] 1 → 1" in capsys.readouterr().out
