"""The filter registry: every filter by name, and where its class lives. A new filter goes in one
of the filters/ modules (a ``Filter`` subclass with ``from_config``) and gets one line here.

- ``CAPTION_FILTERS``: what ``filter.chain`` may name (``wit filter``, on url and text); the
  config's list of valid names comes from here.
- ``IMAGE_FILTERS``: the image rules ``wit select`` applies to downloaded, scored pairs, in this
  order; then select drops duplicate images, then applies ``SCORE_FILTERS`` (the CLIP-score cut).
- ``SCORE_FILTERS``: rules on the scores dataset: the CLIP-score cut, and the cut on the zero-shot
  ``unsafe_score`` (``select.max_unsafe_score``; filters/safety.py).

A filter's name is the drop reason recorded for the rows it drops. Classes are named by import
path and imported on first use, so reading the names (the config does) imports no filter.
"""

from __future__ import annotations

import importlib

CAPTION_FILTERS = {
    "blocklisted": "filters.blocklist:BlocklistFilter",
    "url_safety": "filters.url_safety:UrlSafetyFilter",
    "min_length": "filters.text_rules:MinLengthFilter",
    "max_length": "filters.text_rules:MaxLengthFilter",
    "junk": "filters.text_rules:JunkFilter",
    "language": "filters.language:LanguageFilter",
    "dedup": "filters.dedup:DedupFilter",
}
# Chain names that stand for other filters' names (``blocklist``: the filter whose drop reason is
# ``blocklisted``).
ALIASES = {"text_rules": ("junk", "min_length", "max_length"), "blocklist": ("blocklisted",)}
CHAIN_NAMES = (*CAPTION_FILTERS, *ALIASES)  # every name filter.chain accepts

IMAGE_FILTERS = {
    "too_small": "filters.image:MinSideFilter",
    "bad_aspect_ratio": "filters.image:AspectRatioFilter",
}
SCORE_FILTERS = {
    "low_clip_score": "filters.image:ClipScoreFilter",
    "unsafe": "filters.safety:UnsafeFilter",
}

_ALL = {**CAPTION_FILTERS, **IMAGE_FILTERS, **SCORE_FILTERS}


def filter_class(name: str) -> type:
    """The class registered under ``name`` (a KeyError names the known ones)."""
    if name not in _ALL:
        raise KeyError(f"unknown filter {name!r}; known: {', '.join(_ALL)}")
    module, _, cls = _ALL[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build(name: str, cfg, **kw):
    """The filter ``name`` built from a run config (pipeline.config.RunConfig) and ``kw``."""
    return filter_class(name).from_config(cfg, **kw)
