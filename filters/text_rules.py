"""Caption text rules (LAION / DataComp style), each its own filter so drops say which rule fired.

- ``min_length``: more than ``min_chars`` characters (LAION: > 5) and more than ``min_words``
  words (DataComp: > 2); Chinese, Japanese and Thai text count one word per two characters.
- ``max_length``: at most ``max_chars`` characters (longer alt texts are keyword stuffing; CLIP
  reads 77 tokens, ~300 characters, anyway).
- ``junk``: alt texts that say nothing about the image (patterns below, each switchable).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from filters.base import Filter, FilterResult

_IMG_EXT = r"(?:jpe?g|jfif|png|gif|webp|bmp|tiff?|svg|heic|heif|avif|ico)"
_FILENAME = re.compile(
    rf"""^(?:
        [^\s/]+\.{_IMG_EXT}                                     # anything.jpg (no spaces)
      | (?:img|image|dsc[nf]?|dcim|pxl|pic|photo|screenshot|scan|mvimg|wp|vid)[\s_-]*\d[\w-]*  # IMG_1234, DSC01234
      | [\w-]*\d{{4,}}[\w-]*_[\w-]+                              # 20200101_123456, file_12345_n
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
_CLICK = re.compile(
    r"\b(?:click|tap)\s*(?:here|to|for|on|me)\b|^\W*(?:read|learn|see|view)\s+more\W*$|^\W*more\s+info\W*$", re.IGNORECASE
)
# Scripts written without spaces between words: one "word" per two characters for min_words.
_NO_SPACE_SCRIPT = re.compile(r"[\u0e00-\u0eff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Texts made only of these words carry no description ("image", "product image", "logo").
_GENERIC = frozenset(
    """image images img imgs picture pictures pic pics photo photos photograph thumbnail thumb
    thumbnails icon icons logo banner placeholder spacer untitled null undefined none nan alt text
    blank default featured product main small large medium preview gallery loading not found no
    available missing view larger enlarge zoom full size here the a an of""".split()
)
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|de|uk|io|info|html?|php|aspx?)(?:/\S*)?\b", re.IGNORECASE)


def _is_filename(text: str) -> bool:
    return bool(_FILENAME.match(text.strip()))


def _is_click_here(text: str) -> bool:
    return bool(_CLICK.search(text))


def _is_generic(text: str) -> bool:
    words = re.sub(r"[\W\d_]+", " ", text.lower()).split()
    return not words or all(w in _GENERIC for w in words)


def _is_url(text: str) -> bool:
    """A URL or domain written as the caption (at most one other word left beside it)."""
    if not _URL.search(text):
        return False
    return len(_URL.sub(" ", text).split()) <= 1


def _is_repeated_char(text: str) -> bool:
    chars = set(text.replace(" ", ""))
    return len(chars) == 1 and len(text.strip()) > 1


JUNK_PATTERNS: dict[str, Callable[[str], bool]] = {
    "filename": _is_filename,
    "click_here": _is_click_here,
    "url": _is_url,
    "repeated_char": _is_repeated_char,
    "generic": _is_generic,  # last: it also catches texts without letters
}


def junk_kind(text: str, patterns: Sequence[str] = tuple(JUNK_PATTERNS)) -> str | None:
    """The first junk pattern a text matches, or None."""
    for name in patterns:
        if JUNK_PATTERNS[name](text):
            return name
    return None


def count_words(text: str) -> int:
    """Whitespace-separated words; in Chinese, Japanese or Thai text, one word per two characters."""
    n = 0
    for token in text.split():
        dense = len(_NO_SPACE_SCRIPT.findall(token))
        n += max(1, dense // 2) if dense else 1
    return n


def _texts(batch: pa.RecordBatch) -> list[str]:
    return [t or "" for t in batch.column("text").to_pylist()]


class MinLengthFilter(Filter):
    name = "min_length"

    def __init__(self, min_chars: int = 5, min_words: int = 2):
        self.min_chars, self.min_words = min_chars, min_words

    @classmethod
    def from_config(cls, cfg) -> MinLengthFilter:
        return cls(cfg.filter.min_chars, cfg.filter.min_words)

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        texts = _texts(batch)
        keep = np.array([len(t.strip()) > self.min_chars and count_words(t) > self.min_words for t in texts], dtype=bool)
        return FilterResult(keep)


class MaxLengthFilter(Filter):
    name = "max_length"

    def __init__(self, max_chars: int = 500):
        self.max_chars = max_chars

    @classmethod
    def from_config(cls, cfg) -> MaxLengthFilter:
        return cls(cfg.filter.max_chars)

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        return FilterResult(np.array([len(t) <= self.max_chars for t in _texts(batch)], dtype=bool))


class JunkFilter(Filter):
    """Drop texts matching any enabled junk pattern (names in ``JUNK_PATTERNS``)."""

    name = "junk"

    def __init__(self, patterns: Sequence[str] = tuple(JUNK_PATTERNS)):
        unknown = set(patterns) - set(JUNK_PATTERNS)
        if unknown:
            raise ValueError(f"unknown junk pattern(s) {sorted(unknown)}; known: {', '.join(JUNK_PATTERNS)}")
        self.patterns = tuple(patterns)

    @classmethod
    def from_config(cls, cfg) -> JunkFilter:
        return cls(cfg.filter.junk_patterns)

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        return FilterResult(np.array([junk_kind(t, self.patterns) is None for t in _texts(batch)], dtype=bool))
