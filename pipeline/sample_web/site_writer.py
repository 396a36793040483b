"""The sample web's files, one page at a time: site/ (HTML and images), a Common-Crawl-style WARC
and WAT of the pages, and the ground truth (Parquet, written in batches), so memory stays flat
whatever the web's size. Fixed record ids, dates and encoder settings: the same pages give the
same bytes."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import struct
import uuid
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.sample_web import scenes

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

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
BATCH_ROWS = 10_000


def _record_id(seed: int, *parts: object) -> str:
    digest = hashlib.sha1(":".join(map(str, (seed, *parts))).encode()).digest()
    return f"<urn:uuid:{uuid.UUID(bytes=digest[:16], version=4)}>"


def _date(page: int) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=page)


def bomb_png(side: int = 12_000) -> bytes:
    """A valid 1-bit PNG of side×side pixels (> 100 MP) that is only a few KB compressed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = (b"\x00" + bytes((side + 7) // 8)) * side
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


class SiteWriter:
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
