"""Copy detection (pipeline/copy_detect.py) on planted copies and look-alikes, and on real photographs.

Every image goes through the signature download computes (near_dup.image_signature), and pairs
are judged at the configured thresholds (select.copy_*).
"""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline import near_dup
from pipeline.config import SelectConfig
from pipeline.copy_detect import CopyThresholds, copy_scores, is_copy, thumbnail
from pipeline.sample_web import scenes

SEL = SelectConfig()
THRESHOLDS = CopyThresholds.of(SEL)


def _copy(a: bytes, b: bytes) -> bool:
    return is_copy(near_dup.image_signature(a)[2], near_dup.image_signature(b)[2], THRESHOLDS)


def test_identical_is_zero_and_bad_thumbnails_are_errors_or_unconfirmed():
    img = Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8))
    t = thumbnail(img)
    assert all(r[:2] == (0.0, 0.0) and r[2] == pytest.approx(1.0) for r in copy_scores(t, t))
    assert not is_copy(t, None, CopyThresholds(255, 255, 255, 0))
    with pytest.raises(ValueError, match="not a copy thumbnail"):
        copy_scores(t, b"short")


def test_planted_copies_are_confirmed_and_look_alikes_are_not():
    """The sample web's own kinds: every copy kind (scenes.COPY_KINDS) against its original, every
    look-alike kind (scenes.LOOK_ALIKE_KINDS) against the picture it resembles."""
    rng = random.Random(7)
    found = {k: [] for k in scenes.COPY_KINDS}
    merged = {k: [] for k in scenes.LOOK_ALIKE_KINDS}
    for _ in range(25):
        scene = scenes.random_scene(rng)
        w = rng.choice([64, 96, 128, 160, 192])
        h = w if rng.random() < 0.7 else w * 3 // 4
        original = scenes.encode(scenes.render(scene, w, h), rng.choice(["jpg", "png", "webp"]))
        for kind in scenes.COPY_KINDS:
            found[kind].append(_copy(original, scenes.copy_image(original, kind, rng)[0]))
        for kind in scenes.LOOK_ALIKE_KINDS:
            other = scenes.encode(scenes.render(scenes.look_alike(scene, kind, rng), w, h), "jpg")
            merged[kind].append(_copy(original, other))
    recall = {k: float(np.mean(v)) for k, v in found.items()}
    wrong = {k: float(np.mean(v)) for k, v in merged.items()}
    # Measured (seed 7): copies 1.00 but cropped 0.96, cropped_hard, overlaid and reencoded_hard 0.92 (before the
    # residual-scaled peak: overlaid and reencoded_hard 0.92, the rest 1.00); look-alikes same_background 0,
    # same_object 0, same_layout 0.04 (0.08 before: a small shape swapped for another of the same colour).
    assert min(recall.values()) >= 0.85 and np.mean(list(recall.values())) >= 0.95, recall
    assert wrong["same_object"] == 0.0 and wrong["same_background"] <= 0.05 and wrong["same_layout"] <= 0.15, wrong

def test_thumbnail_keeps_the_aspect_ratio_and_a_stretched_picture_is_no_copy():
    """The thumbnail squares the picture; its JPEG comment keeps the shape, so a crop can only line up
    a copy of the other's aspect ratio: a square picture and the same picture stretched to 4:3 (beyond
    any crop of MAX_CROP a side) are not a copy, while a 4:3 crop of it is. A thumbnail without the
    comment (written before it was kept) still compares, with any crop."""
    from pipeline.copy_detect import read_thumbnail

    scene = scenes.Scene("diamond", "black", "brown", 1, "medium", ((0.5, 0.5, 0.2, 0.0),))
    square = scenes.render(scene, 96, 96)
    t = thumbnail(square)
    assert read_thumbnail(t)[1] == pytest.approx(1.0) and read_thumbnail(thumbnail(square.resize((96, 72))))[1] == pytest.approx(4 / 3, abs=1e-4)
    stretched = near_dup.image_signature(_jpg(square.resize((128, 96))))[2]
    cropped = near_dup.image_signature(_jpg(square.crop((0, 6, 96, 90))))[2]  # 96×84: 6 % off top and bottom
    assert not is_copy(t, stretched, THRESHOLDS)
    assert is_copy(t, cropped, THRESHOLDS)
    bare = io.BytesIO()
    Image.fromarray(np.asarray(read_thumbnail(stretched)[0])).save(bare, "JPEG", quality=95, subsampling=0)  # no comment
    assert read_thumbnail(bare.getvalue())[1] is None and is_copy(t, bare.getvalue(), THRESHOLDS)
    for comment in (b"aspect=nan", b"aspect=-1", b"aspect=", b"aspect=abc", b"a caption"):  # no usable aspect: any crop
        odd = io.BytesIO()
        read_thumbnail(t)[0].save(odd, "JPEG", quality=95, subsampling=0, comment=comment)
        assert read_thumbnail(odd.getvalue())[1] is None and is_copy(t, odd.getvalue(), THRESHOLDS)


def test_the_peak_allowed_grows_with_the_residual_up_to_the_cap():
    th = CopyThresholds(max_residual=12, max_peak=50, peak_floor=28, peak_per_residual=5)
    assert th.allows(0.5, 30, 1.0) and not th.allows(0.5, 31, 1.0)  # a clean pair: one object off is a look-alike
    assert th.allows(4.0, 48, 1.0)  # a re-encoded copy: noisy everywhere, so more in one place
    assert not th.allows(8.0, 51, 1.0) and not th.allows(13.0, 10, 1.0) and not th.allows(1.0, 10, 0.5)


# --- real photographs (scikit-image's data module ships them) ---------------------------------------

PHOTOS = ["astronaut", "camera", "chelsea", "coffee", "coins", "horse", "moon", "page", "text", "rocket", "clock",
          "grass", "gravel", "brick", "immunohistochemistry", "hubble_deep_field", "colorwheel"]  # "cat" is chelsea


def _photos() -> dict[str, Image.Image]:
    data = pytest.importorskip("skimage.data", reason="scikit-image (the dev extra) ships the photos")
    out = {}
    for name in PHOTOS:
        a = getattr(data, name)()
        img = Image.fromarray(a).convert("RGB")
        img.thumbnail((400, 400))
        out[name] = img
    return out


def _jpg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **{"quality": 90, **kw})
    return buf.getvalue()


def _real_copies(img: Image.Image) -> dict[str, bytes]:
    w, h = img.size
    box = img.convert("RGBA")
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle([int(w * 0.6), int(h * 0.82), int(w * 0.97), int(h * 0.97)], fill=(255, 255, 255, 140))
    text = img.copy()
    ImageDraw.Draw(text).text((int(w * 0.05), int(h * 0.9)), "\u00a9 photos.example", fill=(255, 255, 255))
    dx, dy = int(w * 0.05), int(h * 0.05)
    return {"resized": _jpg(img.resize((w // 2, h // 2), Image.Resampling.LANCZOS)),
            "reencoded": _jpg(img, quality=30), "cropped_5pct": _jpg(img.crop((dx, dy, w - dx, h - dy))),
            "watermarked_text": _jpg(text), "watermarked_box": _jpg(Image.alpha_composite(box, layer).convert("RGB"))}


def test_real_photos_copies_found_and_no_distinct_photo_merged():
    photos = _photos()
    thumbs, owner, missed = [], [], []
    for name, img in photos.items():
        original = near_dup.image_signature(_jpg(img))[2]
        thumbs.append(original)
        owner.append(name)
        for kind, data in _real_copies(img).items():
            t = near_dup.image_signature(data)[2]
            if not is_copy(original, t, THRESHOLDS):
                missed.append((name, kind, copy_scores(original, t)))
            thumbs.append(t)
            owner.append(name)
    # Measured: 84 of 85 copies confirmed; the miss is coffee's 5 % crop (a fine texture: peak 57 at
    # the half-pixel tolerance that keeps small look-alike shapes apart, README "Near-duplicates").
    assert len(missed) <= 1, missed
    # No photo, original or copy, is confirmed as a copy of another photo's original. (Two copies of
    # different low-contrast textures that both carry the same white box can still meet: measured
    # grass–brick and moon–brick, README "Near-duplicates".)
    originals = [i for i in range(len(thumbs)) if i == 0 or owner[i] != owner[i - 1]]
    false = [(owner[i], owner[j]) for i in originals for j in range(len(thumbs))
             if owner[i] != owner[j] and is_copy(thumbs[i], thumbs[j], THRESHOLDS)]
    assert false == []


# --- one test per signal: candidate keys, the overlay rule, the sample web's same-picture rule ---------


def test_candidate_keys_propose_hard_crops_and_overlays():
    """A 5–10 % crop moves the whole picture's pHash beyond select.near_dup_distance on small flat
    pictures; the zoomed key (7.5 % off each side) meets it, and the inner key meets overlaid copies."""
    rng = random.Random(11)
    found = {"cropped_hard": [], "overlaid": []}
    whole_only = {"cropped_hard": [], "overlaid": []}
    for _ in range(30):
        scene = scenes.random_scene(rng)
        original = scenes.encode(scenes.render(scene, 128, 128), "png")
        ph, _, t = near_dup.image_signature(original)
        keys = near_dup.candidate_keys(ph, t)
        for kind in found:
            cph, _, ct = near_dup.image_signature(scenes.copy_image(original, kind, rng)[0])
            ckeys = near_dup.candidate_keys(cph, ct)
            dists = near_dup.key_distances(keys, ckeys)
            found[kind].append(min(dists) <= SEL.near_dup_distance)
            whole_only[kind].append(dists[0] <= SEL.near_dup_distance)
    assert np.mean(found["cropped_hard"]) >= 0.9 and np.mean(found["overlaid"]) >= 0.9, found
    assert np.mean(found["cropped_hard"]) > np.mean(whole_only["cropped_hard"])
    assert near_dup.candidate_keys(5, None) == [5, None, None, None] and near_dup.candidate_keys(5, b"junk") == [5, None, None, None]


def test_the_colour_key_proposes_copies_of_pictures_whose_colours_share_a_luminance():
    """Purple on red has one luminance: the pHash (luminance only) of such a picture is noise, so a
    re-encoded copy's lands 18–40 bits away; the colour key (distance from the mean colour) meets it."""
    rng = random.Random(3)
    whole, any_key = [], []
    for _ in range(8):
        s = scenes.random_scene(rng)
        scene = scenes.Scene("square", "purple", "red", s.count, s.size, s.objects)
        original = scenes.encode(scenes.render(scene, 96, 96), "png")
        keys = near_dup.candidate_keys(*near_dup.image_signature(original)[::2])
        ph, _, t = near_dup.image_signature(scenes.copy_image(original, "reencoded", rng)[0])
        dists = near_dup.key_distances(keys, near_dup.candidate_keys(ph, t))
        whole.append(dists[0] <= SEL.near_dup_distance)
        any_key.append(min(dists) <= SEL.near_dup_distance)
    assert np.mean(whole) <= 0.25 and np.mean(any_key) >= 0.75, (whole, any_key)
    far = near_dup.candidate_keys(0, thumbnail(scenes.render(scenes.random_scene(rng), 64, 64)))
    assert near_dup.key_distances(far, [None] * near_dup.N_KEYS) == [64] * len(near_dup.KEY_PAIRS)


def test_a_border_overlay_is_excused_and_a_changed_object_at_the_border_is_not():
    """Near the border only what a blend toward white or black cannot explain counts: a translucent
    logo box over a corner object is a copy, another object in that corner is not."""
    base = scenes.Scene("circle", "red", "blue", 2, "small", ((0.12, 0.12, 0.09, 0.0), (0.6, 0.6, 0.09, 0.0)))
    original = scenes.render(base, 160, 160)
    boxed = original.convert("RGBA")
    layer = Image.new("RGBA", boxed.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle([0, 0, 38, 38], fill=(255, 255, 255, 140))
    boxed = Image.alpha_composite(boxed, layer).convert("RGB")
    moved = scenes.Scene("circle", "yellow", "blue", 2, "small", ((0.12, 0.12, 0.09, 0.0), (0.6, 0.6, 0.09, 0.0)))
    other = scenes.render(moved, 160, 160)
    ImageDraw.Draw(other).ellipse([82, 82, 110, 110], fill=scenes.COLOURS["red"])  # the middle object as before
    assert _copy(scenes.encode(original, "png"), scenes.encode(boxed, "jpg"))
    assert not _copy(scenes.encode(original, "png"), scenes.encode(other, "jpg"))


def test_same_picture_is_a_crop_or_zoom_of_the_same_scene():
    a = scenes.Scene("star", "white", "pink", 1, "medium", ((0.5, 0.5, 0.2, 5.0),))
    zoomed = scenes.Scene("star", "white", "pink", 1, "medium", ((0.46, 0.52, 0.24, 8.0),))
    assert scenes.same_picture(a, zoomed)
    assert not scenes.same_picture(a, scenes.Scene("star", "white", "pink", 1, "medium", ((0.5, 0.5, 0.2, 25.0),)))  # turned
    assert not scenes.same_picture(a, scenes.Scene("star", "white", "pink", 1, "medium", ((0.75, 0.5, 0.2, 5.0),)))  # moved
    assert not scenes.same_picture(a, scenes.Scene("star", "white", "blue", 1, "medium", ((0.5, 0.5, 0.2, 5.0),)))
    rng = random.Random(3)
    for _ in range(50):  # a same_background look-alike is never the same picture as its source
        s = scenes.random_scene(rng)
        assert not scenes.same_picture(s, scenes.look_alike(s, "same_background", rng))
