"""Generate the sample web: images, HTML pages, a Common-Crawl-style WARC + WAT, the ground truth.

Everything comes from one seeded ``random.Random`` and fixed encoder settings, so the same
arguments give the same bytes in every file. Pages are produced one at a time and written at
once (images, HTML, WARC and WAT records, ground-truth rows in batches), so memory stays flat
whatever ``n_pairs`` is.
"""

from __future__ import annotations

import base64
import html
import json
import os
import random
import shutil
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

from pipeline.errors import UserError
from pipeline.log import info
from pipeline.progress import Progress
from pipeline.sample_web import captions, scenes
from pipeline.sample_web.labelled import EVAL_SIDE, LABELLED_SPLITS, labelled_scenes, write_labelled_split
from pipeline.sample_web.server import BOMB_FILE, FAULT_STATUS, FAULTS, FAULTS_WITHOUT_FILE
from pipeline.sample_web.site_writer import SiteWriter, bomb_png

JUNK_KINDS = ["filename", "click_here", "empty", "whitespace", "long", "duplicate", "entities",
              "url_as_text", "repeated_char", "single_word"]
MAX_TEXT = 1000
DATA_PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
PLACEHOLDER_PATH = "img/placeholder.gif"
# Shares of the pairs without a fault whose image is a copy (resized, re-encoded, cropped or
# watermarked) of a picture on an earlier page, and of those, the share copying an image of the
# labelled splits (eval/, eval_background/): what near-duplicate search and decontamination must find.
COPY_SHARE = 0.08
EVAL_COPY_SHARE = 0.3
# Shares of the other fault-free pairs whose picture is a look-alike of an earlier one, and of
# those, the share resembling an eval image.
LOOK_ALIKE_SHARE = 0.06
EVAL_LOOK_ALIKE_SHARE = 0.3
# Shares of the fault-free pairs whose text is in another language, another picture's English
# caption, or junk; the rest are English captions of the picture, of which captions.mix_probabilities
# makes some loose or unrelated (from ``caption_rng``) so that English captions follow captions.CAPTION_MIX.
OTHER_LANGUAGE_SHARE = 0.10
OTHER_PICTURE_SHARE = 0.10
JUNK_SHARE = 0.13
P_LOOSE, P_UNRELATED = captions.mix_probabilities(OTHER_LANGUAGE_SHARE, JUNK_SHARE, OTHER_PICTURE_SHARE)


def clean_text(raw: str | None) -> str:
    """The text the extractor must produce from an attribute value (see the contract)."""
    return " ".join(html.unescape(raw or "").split())[:MAX_TEXT]


class _Page:
    """Builds one page's <img> tags, ground-truth rows and WAT links."""

    def __init__(self, gen: _Generator, p: int, n_imgs: int):
        self.g, self.p = gen, p
        rng = gen.rng
        self.url = f"{gen.base}/pages/{p:07d}.html"
        self.base_href = f"{gen.base}/img/" if rng.random() < 0.15 else None
        self.n_older = len(gen.originals)  # pictures on earlier pages: what a copy here may copy
        self.tags: list[str] = []
        self.links: list[dict] = []
        self.rows: list[dict] = []
        self.langs: Counter = Counter()
        for _ in range(n_imgs):
            self.add_img()

    def spell(self, rel: str) -> str:
        """How the HTML writes the URL of site-relative path ``rel`` (absolute, relative, …)."""
        rng, base = self.g.rng, self.g.base
        if self.base_href:
            choice = rng.random()
            if choice < 0.7:
                return rel[len("img/"):]
            return f"{base}/{rel}"
        choice = rng.random()
        if choice < 0.4:
            return f"{base}/{rel}"
        if choice < 0.7:
            return f"/{rel}"
        if choice < 0.9:
            return f"../{rel}"
        return f"//{base.split('://', 1)[1]}/{rel}"

    def resolve(self, attr: str) -> str:
        return urldefrag(urljoin(self.base_href or self.url, attr))[0]

    def add_img(self) -> None:
        """One <img> of the page: its picture (fresh, a look-alike, or a planted copy), the way its
        URL is written (src, srcset, data-src), its text, and its ground-truth row."""
        g, rng = self.g, self.g.rng
        i = g.next_id
        g.next_id += 1
        fault = g.fault_for(i)
        if not fault and self.rows and rng.random() < 0.1 and self.repeat_img(i):  # junk "duplicate"
            return
        if not fault and g.copy_rng.random() < COPY_SHARE and self.add_copy(i):
            return
        scene = scenes.random_scene(rng)
        look = self.look_alike(scene) if not fault else (scene, None, None, None)
        if look[3] is None:
            scene = g.distinct(scene)
        else:
            scene = look[0]
            g.remember(scene)
        fmt = "png" if fault == "bomb" else ("jpg" if fault else rng.choices(["jpg", "png", "webp"], [0.7, 0.15, 0.15])[0])
        g.counts_format[fmt] += 1
        w = rng.choice([128, 160, 192, 256]) if fault == "truncated" else rng.choice([64, 96, 128, 160, 192])
        h = w if rng.random() < 0.7 else w * 3 // 4
        attrs, url, wat_url, image_path, src = self.img_source(i, scene, fault, fmt, w, h)
        text = self.img_text(i, scene, fault, fmt, url)
        attrs += text.pop("attrs") + [("width", str(w)), ("height", str(h))]
        if any(k == "data-src" for k, _ in attrs):
            attrs.append(("loading", "lazy"))
        self.tags.append("<img " + " ".join(f'{k}="{v}"' for k, v in attrs) + ">")
        link = {"path": "IMG@/src", "url": src}
        for k, v in attrs:
            if k in ("alt", "title"):
                link[k] = v
        self.links.append(link)
        if text["lang"] and text["lang"] != "en":
            self.langs[text["lang"]] += 1
        self.rows.append({
            "pair_id": i, "page_url": self.url, "url": url, "wat_url": wat_url, **text,
            "true_caption": scenes.english(scene), "fault": fault,
            "expected_status": FAULT_STATUS[fault] if fault else "success", "label": scene.label,
            "image_path": image_path, "near_dup_of": None, "eval_copy_of": None, "copy_kind": None,
            "look_alike_of": look[1], "eval_look_alike_of": look[2], "look_alike_kind": look[3],
        })

    def repeat_img(self, i: int) -> bool:
        """Half the time, the same <img> as an earlier clean one of the page again (junk "duplicate")."""
        rng = self.g.rng
        orig = [k for k, r in enumerate(self.rows) if r["junk_kind"] is None and r["fault"] is None]
        if not orig or rng.random() >= 0.5:
            return False
        k = rng.choice(orig)
        self.tags.append(self.tags[k])
        self.links.append(self.links[k])
        self.rows.append({**self.rows[k], "pair_id": i, "junk_kind": "duplicate"})
        return True

    def img_source(self, i: int, scene: scenes.Scene, fault: str | None, fmt: str, w: int, h: int) -> tuple:
        """The picture's files and how the tag names them: (attrs, url, wat_url, image_path, src) for a
        plain src, a srcset (the largest candidate is the URL) or a lazy data-src."""
        g, rng = self.g, self.g.rng
        rel = f"img/{i // 1000:04d}/{i:07d}.{fmt}"
        mode = "plain" if fault else rng.choices(["plain", "srcset", "data-src"], [0.75, 0.15, 0.10])[0]
        attrs: list[tuple[str, str]] = []
        if mode == "srcset":
            sizes = [w, min(2 * w, 384)]
            rels = [f"img/{i // 1000:04d}/{i:07d}_{s}.{fmt}" for s in sizes]
            for s, r in zip(sizes, rels, strict=True):
                g.w.image(r, scene, s, s * h // w, fmt)
            spelled = [self.spell(r) for r in rels]
            src = spelled[0]
            if rng.random() < 0.5:
                cands = [f"{u} {s}w" for s, u in zip(sizes, spelled, strict=True)]
            else:
                cands = [f"{u} {k + 1}x" for k, u in enumerate(spelled)]
            if rng.random() < 0.3:
                cands.reverse()
            attrs += [("src", src), ("srcset", ", ".join(cands))]
            url, image_path = self.resolve(spelled[-1]), rels[-1]  # the largest candidate
            wat_url = self.resolve(src)
        elif mode == "data-src":
            g.w.image(rel, scene, w, h, fmt)
            real = self.spell(rel)
            src = DATA_PLACEHOLDER if rng.random() < 0.5 else self.spell(PLACEHOLDER_PATH)
            attrs += [("src", src), ("data-src", real)]
            url, image_path = self.resolve(real), rel
            wat_url = None if src.startswith("data:") else self.resolve(src)
        else:
            if not fault or fault not in FAULTS_WITHOUT_FILE:
                g.w.image(rel, scene, w, h, fmt)
            src = self.spell(rel)
            if not fault and rng.random() < 0.05:
                src += rng.choice(["#zoom", "?v=2", f"?w={w}#main"])
            attrs.append(("src", src))
            url = wat_url = self.resolve(src)
            image_path = None if fault in FAULTS_WITHOUT_FILE else rel
        if fault:
            g.w.faults["/" + rel] = fault
        elif mode != "srcset":
            g.originals.append((i, scene, w, h, fmt))
        return attrs, url, wat_url, image_path, src

    def img_text(self, i: int, scene: scenes.Scene, fault: str | None, fmt: str, url: str) -> dict:
        """The picture's text: an English caption (matching, loose or unrelated; sometimes in the
        title only), another language's, or junk; its alt/title attrs and ground-truth columns."""
        rng = self.g.rng
        lang, matches, junk, title = "en", True, None, None
        text_source, kind, detail = "alt", "matching", None
        u = rng.random()
        if fault or u >= OTHER_LANGUAGE_SHARE + OTHER_PICTURE_SHARE + JUNK_SHARE:
            raw = scenes.english_variant(scene, rng)
            if not fault:
                raw, kind, detail = self.web_caption(scene, raw)
                matches = kind == "matching"
            v = rng.random()
            if not fault and v < 0.10:  # no usable alt: the title carries the text
                title, raw = raw, None
                text_source = "title"
            elif v < 0.25:
                title = rng.choice(["Click to enlarge", f"{i:07d}.{fmt}", "Shapes gallery", "zoom"])
        elif u < OTHER_LANGUAGE_SHARE:
            lang = rng.choice(scenes.OTHER_LANGS)
            raw = scenes.CAPTIONERS[lang](scene)
        elif u < OTHER_LANGUAGE_SHARE + OTHER_PICTURE_SHARE:
            other = scenes.random_scene(rng)
            while other.shape == scene.shape:
                other = scenes.random_scene(rng)
            raw, matches = scenes.english_variant(other, rng), False
            kind, detail = "unrelated", "other_picture"
        else:
            junk = rng.choice([k for k in JUNK_KINDS if k != "duplicate"])
            raw, lang, matches = captions.junk(junk, scene, url, rng)
            kind = None
        if text_source == "title":
            attrs = [("alt", "")] if rng.random() < 0.5 else []
            attrs.append(("title", title))
            raw_text = title
        else:
            attrs = [("alt", raw)] + ([("title", title)] if title else [])
            raw_text = raw
        return {"attrs": attrs, "raw_text": raw_text, "text": clean_text(raw_text), "text_source": text_source,
                "matches_image": matches, "caption_kind": kind, "caption_detail": detail, "lang": lang,
                "junk_kind": junk}

    def web_caption(self, scene: scenes.Scene, raw: str) -> tuple[str, str, str | None]:
        """(text, caption_kind, caption_detail): the correct caption ``raw`` as it is, or (at
        P_LOOSE, P_UNRELATED) a loose or unrelated one instead. Draws only from ``caption_rng``."""
        crng = self.g.caption_rng
        u = crng.random()
        if u < P_LOOSE:
            text, detail = captions.loose(scene, crng)
            return text, "loose", detail
        if u < P_LOOSE + P_UNRELATED:
            text, detail = captions.unrelated(scene, crng)
            return text, "unrelated", detail
        return raw, "matching", None

    def look_alike(self, scene: scenes.Scene) -> tuple:
        """(scene, look_alike_of, eval_look_alike_of, kind): ``scene`` as drawn, or (at
        LOOK_ALIKE_SHARE) a look-alike of an earlier picture or an eval image. Draws only from ``look_rng``."""
        g = self.g
        lrng = g.look_rng
        if lrng.random() >= LOOK_ALIKE_SHARE:
            return scene, None, None, None
        kind = lrng.choice(scenes.LOOK_ALIKE_KINDS)
        if lrng.random() < EVAL_LOOK_ALIKE_SHARE:
            split, rel_eval, source = lrng.choice(g.eval_sources)
            other, of, eval_of = g.look_alike_of(source, kind), None, f"{split}/{rel_eval}"
        elif self.n_older:
            pair_id, source, *_ = g.originals[lrng.randrange(self.n_older)]
            other, of, eval_of = g.look_alike_of(source, kind), pair_id, None
        else:
            return scene, None, None, None
        return (scene, None, None, None) if other is None else (other, of, eval_of, kind)

    def add_copy(self, i: int) -> bool:
        """Pair ``i`` shows a copy of a picture from an earlier page or from a labelled split, with
        a true caption; False when there is nothing to copy yet. Draws only from ``copy_rng``."""
        g = self.g
        crng = g.copy_rng
        if crng.random() < EVAL_COPY_SHARE:
            split, rel_eval, scene = crng.choice(g.eval_sources)
            source, near, eval_of = scenes.encode(scenes.render(scene, EVAL_SIDE, EVAL_SIDE), "jpg"), None, f"{split}/{rel_eval}"
        elif self.n_older:
            pair_id, scene, w, h, fmt = g.originals[crng.randrange(self.n_older)]
            source, near, eval_of = scenes.encode(scenes.render(scene, w, h), fmt), pair_id, None
        else:
            return False
        kind = crng.choice(scenes.COPY_KINDS)
        data, ext = scenes.copy_image(source, kind, crng)
        rel = f"img/{i // 1000:04d}/{i:07d}.{ext}"
        g.w.write_file(rel, data)
        g.w.n_images += 1
        g.w.image_bytes += len(data)
        g.counts_format[ext] += 1
        url = f"{g.base}/{rel}"
        raw = scenes.english_variant(scene, crng)
        self.tags.append(f'<img src="{url}" alt="{raw}">')
        self.links.append({"path": "IMG@/src", "url": url, "alt": raw})
        self.rows.append({
            "pair_id": i, "page_url": self.url, "url": url, "wat_url": url, "raw_text": raw, "text": clean_text(raw),
            "text_source": "alt", "true_caption": scenes.english(scene), "matches_image": True,
            "caption_kind": "matching", "caption_detail": None, "lang": "en",
            "junk_kind": None, "fault": None, "expected_status": "success", "label": scene.label, "image_path": rel,
            "near_dup_of": near, "eval_copy_of": eval_of, "copy_kind": kind,
            "look_alike_of": None, "eval_look_alike_of": None, "look_alike_kind": None,
        })
        return True

    def render(self) -> None:
        g, rng, p = self.g, self.g.rng, self.p
        others = sorted(self.langs)
        charset = "utf-8"
        if others == ["ru"] and rng.random() < 0.5:
            charset = "windows-1251"
        elif others == ["ja"] and rng.random() < 0.6:
            charset = rng.choice(["shift_jis", "euc-jp"])
        elif others and set(others) <= {"fr", "de", "es"} and rng.random() < 0.4:
            charset = rng.choice(["iso-8859-1", "windows-1252"])
        title = f"Shapes gallery {p}"
        paragraphs = ["en", *others]
        meta = (f'<meta charset="{charset}">' if charset == "utf-8" or rng.random() < 0.5
                else f'<meta http-equiv="Content-Type" content="text/html; charset={charset}">')
        head = [meta, f"<title>{title}</title>", '<meta name="viewport" content="width=device-width">']
        if self.base_href:
            head.append(f'<base href="{self.base_href}">')
        nav = [f"/pages/{max(p - 1, 0):07d}.html", f"/pages/{p + 1:07d}.html", "https://example.com/about"]
        parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", *head, "</head>", "<body>", f"<h1>{title}</h1>"]
        parts += [f"<p>{scenes.PAGE_TEXT[lang]}</p>" for lang in paragraphs]
        parts += ['<div class="gallery">', *(f"<figure>{t}</figure>" for t in self.tags), "</div>"]
        parts += ["<p>" + " ".join(f'<a href="{h}">{t}</a>' for h, t in zip(nav, ["previous", "next", "about"], strict=True)) + "</p>"]
        parts += ["</body>", "</html>", ""]
        text = "\n".join(parts)
        try:
            body = text.encode(charset)
        except UnicodeEncodeError:
            charset, body = "utf-8", text.replace(meta, '<meta charset="utf-8">').encode("utf-8")
        langs = {lang: len(scenes.PAGE_TEXT[lang].encode()) + (len(title) if lang == "en" else 0) for lang in paragraphs}
        head_meta: dict = {"Title": title, "Metas": [{"name": "viewport", "content": "width=device-width"}]}
        if self.base_href:
            head_meta["Base"] = self.base_href
        links = self.links + [{"path": "A@/href", "url": h, "text": t} for h, t in zip(nav, ["previous", "next", "about"], strict=True)]
        ctype = f"text/html; charset={charset}"
        g.w.page(p, self.url, body, ctype, langs, charset, {"Head": head_meta, "Links": links})
        for r in self.rows:
            g.w.row(r)


class _Generator:
    def __init__(self, root: Path, n_pairs: int, seed: int, base_url: str, eval_per_class: int):
        self.rng = random.Random(seed)
        # Copies draw from their own generator: the rest of the web is what it would be without them.
        self.copy_rng = random.Random(f"{seed}-copies")
        self.look_rng = random.Random(f"{seed}-look-alikes")
        # A picture drawn as distinct is never the same picture as an earlier one (scenes.same_picture);
        # a clash is redrawn from its own generator, so the rest of the web stays as it was.
        self.redraw_rng = random.Random(f"{seed}-redraw")
        self.drawn: defaultdict = defaultdict(list)  # (shape, colour, background, count) → scenes drawn
        self.caption_rng = random.Random(f"{seed}-captions")  # loose and unrelated captions (captions.py)
        self.originals: list[tuple[int, scenes.Scene, int, int, str]] = []  # (pair_id, scene, w, h, format)
        self.eval_sources = [(name, rel, scene) for name in LABELLED_SPLITS
                             for rel, scene, _ in labelled_scenes(name, seed, eval_per_class)]
        for _, _, scene in self.eval_sources:
            self.remember(scene)
        self.n_pairs, self.seed, self.base = n_pairs, seed, base_url.rstrip("/")
        self.w = SiteWriter(root, seed, base_url)
        self.next_id = 0
        self.counts_format: Counter = Counter()
        # Every 10th pair serves a fault, cycling through all of them in a seeded order first.
        self.fault_order = FAULTS[:]
        self.rng.shuffle(self.fault_order)
        self.fault_offset = self.rng.randrange(10)

    def remember(self, scene: scenes.Scene) -> None:
        self.drawn[(scene.shape, scene.colour, scene.background, scene.count)].append(scene)

    def clashes(self, scene: scenes.Scene) -> bool:
        return any(scenes.same_picture(scene, s) for s in self.drawn[(scene.shape, scene.colour, scene.background, scene.count)])

    def look_alike_of(self, source: scenes.Scene, kind: str) -> scenes.Scene | None:
        """A look-alike of ``source`` (scenes.look_alike) that is not the same picture as one drawn before,
        or None when 21 tries all were (then no look-alike is planted: labelled distinct, it would be a copy)."""
        for _ in range(21):
            other = scenes.look_alike(source, kind, self.look_rng)
            if not self.clashes(other):
                return other
        return None

    def distinct(self, scene: scenes.Scene) -> scenes.Scene:
        """``scene``, or a redrawn one when it is the same picture as one drawn before; remembered."""
        while self.clashes(scene):
            scene = scenes.random_scene(self.redraw_rng)
        self.remember(scene)
        return scene

    def fault_for(self, i: int) -> str | None:
        if i % 10 != self.fault_offset:
            return None
        k = i // 10
        return self.fault_order[k % len(self.fault_order)]

    def run(self) -> None:
        prog = Progress("sample web", self.n_pairs, unit="pairs", every_s=5.0)
        p = 0
        while self.next_id < self.n_pairs:
            k = min(self.rng.randint(3, 8), self.n_pairs - self.next_id)
            page = _Page(self, p, k)
            page.render()
            prog.add(k)
            p += 1
        prog.close()


def sample_is_complete(out_dir: str, n_pairs: int, seed: int, base_url: str) -> bool:
    """Whether ``out_dir`` holds a finished sample web made with these arguments and every labelled
    split this version writes (an older sample lacks the newer splits: it is made again)."""
    root = Path(out_dir)
    if not (root / "_SUCCESS").exists() or not (root / "sample.json").exists():
        return False
    try:
        args = json.loads((root / "sample.json").read_text()).get("args") or {}
    except (ValueError, AttributeError):  # unreadable: not a sample this version can trust, make it again
        return False
    return (args.get("n_pairs") == n_pairs and args.get("seed") == seed
            and str(args.get("base_url", "")).rstrip("/") == base_url.rstrip("/")
            and all((root / name / "classes.json").is_file() for name in LABELLED_SPLITS))


def generate_sample_web(out_dir: str, n_pairs: int = 3000, seed: int = 0,
                        base_url: str = "http://127.0.0.1:8765", *, eval_per_class: int = 25) -> dict:
    """Write the sample web under ``out_dir`` (replacing it) and return the summary (sample.json).

    Written into a temporary sibling folder and renamed when complete, so a crash never leaves
    a half sample behind; ``_SUCCESS`` marks completion.
    """
    if "://" in out_dir:
        raise UserError(f"the sample web is written to a local folder, got {out_dir}")
    if n_pairs < 1:
        raise UserError(f"n_pairs must be >= 1, got {n_pairs}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
        raise UserError(f"base_url must look like http://host:port (no path), got {base_url!r}")
    t0 = time.perf_counter()
    final = Path(out_dir)
    tmp = final.parent / f"{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        gen = _Generator(tmp, n_pairs, seed, base_url, eval_per_class)
        try:
            gen.w.write_file(PLACEHOLDER_PATH, base64.b64decode(DATA_PLACEHOLDER.split(",", 1)[1]))
            gen.w.write_file(BOMB_FILE, bomb_png())
            gen.run()
        finally:
            gen.w.close()
        (tmp / "site" / "faults.json").write_text(json.dumps(gen.w.faults, indent=0, sort_keys=True) + "\n")
        n_eval = {name: write_labelled_split(tmp, name, seed, eval_per_class) for name in LABELLED_SPLITS}
        w = gen.w
        summary = {
            "args": {"n_pairs": n_pairs, "seed": seed, "base_url": base_url.rstrip("/")},
            "pages": w.n_pages, "pairs": w.n_rows, "images": w.n_images, "image_bytes": w.image_bytes,
            "eval_images": n_eval["eval"], "eval_background_images": n_eval["eval_background"], "faulty_urls": len(w.faults),
            "counts": {**{k: dict(sorted(v.items())) for k, v in w.counts.items()},
                       "format": dict(sorted(gen.counts_format.items()))},
            "files": {"site": "site/", "warc": "crawl.warc.gz", "wat": "crawl.warc.wat.gz",
                      "ground_truth": "ground_truth.parquet", "eval": "eval/", "eval_background": "eval_background/"},
        }
        (tmp / "sample.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        (tmp / "_SUCCESS").write_bytes(b"")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    secs = time.perf_counter() - t0
    info(f"sample web: {summary['pairs']} pairs on {summary['pages']} pages, {summary['images']} images "
         f"in {secs:.1f}s -> {final}")
    return {**summary, "out_dir": str(final), "seconds": round(secs, 2)}
