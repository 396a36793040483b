"""Alt-texts as noisy as the real web's: matching, loosely related and unrelated captions.

Alt-text on the web often says little about its picture. Published curation pipelines measure
this by how much of a crawled pool a CLIP image–text score keeps:

- LAION-400M (Schuhmann et al. 2021) kept OpenAI ViT-B/32 cosine >= 0.3, a threshold chosen by
  human evaluation of how well the texts fit the images; LAION-5B (Schuhmann et al., NeurIPS 2022)
  lowered it to 0.28, and that cut removed about 90% of the ~50 billion Common Crawl candidates
  (alt-text of 5+ characters) that reached it.
- DataComp (Gadre et al., NeurIPS 2023): on CommonPool (Common Crawl alt-text with only safety and
  evaluation-set filtering) the best CLIP-score filter keeps the top 30% (ViT-L/14 score); keeping
  more lets in pairs that make the trained model worse.
- PaLI's WebLI (Chen et al. 2022) keeps the top 10% of its pairs by image–text similarity.

So between 10% and 30% of a raw alt-text pool describes its picture well enough to train on. The
sample web's fault-free pool has 13% junk texts (the text rules drop them) and 10% captions in
other languages; among its English captions we use ``CAPTION_MIX``: 40% matching, 25% loosely
related, 35% unrelated, which makes the matching English captions 0.77 × 0.40 ≈ 31% of the pool,
the share DataComp's best filter keeps. The loose share stands for alt-text about the page rather
than the picture, the "partly right" captions that CLIP scores between the two modes.

Kinds (``caption_kind`` in the ground truth; ``matches_image`` is true for ``matching`` only):

- matching: a correct description (scenes.english_variant, or a translation);
- loose: ``topic`` (the page's subject, nothing of this picture), ``colours_only`` (its colours,
  not its shape), ``shape_only`` (its shape in SEO words, nothing else), ``wrong_detail`` (its
  shape with a wrong colour or background);
- unrelated: ``other_picture`` (another picture's caption: a CMS mix-up), ``off_topic`` (text
  about something else: shop, news and site boilerplate written as a sentence).
"""

from __future__ import annotations

import random

from pipeline.sample_web import scenes

CAPTION_MIX = {"matching": 0.40, "loose": 0.25, "unrelated": 0.35}
LOOSE_KINDS = ["topic", "colours_only", "shape_only", "wrong_detail"]
UNRELATED_KINDS = ["other_picture", "off_topic"]

_TOPIC = [
    "Geometric shapes gallery, page {n}", "Abstract geometric patterns for kids", "Simple shape drawings collection",
    "Learning geometry with colourful designs", "Our favourite minimalist designs of {year}",
    "Pattern inspiration for your next poster", "The best geometric designs of the week",
]
_COLOURS_ONLY = [
    "{Colour} and {background} abstract art", "{Background} wallpaper with {colour} details",
    "A modern {colour} design on a {background} background", "Minimal {colour} and {background} poster",
]
_SHAPE_ONLY = [
    "{Shape} icon vector art, free download", "A printable {shape} template for the kids",
    "How to draw a {shape} step by step", "{Shape} symbol meaning and history",
]
_OFF_TOPIC = [
    "Free shipping on all orders over fifty dollars", "Our team at the annual conference in Berlin",
    "Summer sale now on with savings across the store", "Award winning family restaurant since {year}",
    "Portrait of the author at her desk", "Map of the city centre and nearby parking",
    "Customer reviews and ratings for this product", "Subscribe to our weekly newsletter for updates",
    "Sunset over the harbour after the storm", "Fresh vegetables at the farmers market this morning",
]


def mix_probabilities(other_language: float, junk: float, other_picture: float) -> tuple[float, float]:
    """(P(loose), P(unrelated)) to apply to a correct English caption so that the English captions
    follow ``CAPTION_MIX``, given the shares of the pool the generator already makes other-language,
    junk and another picture's caption (the latter already unrelated)."""
    english = 1.0 - other_language - junk
    correct = english - other_picture
    p_loose = CAPTION_MIX["loose"] * english / correct
    p_unrelated = (CAPTION_MIX["unrelated"] * english - other_picture) / correct
    if p_loose < 0 or p_unrelated < 0 or p_loose + p_unrelated > 1:
        raise ValueError(f"CAPTION_MIX {CAPTION_MIX} cannot be reached from these shares")
    return p_loose, p_unrelated


def _fill(template: str, scene: scenes.Scene, rng: random.Random) -> str:
    words = {"colour": scene.colour, "background": scene.background, "shape": scene.shape,
             "n": rng.randint(2, 40), "year": rng.randint(2009, 2024)}
    words.update({k.capitalize(): str(v).capitalize() for k, v in list(words.items())})
    return template.format(**words)


def other_picture(scene: scenes.Scene, rng: random.Random) -> str:
    """The caption of another picture: another shape, colour and background."""
    other = scenes.random_scene(rng)
    while other.shape == scene.shape or other.colour == scene.colour or other.background == scene.background:
        other = scenes.random_scene(rng)
    return scenes.english_variant(other, rng)


def loose(scene: scenes.Scene, rng: random.Random) -> tuple[str, str]:
    """(caption, kind) of a loosely related caption of ``scene``."""
    kind = rng.choice(LOOSE_KINDS)
    if kind == "wrong_detail":
        colours = [c for c in scenes.COLOUR_NAMES if c not in (scene.colour, scene.background)]
        if rng.random() < 0.5:
            wrong = scenes.Scene(scene.shape, rng.choice(colours), scene.background, scene.count, scene.size, scene.objects)
        else:
            wrong = scenes.Scene(scene.shape, scene.colour, rng.choice(colours), scene.count, scene.size, scene.objects)
        return scenes.english_variant(wrong, rng), kind
    templates = {"topic": _TOPIC, "colours_only": _COLOURS_ONLY, "shape_only": _SHAPE_ONLY}[kind]
    return _fill(rng.choice(templates), scene, rng), kind


def unrelated(scene: scenes.Scene, rng: random.Random) -> tuple[str, str]:
    """(caption, kind) of a caption unrelated to ``scene``."""
    if rng.random() < 0.5:
        return other_picture(scene, rng), "other_picture"
    return _fill(rng.choice(_OFF_TOPIC), scene, rng), "off_topic"


LONG_ALT = 5000


def junk(kind: str, scene: scenes.Scene, url: str, rng: random.Random) -> tuple[str, str | None, bool]:
    """(raw attribute value, language, matches_image) for one kind of real-web junk."""
    n = rng.randint(1, 9999)
    if kind == "filename":
        return rng.choice([f"IMG_{n:04d}.JPG", f"DSC{n:05d}.jpg", f"image{n}.png", f"photo-{n}.jpeg",
                           f"Screenshot_{n}.png", f"P{n:07d}.JPG"]), None, False
    if kind == "click_here":
        return rng.choice(["click here", "Click here", "click here to enlarge", "Click to enlarge",
                           "read more", "more info", "view larger image"]), "en", False
    if kind == "empty":
        return "", None, False
    if kind == "whitespace":
        return rng.choice([" ", "   ", "\n  \t", "\t", "  \n"]), None, False
    if kind == "long":
        words = ["shapes", "colours", "circle", "square", "star", "best", "free", "cheap", "buy", "online",
                 "gallery", "pictures", "download", "wallpaper", "hd"]
        out: list[str] = []
        while sum(len(w) + 1 for w in out) < LONG_ALT + 20:
            out.append(rng.choice(words))
        return " ".join(out)[:LONG_ALT], "en", False
    if kind == "entities":
        c = scenes.english(scene)
        c = c[0].upper() + c[1:]
        return rng.choice([f"&quot;{c}&quot;", f"{c} &amp; more shapes", c.replace(" ", "&nbsp;"),
                           f"{c} &mdash; caf&eacute; gallery", f"{c} &#8211; &lt;new&gt;"]), "en", True
    if kind == "url_as_text":
        return url, None, False
    if kind == "repeated_char":
        return rng.choice("!.-*=a_") * rng.randint(5, 40), None, False
    if kind == "single_word":
        return rng.choice(["image", "photo", "picture", "banner", "logo", "thumbnail", "untitled", "img"]), "en", False
    raise ValueError(kind)  # pragma: no cover
