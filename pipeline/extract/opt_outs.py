"""Page-level AI-training opt-outs at extraction: a page that says ``noai``/``noimageai`` (robots meta, an
agent-named meta, or its X-Robots-Tag response header) or reserves TDM rights (``tdm-reservation: 1``
as a meta or a header) gives no candidates; its images are dropped as ``opted_out_meta``,
``opted_out_header`` or ``opted_out_tdmrep`` (pipeline/fetch/consent.py decides, in its order).

Pages are checked only when a marker (``noai``, ``noimageai``, ``tdm-reservation``) occurs in them, so
the cost on the pages that say nothing is one regex search. Switched off by ``extract.honour_opt_outs``.
"""

from __future__ import annotations

from typing import Any

from pipeline.fetch.consent import html_metas, page_opt_out


def _has_marker(text: str | bytes) -> bool:
    """Whether noai, noimageai or tdm-reservation occurs, in any case. Lower-casing a copy and three
    substring searches is ~20x faster than one case-insensitive regex with alternatives."""
    low = text.lower()
    if isinstance(low, bytes):
        return b"noai" in low or b"noimageai" in low or b"tdm-reservation" in low
    return "noai" in low or "noimageai" in low or "tdm-reservation" in low
# The response headers that can opt a page out (kept by the WARC reader's HTTP header parser).
CONSENT_HEADERS = ("x-robots-tag", "tdm-reservation", "tdm-policy")


def warc_page_opt_out(html: str, headers: dict[str, str], user_agent: str = "") -> str | None:
    """The opt-out reason of a WARC page (decoded HTML; the HTTP headers ``_parse_http`` kept, repeated
    ones joined by newlines), or None."""
    pairs = [(name, value) for name in CONSENT_HEADERS for value in headers.get(name, "").split("\n") if value]
    end = html.find("</head")  # the metas are in the head: search only it (a page's body is most of it)
    if not pairs and not _has_marker(html[:end] if end >= 0 else html):
        return None
    return page_opt_out(html_metas(html), pairs, user_agent)


def wat_page_opt_out(payload: bytes, html_meta: dict[str, Any], http_meta: dict[str, Any],
                     user_agent: str = "") -> str | None:
    """The opt-out reason of a WAT page record (its ``HTML-Metadata`` with ``Head.Metas``, its
    ``HTTP-Response-Metadata`` with ``Headers``), or None. ``payload`` is the record's raw JSON."""
    if not _has_marker(payload):
        return None
    metas = [(m.get("name"), m.get("content")) for m in (html_meta.get("Head") or {}).get("Metas") or ()
             if isinstance(m, dict) and isinstance(m.get("name"), str)]
    headers = http_meta.get("Headers") or {}
    pairs = []
    if isinstance(headers, dict):
        for name, value in headers.items():
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and str(name).lower() in CONSENT_HEADERS:
                    pairs.append((str(name), v))
    return page_opt_out([(n, c if isinstance(c, str) else "") for n, c in metas], pairs, user_agent)
