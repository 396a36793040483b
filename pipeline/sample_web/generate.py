"""Generate the sample web: images, HTML pages, a Common-Crawl-style WARC + WAT, the ground truth.

Everything comes from one seeded ``random.Random`` and fixed encoder settings, so the same
arguments give the same bytes in every file. Pages are produced one at a time and written at
once (images, HTML, WARC and WAT records, ground-truth rows in batches), so memory stays flat
whatever ``n_pairs`` is.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import io
import json
import os
import random
import shutil
import struct
import time
import uuid
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.errors import UserError
from pipeline.log import info
from pipeline.progress import Progress
from pipeline.sample_web import captions, scenes
from pipeline.sample_web.server import BOMB_FILE, FAULT_STATUS, FAULTS, FAULTS_WITHOUT_FILE

GROUND_TRUTH = pa.schema([
    pa.field("pair_id", pa.int64(), nullable=False),
    pa.field("page_url", pa.string(), nullable=False),
    pa.field("url", pa.string(), nullable=False),
    pa.field("wat_url", pa.string()),
    pa.field("raw_text", pa.string()),
    pa.field("text", pa.string(), nullable=False),
    pa.field("text_source", pa.string(), nullable=False),
    pa.field("true_caption", pa.string(), nullable=False),
    pa.field("matches_image", pa.bool_(), nullable=False),
    # How the caption relates to the picture (captions.CAPTION_MIX): matching, loose or unrelated,
    # and the way it is loose or unrelated (captions.LOOSE_KINDS, UNRELATED_KINDS); null on junk texts.
    pa.field("caption_kind", pa.string()),
    pa.field("caption_detail", pa.string()),
    pa.field("lang", pa.string()),
    pa.field("junk_kind", pa.string()),
    pa.field("fault", pa.string()),
    pa.field("expected_status", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("image_path", pa.string()),
    # Copies of pictures shown elsewhere (near-duplicates, eval-set copies): what the copy is of
    # and how it was made (scenes.COPY_KINDS); null on every other pair.
    pa.field("near_dup_of", pa.int64()),
    pa.field("eval_copy_of", pa.string()),
    pa.field("copy_kind", pa.string()),
    # Look-alikes: distinct pictures that share a background, an object or a layout with an earlier
    # picture (``look_alike_of``, its pair id) or an eval image (``eval_look_alike_of``), and how
    # (scenes.LOOK_ALIKE_KINDS): labelled distinct, so copy detection's precision is measured where it is hard.
    pa.field("look_alike_of", pa.int64()),
    pa.field("eval_look_alike_of", pa.string()),
    pa.field("look_alike_kind", pa.string()),
])
EVAL_PAIRS = pa.schema([("image", pa.string()), ("caption", pa.string()), ("label", pa.int64())])

JUNK_KINDS = ["filename", "click_here", "empty", "whitespace", "long", "duplicate", "entities",
              "url_as_text", "repeated_char", "single_word"]
MAX_TEXT = 1000
LONG_ALT = 5000
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DATA_PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
PLACEHOLDER_PATH = "img/placeholder.gif"
BATCH_ROWS = 10_000
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


def _record_id(seed: int, *parts: object) -> str:
    digest = hashlib.sha1(":".join(map(str, (seed, *parts))).encode()).digest()
    return f"<urn:uuid:{uuid.UUID(bytes=digest[:16], version=4)}>"


def _date(page: int) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=page)


def _bomb_png(side: int = 12_000) -> bytes:
    """A valid 1-bit PNG of side×side pixels (> 100 MP) that is only a few KB compressed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = (b"\x00" + bytes((side + 7) // 8)) * side
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


class _Writer:
    """Writes one page at a time to site/, the WARC, the WAT and the ground truth."""

    def __init__(self, root: Path, seed: int, base_url: str):
        self.root, self.seed, self.base = root, seed, base_url.rstrip("/")
        self.site = root / "site"
        (self.site / "pages").mkdir(parents=True)
        (self.site / "img").mkdir()
        self._dirs: set[Path] = set()
        self.warc_f = open(root / "crawl.warc.gz", "wb")
        self.wat_f = open(root / "crawl.warc.wat.gz", "wb")
        self.warc = WARCWriter(self.warc_f, gzip=True, warc_version="1.0")
        self.wat = WARCWriter(self.wat_f, gzip=True, warc_version="1.0")
        self.gt = pq.ParquetWriter(root / "ground_truth.parquet", GROUND_TRUTH, compression="zstd")
        self.rows: list[dict] = []
        self.counts: dict[str, Counter] = {k: Counter() for k in ("lang", "junk_kind", "fault", "text_source", "matches_image",
                                                                  "caption_kind", "copy_kind", "look_alike_kind")}
        self.n_images = self.n_pages = self.n_rows = self.image_bytes = 0
        self.faults: dict[str, str] = {}
        self.warcinfo_id = _record_id(seed, "warcinfo")
        info_body = (
            "software: wit-builder sample web\r\nformat: WARC File Format 1.0\r\n"
            f"isPartOf: wit-sample-seed-{seed}\r\noperator: wit-builder\r\n"
        ).encode()
        for w, name in ((self.warc, "crawl.warc.gz"), (self.wat, "crawl.warc.wat.gz")):
            w.write_record(w.create_warc_record(
                "", "warcinfo", payload=io.BytesIO(info_body), length=len(info_body),
                warc_content_type="application/warc-fields",
                warc_headers_dict={"WARC-Record-ID": self.warcinfo_id, "WARC-Date": EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                   "WARC-Filename": name}))

    def write_file(self, rel: str, data: bytes) -> None:
        path = self.site / rel
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        path.write_bytes(data)

    def image(self, rel: str, scene: scenes.Scene, w: int, h: int, fmt: str) -> None:
        data = scenes.encode(scenes.render(scene, w, h), fmt)
        self.write_file(rel, data)
        self.n_images += 1
        self.image_bytes += len(data)

    def row(self, r: dict) -> None:
        self.rows.append(r)
        self.n_rows += 1
        self.counts["lang"][r["lang"] or "none"] += 1
        self.counts["junk_kind"][r["junk_kind"] or "none"] += 1
        self.counts["fault"][r["fault"] or "none"] += 1
        self.counts["text_source"][r["text_source"]] += 1
        self.counts["matches_image"][str(r["matches_image"]).lower()] += 1
        self.counts["caption_kind"][r["caption_kind"] or "none"] += 1
        self.counts["copy_kind"][r["copy_kind"] or "none"] += 1
        self.counts["look_alike_kind"][r["look_alike_kind"] or "none"] += 1
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.gt.write_table(pa.Table.from_pylist(self.rows, schema=GROUND_TRUTH))
            self.rows = []

    def page(self, p: int, url: str, body: bytes, ctype: str, langs: dict[str, int], charset: str, wat_html: dict) -> None:
        """The HTML file, and its request/response/metadata WARC records and WAT record."""
        self.write_file(f"pages/{p:07d}.html", body)
        self.n_pages += 1
        date = _date(p).strftime("%Y-%m-%dT%H:%M:%SZ")
        http_date = _date(p).strftime("%a, %d %b %Y %H:%M:%S GMT")
        resp_id = _record_id(self.seed, p, "response")
        path = url.split("/", 3)[3] if url.count("/") >= 3 else ""
        host = url.split("/")[2]
        req_headers = StatusAndHeaders(f"GET /{path} HTTP/1.1", [
            ("Host", host), ("User-Agent", "CCBot/2.0 (https://commoncrawl.org/faq/)"),
            ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            ("Accept-Encoding", "identity")], is_http_request=True)
        common = {"WARC-Date": date, "WARC-IP-Address": "127.0.0.1", "WARC-Warcinfo-ID": self.warcinfo_id}
        w = self.warc
        w.write_record(w.create_warc_record(url, "request", http_headers=req_headers, warc_headers_dict={
            **common, "WARC-Record-ID": _record_id(self.seed, p, "request"), "WARC-Concurrent-To": resp_id}))
        resp_headers = [("Date", http_date), ("Server", "wit-sample"), ("Content-Type", ctype),
                        ("Content-Length", str(len(body)))]
        offset = self.warc_f.tell()
        w.write_record(w.create_warc_record(
            url, "response", payload=io.BytesIO(body), length=len(body),
            http_headers=StatusAndHeaders("200 OK", resp_headers, protocol="HTTP/1.1"),
            warc_headers_dict={**common, "WARC-Record-ID": resp_id}))
        total = sum(langs.values()) or 1
        cld2 = {"reliable": True, "languages": [
            {"code": lang, "code-iso-639-3": scenes.ISO3[lang], "text-bytes": n, "percent": round(100 * n / total)}
            for lang, n in sorted(langs.items(), key=lambda kv: -kv[1])]}
        meta = (f"fetchTimeMs: {50 + p % 200}\r\ncharset-detected: {charset.upper()}\r\n"
                f"languages-cld2: {json.dumps(cld2, separators=(',', ':'))}\r\n").encode()
        w.write_record(w.create_warc_record(
            url, "metadata", payload=io.BytesIO(meta), length=len(meta), warc_content_type="application/warc-fields",
            warc_headers_dict={**common, "WARC-Record-ID": _record_id(self.seed, p, "metadata"),
                               "WARC-Concurrent-To": resp_id}))
        wat = {
            "Container": {"Filename": "crawl.warc.gz", "Compressed": True, "Offset": str(offset)},
            "Envelope": {
                "Format": "WARC",
                "WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Date": date, "WARC-Record-ID": resp_id,
                                         "WARC-Target-URI": url, "WARC-IP-Address": "127.0.0.1",
                                         "Content-Type": "application/http; msgtype=response"},
                "Payload-Metadata": {
                    "Actual-Content-Type": "application/http; msgtype=response",
                    "HTTP-Response-Metadata": {
                        "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
                        "Headers": dict(resp_headers),
                        "Entity-Length": str(len(body)),
                        "HTML-Metadata": wat_html,
                    },
                },
            },
        }
        wat_body = json.dumps(wat, ensure_ascii=False, separators=(",", ":")).encode()
        self.wat.write_record(self.wat.create_warc_record(
            url, "metadata", payload=io.BytesIO(wat_body), length=len(wat_body), warc_content_type="application/json",
            warc_headers_dict={"WARC-Date": date, "WARC-Record-ID": _record_id(self.seed, p, "wat"),
                               "WARC-Refers-To": resp_id, "WARC-Warcinfo-ID": self.warcinfo_id}))

    def close(self) -> None:
        self.flush()
        self.gt.close()
        self.warc_f.close()
        self.wat_f.close()


def _junk(kind: str, scene: scenes.Scene, url: str, rng: random.Random) -> tuple[str, str | None, bool]:
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
        g, rng = self.g, self.g.rng
        i = g.next_id
        g.next_id += 1
        fault = g.fault_for(i)
        if not fault and self.rows and rng.random() < 0.1:  # the same <img> again (junk "duplicate")
            orig = [k for k, r in enumerate(self.rows) if r["junk_kind"] is None and r["fault"] is None]
            if orig and rng.random() < 0.5:
                k = rng.choice(orig)
                self.tags.append(self.tags[k])
                self.links.append(self.links[k])
                self.rows.append({**self.rows[k], "pair_id": i, "junk_kind": "duplicate"})
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
        true_caption = scenes.english(scene)
        fmt = "png" if fault == "bomb" else ("jpg" if fault else rng.choices(["jpg", "png", "webp"], [0.7, 0.15, 0.15])[0])
        g.counts_format[fmt] += 1
        w = rng.choice([128, 160, 192, 256]) if fault == "truncated" else rng.choice([64, 96, 128, 160, 192])
        h = w if rng.random() < 0.7 else w * 3 // 4
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

        # The text: English captions (matching, loose or unrelated), other languages, junk.
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
            raw, lang, matches = _junk(junk, scene, url, rng)
            kind = None
        if text_source == "title":
            if rng.random() < 0.5:
                attrs.append(("alt", ""))
            attrs.append(("title", title))
            raw_text = title
        else:
            attrs.append(("alt", raw))
            if title:
                attrs.append(("title", title))
            raw_text = raw
        attrs += [("width", str(w)), ("height", str(h))]
        if mode == "data-src":
            attrs.append(("loading", "lazy"))
        self.tags.append("<img " + " ".join(f'{k}="{v}"' for k, v in attrs) + ">")
        link = {"path": "IMG@/src", "url": src}
        for k, v in attrs:
            if k in ("alt", "title"):
                link[k] = v
        self.links.append(link)
        if lang and lang != "en":
            self.langs[lang] += 1
        self.rows.append({
            "pair_id": i, "page_url": self.url, "url": url, "wat_url": wat_url, "raw_text": raw_text,
            "text": clean_text(raw_text), "text_source": text_source, "true_caption": true_caption,
            "matches_image": matches, "caption_kind": kind, "caption_detail": detail, "lang": lang, "junk_kind": junk, "fault": fault,
            "expected_status": FAULT_STATUS[fault] if fault else "success", "label": scene.label,
            "image_path": image_path, "near_dup_of": None, "eval_copy_of": None, "copy_kind": None,
            "look_alike_of": look[1], "eval_look_alike_of": look[2], "look_alike_kind": look[3],
        })

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
            return g.look_alike_of(source, kind), None, f"{split}/{rel_eval}", kind
        if not self.n_older:
            return scene, None, None, None
        pair_id, source, *_ = g.originals[lrng.randrange(self.n_older)]
        return g.look_alike_of(source, kind), pair_id, None, kind

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
        self.w = _Writer(root, seed, base_url)
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

    def look_alike_of(self, source: scenes.Scene, kind: str) -> scenes.Scene:
        """A look-alike of ``source`` (scenes.look_alike) that is not the same picture as one drawn before."""
        other = scenes.look_alike(source, kind, self.look_rng)
        for _ in range(20):
            if not self.clashes(other):
                break
            other = scenes.look_alike(source, kind, self.look_rng)
        return other

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


# The labelled splits, ImageFolder layout: folder → (class of a scene, all classes). "eval" labels
# the object's shape (the natural class, but the slowest thing a small CLIP learns: colour and
# background tell almost every pair in a batch apart); "eval_background" labels the background
# colour, which a few CPU minutes of training already learn, so it shows zero-shot working end to end.
LABELLED_SPLITS = {
    "eval": (lambda s: s.shape, sorted(scenes.SHAPES)),
    "eval_background": (lambda s: f"{s.background} background", sorted(f"{c} background" for c in scenes.COLOUR_NAMES)),
}


EVAL_SIDE = 96


def labelled_scenes(name: str, seed: int, per_class: int) -> list[tuple[str, scenes.Scene, int]]:
    """(<class>/<n>.jpg, scene, label) of a labelled split, drawn from the split's own seed."""
    label_of, classes = LABELLED_SPLITS[name]
    rng = random.Random(f"{seed}-{name}")
    out = []
    for label, cls in enumerate(classes):
        for n in range(per_class):
            scene = scenes.random_scene(rng)
            while label_of(scene) != cls:
                scene = scenes.random_scene(rng)
            out.append((f"{cls}/{n}.jpg", scene, label))
    return out


def _write_labelled_split(root: Path, name: str, seed: int, per_class: int) -> int:
    """A labelled split rendered from its own seed: <class>/<n>.jpg, classes.json (sorted) and
    pairs.parquet (each image with its true caption, for retrieval)."""
    _, classes = LABELLED_SPLITS[name]
    out = root / name
    for cls in classes:
        (out / cls).mkdir(parents=True)
    rows = []
    for rel, scene, label in labelled_scenes(name, seed, per_class):
        (out / rel).write_bytes(scenes.encode(scenes.render(scene, EVAL_SIDE, EVAL_SIDE), "jpg"))
        rows.append({"image": rel, "caption": scenes.english(scene), "label": label})
    (out / "classes.json").write_text(json.dumps(classes) + "\n")
    pq.write_table(pa.Table.from_pylist(rows, schema=EVAL_PAIRS), out / "pairs.parquet", compression="zstd")
    return len(rows)


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
            gen.w.write_file(BOMB_FILE, _bomb_png())
            gen.run()
        finally:
            gen.w.close()
        (tmp / "site" / "faults.json").write_text(json.dumps(gen.w.faults, indent=0, sort_keys=True) + "\n")
        n_eval = {name: _write_labelled_split(tmp, name, seed, eval_per_class) for name in LABELLED_SPLITS}
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
