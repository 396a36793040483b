"""What every reader shares: the task's options, one file's figures, a page held for its language,
and the sink that turns the images read into candidate batches (or counted drops) column-wise."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline.extract.text import clean_text_column
from pipeline.extract.urls import resolve_url_column
from pipeline.ids import uids_of_keys
from pipeline.rules import MAX_URL_LENGTH

BATCH_ROWS = 8192


@dataclass(frozen=True)
class Options:
    """What a task needs from the run config (small and picklable)."""

    max_text_length: int = 1000
    lenient: bool = True
    url_col: str = "url"
    caption_col: str = "caption"
    max_url_length: int = MAX_URL_LENGTH
    parser: str = "selectolax"  # | "resiliparse" | "html.parser" (the baseline); see bench/extract.py
    honour_opt_outs: bool = True  # drop the images of pages that opt out of AI training (opt_outs.py)
    user_agent: str = ""  # our UA: a meta or X-Robots-Tag scoped to its product token applies to us

    @classmethod
    def from_config(cls, ec, user_agent: str = "") -> Options:
        return cls(max_text_length=ec.max_text_length, lenient=ec.lenient, url_col=ec.url_col,
                   caption_col=ec.caption_col, max_url_length=ec.max_url_length, parser=ec.html_parser,
                   honour_opt_outs=ec.honour_opt_outs, user_agent=user_agent)


@dataclass
class FileStats:
    """Figures of one input file; the driver sums them into the stage stats."""

    path: str
    format: str = ""
    records: int = 0  # WARC/WAT records or URL-list rows read
    records_fast: int = 0  # WARC/WAT records read by FastWARC …
    records_lenient: int = 0  # … and by the lenient line reader, from where FastWARC failed or doubted
    fallback: str = ""  # why the line reader took over ("" when FastWARC read the whole file)
    responses: int = 0  # WARC response/resource records, WAT records of responses
    pages: int = 0  # HTML pages (WARC responses / WAT records with HTML metadata)
    images: int = 0  # <img> / IMG@/src links / URL-list rows: the stage's input rows
    pairs: int = 0  # candidates emitted (before cross-file dedup)
    opted_out_pages: int = 0  # pages whose images were dropped as opted out of AI training
    drops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def error(self, reason: str, detail: str = "") -> None:
        self.errors[reason] += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(f"{reason}: {detail}"[:300])

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "records": self.records, "records_fast": self.records_fast,
                "records_lenient": self.records_lenient, "fallback": self.fallback, "responses": self.responses,
                "pages": self.pages, "images": self.images, "pairs": self.pairs,
                "opted_out_pages": self.opted_out_pages, "drops": dict(self.drops),
                "errors": dict(self.errors), "error_examples": self.error_examples,
                "seconds": round(self.seconds, 3)}


def cld2_lang(value: str) -> str | None:
    """Top language of a CC ``languages-cld2`` value ('{"reliable":true,"languages":[{"code":"en"…'''."""
    try:
        langs = json.loads(value).get("languages") or []
    except (ValueError, AttributeError):
        return None
    return langs[0].get("code") if langs and isinstance(langs[0], dict) else None


class PendingPage:
    """A page's images held until its CC metadata record (with languages-cld2) has been seen."""

    def __init__(self, uri: str, record_id: str | None, base: str | None, images: list[tuple]):
        self.uri, self.record_id, self.base, self.images, self.lang = uri, record_id, base, images, None


# --------------------------------------------------------------------------- output batches
_IMAGE_ROW = pa.struct([("url", pa.string()), ("alt", pa.string()), ("title", pa.string())])
_PAGE_ROW = pa.struct([("page_url", pa.string()), ("record_id", pa.string()), ("base", pa.string()), ("lang", pa.string())])


def _columns(rows: list[tuple], row_type: pa.StructType) -> list[pa.Array]:
    """The string columns of parsed rows, converted in one pass in C++ (transposing the tuples in
    Python first is slower); rows with a value that is not text go column by column."""
    try:
        table = pa.array(rows, row_type)
    except (pa.ArrowException, UnicodeError):
        return [_strings(list(c)) for c in zip(*rows)]
    return [table.field(i) for i in range(row_type.num_fields)]


def _strings(values: list) -> pa.Array:
    """A string column of parsed values; anything that is not text (a JSON number, a lone surrogate) is replaced."""
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowException, UnicodeError):
        return pa.array([v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else None for v in values],
                        pa.string())


class PairSink:
    """Collects each page's images as they are read; :meth:`flush` turns them into candidates (or
    counted drops) column-wise, so per-image work runs in Arrow kernels, not in Python."""

    def __init__(self, source_file: str, stats: FileStats, opts: Options, unescape: bool = True,
                 caption_source: str = "alt"):
        self.source_file, self.stats, self.opts = source_file, stats, opts
        self.unescape, self.caption_source = unescape, caption_source  # the HTML parser already decoded WARC entities
        self.images: list[tuple] = []  # (url, alt, title) as read
        self.pages: list[tuple] = []  # (page URL, record id, base URL, page language)
        self.n_images: list[int] = []  # images per page

    def add_page(self, images: list[tuple[str | None, str | None, str | None]], base: str | None,
                 page_url: str | None, record_id: str | None, lang: str | None) -> None:
        """A page's (url, alt, title) images (a page without any is not kept: memory stays flat)."""
        if not images:
            return
        self.images += images
        self.pages.append((page_url, record_id, base, lang))
        self.n_images.append(len(images))

    def drop_page(self, n_images: int, reason: str) -> None:
        """A page whose ``n_images`` images are all dropped for ``reason`` (an opt-out): counted, not kept."""
        self.stats.opted_out_pages += 1
        self.stats.images += n_images
        if n_images:
            self.stats.drops[reason] += n_images

    def add_rows(self, images: list[tuple[str | None, str | None, None]], record_ids: list[str]) -> None:
        """A URL list's (url, caption, None) rows: each row is its own page, known by its row id."""
        self.images += images
        self.pages += [(None, rid, None, None) for rid in record_ids]
        self.n_images += [1] * len(images)

    def __len__(self) -> int:
        return len(self.images)

    def full_batch(self) -> Iterator[pa.RecordBatch]:
        """A batch of candidates once BATCH_ROWS images are waiting (none if all were dropped)."""
        if len(self.images) >= BATCH_ROWS:
            batch = self.flush()
            if batch is not None:
                yield batch

    def flush(self) -> pa.RecordBatch | None:
        import numpy as np
        import pyarrow.compute as pc

        from schemas import CANDIDATES

        images, pages, n_images = self.images, self.pages, self.n_images
        self.images, self.pages, self.n_images = [], [], []
        st, opts = self.stats, self.opts
        st.images += len(images)
        if not images:
            return None
        raw_url, alt, title = _columns(images, _IMAGE_ROW)
        page_of = np.repeat(np.arange(len(pages), dtype=np.int64), n_images)
        # text first: most <img> have no alt (real CC); a title stands in for a missing alt
        text = clean_text_column(alt, opts.max_text_length, self.unescape)
        no_alt = pc.equal(text, "")
        title = pc.if_else(no_alt, title, pa.nulls(len(title), pa.string()))
        text = pc.if_else(no_alt, clean_text_column(title, opts.max_text_length, self.unescape), text)
        source = pc.if_else(no_alt, pa.scalar("title"), pa.scalar(self.caption_source))
        has_text = pc.not_equal(text, "")
        empty = len(text) - pc.sum(has_text).as_py()
        if empty:
            st.drops["empty_text"] += empty
        page_url, record_id, base, lang = _columns(pages, _PAGE_ROW)
        url, reasons = resolve_url_column(raw_url, base, page_of, opts.max_url_length, has_text)
        st.drops.update(reasons)
        keep = pc.and_(has_text, pc.is_valid(url))
        url, text, source = (pc.filter(a, keep) for a in (url, text, source))
        page_of = page_of[keep.to_numpy(zero_copy_only=False)]
        st.pairs += len(url)
        if not len(url):
            return None
        keys = pc.binary_join_element_wise(url, text, "\x00").cast(pa.binary()).to_pylist()
        uid = pa.array(uids_of_keys(keys), pa.string())
        page_url, record_id, lang = (c.take(page_of) for c in (page_url, record_id, lang))
        return pa.RecordBatch.from_arrays([uid, url, text, source, page_url, pa.array([self.source_file] * len(url), pa.string()),
                                           record_id, lang], schema=CANDIDATES)
