"""Language ID accuracy per backend on real captions (Multi30k en/de/fr/cs from ../shared/data).

The per-language table is printed even without ``-s`` (captured output is bypassed), e.g.:

    language accuracy on Multi30k (val)      en      de      fr      cs   en-vs-rest
    cascade                               1.000   0.996   0.996   0.990   1.000
"""

import gzip

import pytest

from filters.language import LanguageDetector

LANGS = ("en", "de", "fr", "cs")
# backend → (captions per language, minimum accuracy per language, minimum English-vs-rest accuracy)
BACKENDS = {
    "cascade": (None, 0.98, 0.998),
    "fasttext": (None, 0.97, 0.995),
    "langdetect": (200, 0.95, 0.98),  # pure Python, ~600 captions/s: a subset keeps the test short
}


@pytest.fixture(scope="module")
def multi30k(shared_data):
    folder = shared_data / "langid" / "multi30k"
    if not folder.is_dir():
        pytest.skip(f"Multi30k not present at {folder}")
    out = {}
    for lang in LANGS:
        with gzip.open(folder / f"val.{lang}.gz", "rt", encoding="utf-8") as f:
            out[lang] = [line.strip() for line in f if line.strip()]
    return out


@pytest.mark.shared_data
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_accuracy_per_language(backend, multi30k, capsys):
    limit, min_acc, min_en = BACKENDS[backend]
    det = LanguageDetector(backend)
    acc, en_ok, total = {}, 0, 0
    for lang, texts in multi30k.items():
        texts = texts[:limit] if limit else texts
        pred = [p for p, _ in det.detect(texts)]
        acc[lang] = sum(p == lang for p in pred) / len(texts)
        en_ok += sum((p == "en") == (lang == "en") for p in pred)
        total += len(texts)
    en_vs_rest = en_ok / total
    with capsys.disabled():
        if backend == next(iter(BACKENDS)):
            print(f"\nlanguage accuracy on Multi30k (val) {'':6s}" + "".join(f"{lang:>8s}" for lang in LANGS) + "  en-vs-rest", end="")
        n = f"{limit}/lang" if limit else "all"
        print(f"\n  {backend:12s} ({n:8s})      " + "".join(f"{acc[lang]:8.3f}" for lang in LANGS) + f"  {en_vs_rest:9.4f}", end=" ")
    assert min(acc.values()) >= min_acc, acc
    assert en_vs_rest >= min_en


@pytest.mark.shared_data
def test_cascade_at_least_as_accurate_as_langdetect(multi30k):
    texts = [(t, lang) for lang, ts in multi30k.items() for t in ts[:150]]
    casc = LanguageDetector("cascade").detect([t for t, _ in texts])
    ld = LanguageDetector("langdetect").detect([t for t, _ in texts])
    right = lambda pred: sum(p == lang for (p, _), (_, lang) in zip(pred, texts))  # noqa: E731
    assert right(casc) >= right(ld)
