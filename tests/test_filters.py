"""Caption filters without Spark: text rules, junk patterns, dedup, the chain, language ID basics."""

import pyarrow as pa
import pytest

from filters.chain import FilterChain, expand_names
from filters.dedup import DedupFilter
from filters.language import LanguageDetector, LanguageFilter, ModelMissingError, normalize_code, prepare_text
from filters.text_rules import JUNK_PATTERNS, JunkFilter, MaxLengthFilter, MinLengthFilter, count_words, junk_kind
from pipeline.config import RunConfig, load_config
from pipeline.errors import ConfigError, UserError
from pipeline.ids import make_uid


def batch(texts, urls=None):
    urls = urls or [f"http://example.com/{i}.jpg" for i in range(len(texts))]
    return pa.RecordBatch.from_pydict({
        "uid": [make_uid(u, t or "") for u, t in zip(urls, texts)], "url": urls, "text": texts,
    })


def kept(f, texts):
    res = f.apply(batch(texts))
    return [t for t, k in zip(texts, res.keep) if k]


# --- text rules ------------------------------------------------------------------------------------
def test_min_length_needs_more_than_5_chars_and_more_than_2_words():
    f = MinLengthFilter(min_chars=5, min_words=2)
    texts = ["a b c", "red circle", "two red circles", "a red dot", ""]
    assert kept(f, texts) == ["two red circles", "a red dot"]
    assert kept(MinLengthFilter(0, 0), ["a", ""]) == ["a"]  # 0/0 switches the rule off (except empty)


def test_words_in_scripts_without_spaces():
    assert count_words("two red circles") == 3
    assert count_words("青い背景に赤い丸が二つ") == 5  # 11 characters → 5 "words"
    assert count_words("猫") == 1


def test_max_length():
    f = MaxLengthFilter(max_chars=20)
    assert kept(f, ["x" * 20, "x" * 21, "short one here"]) == ["x" * 20, "short one here"]


@pytest.mark.parametrize("text, kind", [
    ("IMG_1234.JPG", "filename"), ("DSC01234.jpg", "filename"), ("image123.png", "filename"),
    ("photo-42.jpeg", "filename"), ("Screenshot_2023.png", "filename"), ("P0001234.JPG", "filename"),
    ("20200101_123456", "filename"), ("my_holiday_pic.webp", "filename"),
    ("click here", "click_here"), ("Click here to enlarge the photo", "click_here"), ("Click to enlarge", "click_here"),
    ("read more", "click_here"), ("More info", "click_here"),
    ("image", "generic"), ("Product image", "generic"), ("no image available", "generic"), ("logo", "generic"),
    ("view larger image", "generic"), ("image 3", "filename"),
    ("http://127.0.0.1:8765/img/0001/0000001.jpg", "url"), ("www.example.com/cats", "url"),
    ("see https://example.com/a.jpg", "url"), ("example.com", "url"),
    ("!!!!!!!!", "repeated_char"), ("aaaaaa", "repeated_char"), ("- - - - -", "repeated_char"), ("______", "repeated_char"),
])
def test_each_junk_pattern(text, kind):
    assert junk_kind(text) == kind  # the first pattern that matches (JUNK_PATTERNS order)
    assert JUNK_PATTERNS[kind](text)
    assert kept(JunkFilter(), [text]) == []
    assert kept(JunkFilter([]), [text]) == [text]  # every pattern is switchable


@pytest.mark.parametrize("text", [
    "two red circles on a blue background", "An image of a dog playing in the snow",
    "Photo of the Eiffel Tower at night", "I love visiting example.com and their cats every day",
    "A man clicks a photo of his family", "Ein Mann fährt Fahrrad", "Mona Lisa, 1503", "aa bb",
])
def test_real_captions_are_not_junk(text):
    assert junk_kind(text) is None


def test_each_pattern_alone():
    assert [k for k, f in JUNK_PATTERNS.items() if f("______")] == ["repeated_char", "generic"]
    assert kept(JunkFilter(["filename"]), ["click here", "IMG_1.JPG"]) == ["click here"]


def test_unknown_junk_pattern_is_an_error():
    with pytest.raises(ValueError, match="unknown junk pattern"):
        JunkFilter(["nope"])
    with pytest.raises(ConfigError, match="filter.junk_patterns"):
        load_config(overrides={"filter.junk_patterns": ["nope"]})


# --- dedup ---------------------------------------------------------------------------------------
def test_dedup_keeps_first_of_each_url_text_pair_across_batches():
    f = DedupFilter()
    r1 = f.apply(batch(["a cat on a mat", "a cat on a mat", "a dog"], ["u1", "u1", "u1"]))
    assert r1.keep.tolist() == [True, False, True]
    r2 = f.apply(batch(["a cat on a mat", "a cat on a mat"], ["u1", "u2"]))  # same text, other URL: new pair
    assert r2.keep.tolist() == [False, True]


def test_dedup_without_uid_column_hashes_url_and_text():
    f = DedupFilter()
    b = pa.RecordBatch.from_pydict({"url": ["u", "u", "v"], "text": ["t", "t", "t"]})
    assert f.apply(b).keep.tolist() == [True, False, True]


# --- language basics -------------------------------------------------------------------------------
def test_prepare_text_strips_urls_digits_newlines():
    assert prepare_text("A cat\non a mat http://x.com/a.jpg 1234 www.y.org") == "A cat on a mat"
    assert prepare_text(None) == "" and prepare_text("123 456") == ""


def test_normalize_code():
    assert [normalize_code(c) for c in ["zh-cn", "zh-TW", "iw", "nb", "EN", None, "pt_BR"]] == ["zh", "zh", "he", "no", "en", "und", "pt"]


@pytest.mark.parametrize("backend", ["cascade", "fasttext", "langdetect"])
def test_detector_api(backend):
    d = LanguageDetector(backend=backend)
    out = d.detect(["Two dogs are playing with a red ball in the park.", "Zwei Hunde spielen im Park mit einem roten Ball.",
                    "", None, "12345 http://example.com"])
    assert [lang for lang, _ in out] == ["en", "de", "und", "und", "und"]
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for _, s in out)
    assert out[0][1] > 0.5


def test_langdetect_backend_is_reproducible():
    text = ["Война и мир — роман", "ein zwei drei", "a b c d"]
    assert LanguageDetector("langdetect").detect(text) == LanguageDetector("langdetect").detect(text)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelMissingError, match="model file not found: .*nope.ftz"):
        LanguageDetector("fasttext", model_path=tmp_path / "nope.ftz")
    bad = tmp_path / "bad.ftz"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelMissingError, match="cannot load model"):
        LanguageDetector("cascade", model_path=bad)
    with pytest.raises(UserError, match="unknown language backend 'nope'"):
        LanguageDetector("nope")


def test_language_filter_columns_and_threshold():
    texts = ["A brown dog runs through the green grass.", "Un chien brun court dans l'herbe verte.", "   "]
    res = LanguageFilter(["en"], 0.5).apply(batch(texts))
    assert res.keep.tolist() == [True, False, False]
    assert res.columns["lang"].to_pylist() == ["en", "fr", "und"]
    assert res.columns["lang_score"].type == pa.float32()
    res = LanguageFilter(["en", "fr"], 0.0).apply(batch(texts))
    assert res.keep.tolist() == [True, True, False]
    assert LanguageFilter(["en"], 1.0).apply(batch(texts)).keep.tolist() == [False, False, False]


# --- the chain -------------------------------------------------------------------------------------
def test_chain_names_and_aliases():
    assert expand_names(["url_safety", "text_rules", "language", "dedup"]) == [
        "url_safety", "junk", "min_length", "max_length", "language", "dedup"]
    with pytest.raises(UserError, match="unknown filter 'nope'"):
        expand_names(["nope"])
    with pytest.raises(ConfigError, match="filter.chain"):
        load_config(overrides={"filter.chain": ["language", "nope"]})


def test_chain_records_first_filter_that_drops_and_computed_columns():
    cfg = RunConfig()
    chain = FilterChain.from_config(cfg)
    assert chain.names == ["url_safety", "junk", "min_length", "max_length", "language", "dedup"]
    texts = ["A brown dog runs through the green grass.", "IMG_1234.JPG", "tiny", "Ein brauner Hund rennt durch das Gras.",
             "A brown dog runs through the green grass.", "word " * 200, "A cat sleeps on a warm red sofa."]
    urls = ["http://example.com/a.jpg", "http://example.com/b.jpg", "http://example.com/c.jpg", "http://example.com/d.jpg",
            "http://example.com/a.jpg", "http://example.com/e.jpg", "file:///etc/passwd"]
    tagged = chain.tag(batch(texts, urls))
    assert tagged.column("drop_reason").to_pylist() == [None, "junk", "min_length", "language", "dedup", "max_length", "url_safety"]
    # lang is computed for every row the language filter saw, kept or dropped; null for the others
    assert tagged.column("lang").to_pylist() == ["en", None, None, "de", "en", None, None]
    kept_rows, dropped = FilterChain.from_config(cfg).apply(batch(texts, urls))
    assert kept_rows.column("text").to_pylist() == [texts[0]] and "drop_reason" not in kept_rows.column_names
    assert dropped.num_rows == 6


def test_chain_passes_rows_already_dropped_through():
    chain = FilterChain.from_config(RunConfig(), ["min_length"])
    b = pa.table({"url": ["u1", "u2"], "text": ["x", "y"], "drop_reason": ["earlier", None]})
    assert chain.tag(b).column("drop_reason").to_pylist() == ["earlier", "min_length"]


def test_url_safety_in_chain_respects_allow_hosts():
    cfg = RunConfig()
    chain = FilterChain.from_config(cfg, ["url_safety"])
    urls = ["http://127.0.0.1:8765/a.jpg", "https://example.com/a.jpg", "http://10.0.0.1/x.jpg"]
    assert chain.tag(batch(["a b c"] * 3, urls)).column("drop_reason").to_pylist() == ["url_safety", None, "url_safety"]
    cfg.download.allow_hosts = ["127.0.0.1:8765"]
    chain = FilterChain.from_config(cfg, ["url_safety"])
    assert chain.tag(batch(["a b c"] * 3, urls)).column("drop_reason").to_pylist() == [None, None, "url_safety"]


# --- the registry ------------------------------------------------------------------------------------
def test_one_registry_names_and_builds_every_filter():
    import typing

    from filters import registry
    from filters.base import Filter
    from pipeline.config import FilterConfig

    chain_type = FilterConfig.model_fields["chain"].annotation  # list[Literal[...]]
    assert set(typing.get_args(typing.get_args(chain_type)[0])) == set(registry.CHAIN_NAMES)
    assert set(registry.CHAIN_NAMES) == set(registry.CAPTION_FILTERS) | set(registry.ALIASES)
    cfg = RunConfig()
    for name in [*registry.CAPTION_FILTERS, *registry.IMAGE_FILTERS, *registry.SCORE_FILTERS]:
        f = registry.build(name, cfg)
        assert isinstance(f, Filter) and f.name == name  # a filter's name is its drop reason
    cfg.filter.max_chars, cfg.select.min_side = 7, 40
    assert registry.build("max_length", cfg).max_chars == 7 and registry.build("too_small", cfg).min_side == 40
    with pytest.raises(KeyError, match="unknown filter 'nope'"):
        registry.filter_class("nope")
    with pytest.raises(UserError, match="unknown filter 'too_small'"):  # not a caption filter
        expand_names(["too_small"])


# --- image and CLIP-score rules (wit select) --------------------------------------------------------
def image_batch(sizes, scores=None):
    """sizes: (original_width, original_height, width, height) per row."""
    cols = list(zip(*sizes)) if sizes else [[], [], [], []]
    return pa.RecordBatch.from_pydict({
        "original_width": pa.array(cols[0], pa.int32()), "original_height": pa.array(cols[1], pa.int32()),
        "width": pa.array(cols[2], pa.int32()), "height": pa.array(cols[3], pa.int32()),
        "clip_score": pa.array(scores if scores is not None else [0.5] * len(sizes), pa.float32()),
    })


def test_image_rules_use_original_sizes_and_ignore_a_missing_side():
    from filters.image import AspectRatioFilter, MinSideFilter

    sizes = [
        (400, 300, 256, 256),      # fine
        (120, 300, 256, 256),      # short side 120
        (None, None, 200, 90),     # no original size: the stored one
        (None, 500, None, None),   # one side known: short = long = 500
        (None, None, None, None),  # nothing known
        (1600, 400, 256, 256),     # 4:1
        (0, 300, 256, 256),        # a zero side
    ]
    b = image_batch(sizes)
    assert MinSideFilter(200).apply(b).keep.tolist() == [True, False, False, True, False, True, False]
    assert MinSideFilter(0).apply(b).keep.all()  # 0 switches it off, unknown sizes included
    assert AspectRatioFilter(3.0).apply(b).keep.tolist() == [True, True, True, True, True, False, False]
    assert AspectRatioFilter(4.0).apply(b).keep.tolist() == [True, True, True, True, True, True, False]
    assert MinSideFilter(10).apply(image_batch([])).keep.tolist() == []


def test_clip_score_rule_threshold_or_pool_cut():
    from filters.image import ClipScoreFilter

    b = image_batch([(300, 300, 256, 256)] * 5, [0.1, 0.25, 0.3, float("nan"), None])
    assert ClipScoreFilter(0.25).apply(b).keep.tolist() == [False, True, True, True, True]  # kept: >= cut
    assert ClipScoreFilter(0.25, inclusive=False).apply(b).keep.tolist() == [False, False, True, True, True]
    # float32 scores compare as float64 (as in Spark): 0.3f is a little over 0.3, under 0.30000002
    assert ClipScoreFilter(0.3, inclusive=False).apply(b).keep.tolist()[2] is True
    assert ClipScoreFilter(0.30000002).apply(b).keep.tolist()[2] is False
    assert ClipScoreFilter(None).apply(b).keep.all()

    cfg = RunConfig()
    cfg.select.threshold, cfg.select.top_fraction = None, 0.3
    assert ClipScoreFilter.pool_quantile(cfg) == pytest.approx(0.7)
    rule = ClipScoreFilter.from_config(cfg, pool_cut=0.25)
    assert (rule.cutoff, rule.inclusive) == (0.25, False)  # top fraction: ties at the cut drop together
    assert ClipScoreFilter.from_config(cfg, pool_cut=None).cutoff is None  # an empty pool: nothing to cut
    cfg.select.threshold = 0.2
    assert ClipScoreFilter.pool_quantile(cfg) is None
    assert (ClipScoreFilter.from_config(cfg).cutoff, ClipScoreFilter.from_config(cfg).inclusive) == (0.2, True)
    cfg.select.threshold, cfg.select.top_fraction = None, 1.0
    assert ClipScoreFilter.pool_quantile(cfg) is None and ClipScoreFilter.from_config(cfg).cutoff is None
