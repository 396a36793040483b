"""Scenes of coloured shapes: the random parameters, the Pillow rendering and the captions.

A scene is shape × colour × background × count (1–4) × size, with positions; a tiny CLIP can learn
all of it. The class label is the shape name. Captions are written in English (the true caption)
and, properly inflected, in French, German, Spanish, Russian and Japanese.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "ring"]
COLOURS = {
    "red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 70, 210), "yellow": (240, 220, 30),
    "orange": (245, 140, 20), "purple": (130, 50, 170), "white": (250, 250, 250), "black": (15, 15, 15),
    "pink": (245, 150, 190), "brown": (120, 70, 30),
}
COLOUR_NAMES = list(COLOURS)
SIZES = ["small", "medium", "large"]  # "medium" is not said in captions
_RADIUS = {"small": (0.07, 0.10), "medium": (0.11, 0.15), "large": (0.17, 0.21)}


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    count: int
    size: str
    # (centre x, centre y, radius, rotation in degrees), coordinates as fractions of the image side
    objects: tuple[tuple[float, float, float, float], ...]

    @property
    def label(self) -> str:
        return self.shape


def random_scene(rng: random.Random) -> Scene:
    shape = rng.choice(SHAPES)
    colour = rng.choice(COLOUR_NAMES)
    background = rng.choice([c for c in COLOUR_NAMES if c != colour])
    count = rng.choice([1, 1, 2, 2, 3, 4])
    size = rng.choice(SIZES) if count <= 2 else rng.choice(["small", "medium"])
    # One object per cell of a 2×2 grid (no overlaps), jittered inside its cell.
    cells = rng.sample([(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)], count)
    lo, hi = _RADIUS[size]
    objs = []
    for cx, cy in cells:
        r = rng.uniform(lo, hi) if count > 1 else rng.uniform(lo, hi) * 1.6
        if count == 1:
            cx, cy = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)
        else:
            j = max(0.0, 0.24 - r)
            cx, cy = cx + rng.uniform(-j, j), cy + rng.uniform(-j, j)
        objs.append((round(cx, 4), round(cy, 4), round(r, 4), round(rng.uniform(-15, 15), 2)))
    return Scene(shape, colour, background, count, size, tuple(objs))


def _poly(cx: float, cy: float, r: float, n: int, rot: float, inner: float | None = None) -> list[tuple[float, float]]:
    pts = []
    k = n * 2 if inner else n
    for i in range(k):
        a = math.radians(rot - 90 + 360 * i / k)
        rr = r * inner if inner and i % 2 else r
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def render(scene: Scene, width: int, height: int) -> Image.Image:
    """Draw the scene at any size (coordinates are relative, so srcset variants look alike)."""
    img = Image.new("RGB", (width, height), COLOURS[scene.background])
    d = ImageDraw.Draw(img)
    fill = COLOURS[scene.colour]
    side = min(width, height)
    for fx, fy, fr, rot in scene.objects:
        cx, cy, r = fx * width, fy * height, fr * side
        s = scene.shape
        if s == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif s == "ring":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(2, int(r * 0.35)))
        elif s == "square":
            d.polygon(_poly(cx, cy, r * 1.15, 4, 45 + rot), fill=fill)
        elif s == "diamond":
            d.polygon([(cx, cy - r * 1.2), (cx + r * 0.8, cy), (cx, cy + r * 1.2), (cx - r * 0.8, cy)], fill=fill)
        elif s == "triangle":
            d.polygon(_poly(cx, cy, r * 1.1, 3, rot), fill=fill)
        elif s == "star":
            d.polygon(_poly(cx, cy, r * 1.15, 5, rot, inner=0.45), fill=fill)
        elif s == "hexagon":
            d.polygon(_poly(cx, cy, r * 1.05, 6, rot), fill=fill)
        elif s == "cross":
            w = r * 0.38
            d.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
            d.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    """Fixed encoder settings, so the same scene gives the same bytes on every run."""
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, "JPEG", quality=90, optimize=False, progressive=False, subsampling=2)
    elif fmt == "png":
        img.save(buf, "PNG", optimize=False, compress_level=6)
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=80, method=4, lossless=False)
    else:  # pragma: no cover - programming error
        raise ValueError(fmt)
    return buf.getvalue()


# --- copies: how the same picture reappears elsewhere on the web ---------------------------------

COPY_KINDS = ["resized", "reencoded", "cropped", "watermarked", "cropped_hard", "overlaid", "reencoded_hard"]
WATERMARK = "\u00a9 shapes.example"


def _crop(img: Image.Image, rng: random.Random, lo: float, hi: float) -> Image.Image:
    w, h = img.size
    left, right = (round(w * rng.uniform(lo, hi)) for _ in range(2))
    top, bottom = (round(h * rng.uniform(lo, hi)) for _ in range(2))
    return img.crop((left, top, w - right, h - bottom))


def copy_image(data: bytes, kind: str, rng: random.Random) -> tuple[bytes, str]:
    """(bytes, extension) of a copy of the encoded image ``data``: ``resized`` (×0.5 to ×2),
    ``reencoded`` (JPEG quality 30–60 or WebP), ``cropped`` (1–4 % off each side),
    ``watermarked`` (a translucent credit line in a bottom corner), and harder ones:
    ``cropped_hard`` (5–10 % off each side), ``overlaid`` (a translucent banner over 4–8 % of the
    picture: a caption bar or a logo box in a corner) and ``reencoded_hard`` (resized ×0.6–0.8, then JPEG quality 15–25)."""
    with Image.open(io.BytesIO(data)) as im:
        img = im.convert("RGB")
    w, h = img.size
    if kind == "reencoded":
        buf = io.BytesIO()
        if rng.random() < 0.5:
            img.save(buf, "JPEG", quality=rng.randint(30, 60), optimize=False, progressive=False, subsampling=2)
            return buf.getvalue(), "jpg"
        img.save(buf, "WEBP", quality=50, method=4, lossless=False)
        return buf.getvalue(), "webp"
    if kind == "reencoded_hard":
        f = rng.uniform(0.6, 0.8)
        img = img.resize((max(16, round(w * f)), max(16, round(h * f))), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=rng.randint(15, 25), optimize=False, progressive=False, subsampling=2)
        return buf.getvalue(), "jpg"
    if kind == "resized":
        f = rng.choice([0.5, 0.75, 1.5, 2.0])
        img = img.resize((max(16, round(w * f)), max(16, round(h * f))), Image.Resampling.LANCZOS)
    elif kind == "cropped":
        img = _crop(img, rng, 0.01, 0.04)
    elif kind == "cropped_hard":
        img = _crop(img, rng, 0.05, 0.10)
    elif kind == "watermarked":
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        x = 2 if rng.random() < 0.5 else max(2, w - 6 * len(WATERMARK))
        d.text((x, h - 13), WATERMARK, fill=(255, 255, 255, 150) if rng.random() < 0.5 else (0, 0, 0, 150))
        img = Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")
    elif kind == "overlaid":
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        d = ImageDraw.Draw(layer)
        fill = (255, 255, 255, 140) if rng.random() < 0.5 else (0, 0, 0, 140)
        if rng.random() < 0.5:  # a caption bar along the bottom edge
            d.rectangle([0, round(h * (1 - rng.uniform(0.05, 0.08))), w, h], fill=fill)
        else:  # a logo box in a corner
            bw, bh = round(w * rng.uniform(0.18, 0.24)), round(h * rng.uniform(0.18, 0.24))
            x0 = 0 if rng.random() < 0.5 else w - bw
            y0 = 0 if rng.random() < 0.5 else h - bh
            d.rectangle([x0, y0, x0 + bw, y0 + bh], fill=fill)
        img = Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    return encode(img, "jpg"), "jpg"


# --- the same picture: what a copy detector must call a copy -------------------------------------

UNROTATED = ("circle", "ring", "diamond", "cross")  # render draws them without their rotation
# Two drawings are the same picture when a crop of at most ~12 % a side (a zoom of up to ×1.32) and a
# re-encode would turn one into the other: every object within SAME_SHIFT of the side of the other's,
# radii within SAME_RADIUS, rotations within SAME_ROTATION degrees (bench/near_dup.py's copy bounds, loosened).
SAME_SHIFT, SAME_RADIUS, SAME_ROTATION = 0.15, 1.45, 10.0


def same_picture(a: Scene, b: Scene) -> bool:
    """Whether scenes ``a`` and ``b`` draw the same picture up to a crop, a zoom or a re-encode: no copy
    detector can tell them apart, so the sample web never labels such a pair distinct."""
    if (a.shape, a.colour, a.background, a.count) != (b.shape, b.colour, b.background, b.count):
        return False
    for (ax, ay, ar, arot), (bx, by, br, brot) in zip(sorted(a.objects), sorted(b.objects), strict=True):
        if abs(ax - bx) > SAME_SHIFT or abs(ay - by) > SAME_SHIFT or max(ar, br) / min(ar, br) > SAME_RADIUS:
            return False
        if a.shape not in UNROTATED and abs(arot - brot) > SAME_ROTATION:
            return False
    return True


# --- look-alikes: other pictures that share a background, an object or a layout -------------------

LOOK_ALIKE_KINDS = ["same_background", "same_object", "same_layout"]


def look_alike(scene: Scene, kind: str, rng: random.Random) -> Scene:
    """A different picture that a perceptual hash confuses with ``scene``: ``same_background`` (the
    same objects, shape and colour on the same background, placed elsewhere: never ``same_picture``), ``same_object`` (the
    same objects at the same places on another background) or ``same_layout`` (the same places and
    background, another shape or colour). Never equal to ``scene``."""
    if kind == "same_background":
        while True:
            other = random_scene(rng)
            other = Scene(scene.shape, scene.colour, scene.background, other.count, other.size, other.objects)
            if not same_picture(other, scene):
                return other
    if kind == "same_object":
        bg = rng.choice([c for c in COLOUR_NAMES if c not in (scene.colour, scene.background)])
        return Scene(scene.shape, scene.colour, bg, scene.count, scene.size, scene.objects)
    if kind == "same_layout":
        if rng.random() < 0.5:
            return Scene(rng.choice([s for s in SHAPES if s != scene.shape]), scene.colour, scene.background,
                         scene.count, scene.size, scene.objects)
        colour = rng.choice([c for c in COLOUR_NAMES if c not in (scene.colour, scene.background)])
        return Scene(scene.shape, colour, scene.background, scene.count, scene.size, scene.objects)
    raise ValueError(kind)  # pragma: no cover - programming error


# --- captions ----------------------------------------------------------------------------------

_EN_PLURAL = {"cross": "crosses"}
_EN_COUNT = {2: "two", 3: "three", 4: "four"}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def english(scene: Scene) -> str:
    """The true caption, e.g. 'two small red circles on a blue background'."""
    size = "" if scene.size == "medium" else scene.size + " "
    if scene.count == 1:
        head = f"{size}{scene.colour} {scene.shape}"
        head = f"{_article(head)} {head}"
    else:
        noun = _EN_PLURAL.get(scene.shape, scene.shape + "s")
        head = f"{_EN_COUNT[scene.count]} {size}{scene.colour} {noun}"
    return f"{head} on {_article(scene.background)} {scene.background} background"


_EN_TEMPLATES = [
    "{c}", "{C}", "{C}.", "A photo of {c}", "An illustration of {c}", "Picture: {c}",
    "{C} - simple shapes", "Drawing of {c}", "Image of {c}",
]


def english_variant(scene: Scene, rng: random.Random) -> str:
    """A web-style English alt text that still describes the scene correctly."""
    c = english(scene)
    return rng.choice(_EN_TEMPLATES).format(c=c, C=c[0].upper() + c[1:])


# French: noun (singular, plural, gender); colours (m sg, f sg, m pl, f pl).
_FR_SHAPES = {
    "circle": ("cercle", "cercles", "m"), "square": ("carré", "carrés", "m"),
    "triangle": ("triangle", "triangles", "m"), "star": ("étoile", "étoiles", "f"),
    "hexagon": ("hexagone", "hexagones", "m"), "diamond": ("losange", "losanges", "m"),
    "cross": ("croix", "croix", "f"), "ring": ("anneau", "anneaux", "m"),
}
_FR_COLOURS = {
    "red": ("rouge", "rouge", "rouges", "rouges"), "green": ("vert", "verte", "verts", "vertes"),
    "blue": ("bleu", "bleue", "bleus", "bleues"), "yellow": ("jaune", "jaune", "jaunes", "jaunes"),
    "orange": ("orange",) * 4, "purple": ("violet", "violette", "violets", "violettes"),
    "white": ("blanc", "blanche", "blancs", "blanches"), "black": ("noir", "noire", "noirs", "noires"),
    "pink": ("rose", "rose", "roses", "roses"), "brown": ("marron",) * 4,
}
_FR_COUNT = {2: "deux", 3: "trois", 4: "quatre"}


def french(scene: Scene) -> str:
    sg, pl, g = _FR_SHAPES[scene.shape]
    forms = _FR_COLOURS[scene.colour]
    if scene.count == 1:
        head = f"{'une' if g == 'f' else 'un'} {sg} {forms[1] if g == 'f' else forms[0]}"
    else:
        head = f"{_FR_COUNT[scene.count]} {pl} {forms[3] if g == 'f' else forms[2]}"
    return f"{head[0].upper()}{head[1:]} sur fond {_FR_COLOURS[scene.background][0]}"


# German: noun (singular, plural, gender); colour stems take the adjective endings.
_DE_SHAPES = {
    "circle": ("Kreis", "Kreise", "m"), "square": ("Quadrat", "Quadrate", "n"),
    "triangle": ("Dreieck", "Dreiecke", "n"), "star": ("Stern", "Sterne", "m"),
    "hexagon": ("Sechseck", "Sechsecke", "n"), "diamond": ("Raute", "Rauten", "f"),
    "cross": ("Kreuz", "Kreuze", "n"), "ring": ("Ring", "Ringe", "m"),
}
_DE_STEMS = {
    "red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "orange": "orangefarben",
    "purple": "violett", "white": "weiß", "black": "schwarz", "pink": "rosafarben", "brown": "braun",
}
_DE_COUNT = {2: "Zwei", 3: "Drei", 4: "Vier"}


def german(scene: Scene) -> str:
    sg, pl, g = _DE_SHAPES[scene.shape]
    stem = _DE_STEMS[scene.colour]
    if scene.count == 1:
        art, end = {"m": ("Ein", "er"), "f": ("Eine", "e"), "n": ("Ein", "es")}[g]
        head = f"{art} {stem}{end} {sg}"
    else:
        head = f"{_DE_COUNT[scene.count]} {stem}e {pl}"
    return f"{head} auf {_DE_STEMS[scene.background]}em Hintergrund"


_ES_SHAPES = {
    "circle": ("círculo", "círculos", "m"), "square": ("cuadrado", "cuadrados", "m"),
    "triangle": ("triángulo", "triángulos", "m"), "star": ("estrella", "estrellas", "f"),
    "hexagon": ("hexágono", "hexágonos", "m"), "diamond": ("rombo", "rombos", "m"),
    "cross": ("cruz", "cruces", "f"), "ring": ("anillo", "anillos", "m"),
}
_ES_COLOURS = {
    "red": ("rojo", "roja", "rojos", "rojas"), "green": ("verde", "verde", "verdes", "verdes"),
    "blue": ("azul", "azul", "azules", "azules"), "yellow": ("amarillo", "amarilla", "amarillos", "amarillas"),
    "orange": ("naranja",) * 4, "purple": ("morado", "morada", "morados", "moradas"),
    "white": ("blanco", "blanca", "blancos", "blancas"), "black": ("negro", "negra", "negros", "negras"),
    "pink": ("rosa",) * 4, "brown": ("marrón", "marrón", "marrones", "marrones"),
}
_ES_COUNT = {2: "Dos", 3: "Tres", 4: "Cuatro"}


def spanish(scene: Scene) -> str:
    sg, pl, g = _ES_SHAPES[scene.shape]
    forms = _ES_COLOURS[scene.colour]
    if scene.count == 1:
        head = f"{'Una' if g == 'f' else 'Un'} {sg} {forms[1] if g == 'f' else forms[0]}"
    else:
        head = f"{_ES_COUNT[scene.count]} {pl} {forms[3] if g == 'f' else forms[2]}"
    return f"{head} sobre fondo {_ES_COLOURS[scene.background][0]}"


# Russian: noun (nominative sg, genitive sg, gender); adjective (nom m, f, n, nom pl, gen pl, prep m).
_RU_SHAPES = {
    "circle": ("круг", "круга", "m"), "square": ("квадрат", "квадрата", "m"),
    "triangle": ("треугольник", "треугольника", "m"), "star": ("звезда", "звезды", "f"),
    "hexagon": ("шестиугольник", "шестиугольника", "m"), "diamond": ("ромб", "ромба", "m"),
    "cross": ("крест", "креста", "m"), "ring": ("кольцо", "кольца", "n"),
}


def _ru_adj(stem: str, soft: bool = False) -> tuple[str, ...]:
    if soft:  # синий
        return (stem + "ий", stem + "яя", stem + "ее", stem + "ие", stem + "их", stem + "ем")
    return (stem + "ый", stem + "ая", stem + "ое", stem + "ые", stem + "ых", stem + "ом")


_RU_COLOURS = {
    "red": _ru_adj("красн"), "green": _ru_adj("зелён"), "blue": _ru_adj("син", soft=True),
    "yellow": _ru_adj("жёлт"), "orange": _ru_adj("оранжев"), "purple": _ru_adj("фиолетов"),
    "white": _ru_adj("бел"), "black": _ru_adj("чёрн"), "pink": _ru_adj("розов"), "brown": _ru_adj("коричнев"),
}


def russian(scene: Scene) -> str:
    nom, gen, g = _RU_SHAPES[scene.shape]
    adj = _RU_COLOURS[scene.colour]
    if scene.count == 1:
        head = f"{adj[{'m': 0, 'f': 1, 'n': 2}[g]]} {nom}"
    else:
        num = {2: "две" if g == "f" else "два", 3: "три", 4: "четыре"}[scene.count]
        # 2–4 take the genitive singular noun; the adjective is nominative plural (f) or genitive plural.
        head = f"{num} {adj[3] if g == 'f' else adj[4]} {gen}"
    return f"{head[0].upper()}{head[1:]} на {_RU_COLOURS[scene.background][5]} фоне"


_JA_SHAPES = {
    "circle": "円", "square": "正方形", "triangle": "三角形", "star": "星", "hexagon": "六角形",
    "diamond": "ひし形", "cross": "十字", "ring": "リング",
}
_JA_COLOURS = {
    "red": "赤い", "green": "緑の", "blue": "青い", "yellow": "黄色い", "orange": "オレンジ色の",
    "purple": "紫の", "white": "白い", "black": "黒い", "pink": "ピンクの", "brown": "茶色の",
}
_JA_COUNT = {1: "一つ", 2: "二つ", 3: "三つ", 4: "四つ"}


def japanese(scene: Scene) -> str:
    return (f"{_JA_COLOURS[scene.background]}背景に{_JA_COLOURS[scene.colour]}"
            f"{_JA_SHAPES[scene.shape]}が{_JA_COUNT[scene.count]}")


CAPTIONERS = {"en": english, "fr": french, "de": german, "es": spanish, "ru": russian, "ja": japanese}
OTHER_LANGS = ["fr", "de", "es", "ru", "ja"]
ISO3 = {"en": "eng", "fr": "fra", "de": "deu", "es": "spa", "ru": "rus", "ja": "jpn"}

# A sentence of page text per language (the visible text the page-language detector sees).
PAGE_TEXT = {
    "en": "A gallery of simple shapes in many colours. Every picture shows a few objects on a plain background.",
    "fr": "Une galerie de formes simples en plusieurs couleurs. Chaque image montre quelques objets sur un fond uni.",
    "de": "Eine Galerie einfacher Formen in vielen Farben. Jedes Bild zeigt einige Objekte auf einem schlichten Hintergrund.",
    "es": "Una galería de formas simples en muchos colores. Cada imagen muestra algunos objetos sobre un fondo liso.",
    "ru": "Галерея простых фигур разных цветов. На каждой картинке несколько предметов на однотонном фоне.",
    "ja": "いろいろな色の簡単な図形のギャラリーです。どの絵にも無地の背景にいくつかの図形があります。",
}
