"""The built-in sample web: a deterministic little web of shape images, pages, WARC/WAT and faults.

``generate_sample_web`` writes it (``wit sample``); ``SampleWebServer`` serves its ``site/`` with
the faults a real crawl meets (``wit serve``). See README "Sample web" and the contract.
"""

from __future__ import annotations

from pipeline.sample_web.cli import register
from pipeline.sample_web.server import FAULT_STATUS, FAULTS, SampleWebServer


def generate_sample_web(out_dir: str, n_pairs: int = 3000, seed: int = 0,
                        base_url: str = "http://127.0.0.1:8765", **kw) -> dict:
    """Write the sample web under ``out_dir``; same arguments → same bytes. Returns the summary."""
    from pipeline.sample_web.generate import generate_sample_web as _generate

    return _generate(out_dir, n_pairs=n_pairs, seed=seed, base_url=base_url, **kw)


__all__ = ["FAULTS", "FAULT_STATUS", "SampleWebServer", "generate_sample_web", "register"]
