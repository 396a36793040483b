"""AI-training opt-outs beyond robots.txt's own rules: pure functions, each returning the reason a URL or a
page is opted out (one of ``REASONS``), or None.

How to call them (the fetcher per URL, the crawler per page, the extractor per page)::

    before_fetch_opt_out(url, rules, tdmrep)          # the origin's robots.txt AI groups, then its tdmrep.json
    after_fetch_opt_out(resp.raw.headers, url, user_agent)   # tdm-reservation, then X-Robots-Tag headers
    # … or one signal at a time:
    robots_ai_opt_out(rules, url)                     # RobotsRules of the origin → "opted_out_robots_ai"
    tdm = TdmRep.parse(body_of_well_known_tdmrep_json)   # once per origin, like robots.txt (to_bytes/from_bytes)
    tdmrep_opt_out(url, tdmrep=tdm, headers=resp_headers, metas=page_metas)   # → "opted_out_tdmrep"
    header_opt_out(resp_headers, user_agent)          # X-Robots-Tag noai/noimageai → "opted_out_header"
    meta_opt_out(page_metas, user_agent)              # <meta name="robots"|"CCBot"… content="noai"> → "opted_out_meta"
    page_opt_out(html_metas(html), headers, url=…)    # a page's own signals, in the order below

``headers`` may be a urllib3 ``HTTPHeaderDict`` (``resp.raw.headers``: repeated headers kept apart), (name,
value) pairs, or any mapping. Pass the first two where X-Robots-Tag matters: a mapping such as requests'
``resp.headers`` joins repeated headers with commas, and then the token of a scoped header
(``googlebot: nofollow``) also scopes the directives of the headers after it.
``metas`` are (name, content) pairs: :func:`html_metas` of a page, or a WAT record's ``Head.Metas``.

What counts:

- robots.txt: a ``Disallow`` matching the URL in a group that names one of ``AI_TOKENS`` itself (a ``*``
  group alone is not an AI opt-out: it addresses every crawler and is applied as robots.txt).
- TDMRep (W3C TDM Reservation Protocol, final report 2024): ``tdm-reservation: 1`` reserves TDM rights;
  ``0`` does not; any other value is unset. The ``/.well-known/tdmrep.json`` rule that applies is the
  first whose ``location`` (robots.txt path syntax: ``*``, ``$``, the same percent-encoding rules) matches;
  a response header supersedes the file and a page's ``<meta name="tdm-reservation">`` supersedes both,
  as the spec's processing priority says. ``tdm-policy`` is reported by :func:`tdm_declaration`.
- ``X-Robots-Tag`` (any number of headers, comma lists, ``<token>: d1, d2`` scoping the directives that
  follow it in that header) and ``<meta name="robots">`` / ``<meta name="<token>">``: a directive in
  ``directives`` (default ``noai``, ``noimageai``) addressed to everyone, to our product token or to
  one of ``AI_TOKENS``. ``unavailable_after:``/``max-…:`` values are directives, not tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from pipeline.fetch.robots_rules import RobotsRules, Rule, compile_rule, normalise, product_token, url_path

OPTED_OUT_ROBOTS_AI = "opted_out_robots_ai"
OPTED_OUT_TDMREP = "opted_out_tdmrep"
OPTED_OUT_HEADER = "opted_out_header"
OPTED_OUT_META = "opted_out_meta"
REASONS = (OPTED_OUT_ROBOTS_AI, OPTED_OUT_TDMREP, OPTED_OUT_HEADER, OPTED_OUT_META)

# Product tokens of crawlers that collect AI-training data, as their operators document them (2024-2026).
# A robots.txt group for any of them that disallows a URL means "not for AI training".
AI_TOKENS: tuple[str, ...] = (
    "CCBot",  # Common Crawl (the source of most open image-text sets)
    "GPTBot",  # OpenAI training
    "Google-Extended",  # Google Gemini/Vertex training (robots.txt-only token)
    "ClaudeBot", "anthropic-ai", "Claude-Web",  # Anthropic
    "Applebot-Extended",  # Apple foundation-model training (robots.txt-only token)
    "meta-externalagent", "FacebookBot",  # Meta AI training
    "Bytespider",  # ByteDance
    "PerplexityBot",  # Perplexity
    "cohere-ai", "cohere-training-data-crawler",  # Cohere
    "Amazonbot",  # Amazon (models)
    "Diffbot",  # Diffbot knowledge graph / LLM data
    "AI2Bot",  # Allen Institute for AI
    "Omgilibot", "Webzio-Extended",  # Webz.io data for LLMs
    "ImagesiftBot",  # image datasets
    "Timpibot", "YouBot", "PanguBot",
    "img2dataset",  # the image-dataset downloader this builder replaces
)
AI_DIRECTIVES: frozenset[str] = frozenset({"noai", "noimageai"})
# X-Robots-Tag / robots meta directives that carry a value after a colon (never a user-agent scope).
_VALUE_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
_SCOPE = re.compile(r"[A-Za-z0-9_-]+\Z")


# --------------------------------------------------------------------------- robots.txt AI tokens
def robots_ai_opt_out(rules: RobotsRules, url: str, tokens: Iterable[str] = AI_TOKENS) -> str | None:
    """``opted_out_robots_ai`` when a group naming one of ``tokens`` disallows ``url``."""
    named = [t for t in tokens if product_token(t) in rules.agents]  # most robots.txt name none of them
    return OPTED_OUT_ROBOTS_AI if any(rules.disallows_agent(t, url) for t in named) else None


# --------------------------------------------------------------------------- headers and metas
def header_values(headers: Any, name: str) -> list[str]:
    """Every value of header ``name`` (any case) in a urllib3/requests/mapping/pairs header collection."""
    if headers is None:
        return []
    if hasattr(headers, "getlist"):  # urllib3's HTTPHeaderDict
        return [str(v) for v in headers.getlist(name)]
    if hasattr(headers, "get_all"):  # http.client / email messages
        return [str(v) for v in headers.get_all(name) or ()]
    items = headers.items() if isinstance(headers, Mapping) else headers
    low = name.lower()
    return [str(v) for k, v in items if str(k).lower() == low]


def robots_tag_directives(value: str) -> list[tuple[str | None, str]]:
    """(scope token or None, directive) pairs of one X-Robots-Tag value or robots meta content:
    ``"otherbot: noindex, nofollow"`` → [("otherbot", "noindex"), ("otherbot", "nofollow")]."""
    out: list[tuple[str | None, str]] = []
    scope: str | None = None
    for item in value.split(","):
        item = item.strip()
        head, sep, rest = item.partition(":")
        head = head.strip().lower()
        if sep and head not in _VALUE_DIRECTIVES and _SCOPE.match(head):
            scope, item = head, rest.strip()  # "<token>: directives…": the token scopes what follows
            head, sep, _ = item.partition(":")
            head = head.strip().lower()
        if sep and head in _VALUE_DIRECTIVES:
            out.append((scope, head))
        else:
            out.extend((scope, word) for word in item.lower().split())
    return out


def _our_scopes(user_agent: str, tokens: Iterable[str]) -> set[str]:
    return {product_token(user_agent), *(product_token(t) for t in tokens)} - {""}


def _wanted(directives: Iterable[str]) -> set[str]:
    """The directives asked for, plus ``none`` when it implies one of them (none = noindex, nofollow)."""
    wanted = {d.lower() for d in directives}
    return wanted | {"none"} if wanted & {"noindex", "nofollow"} else wanted


def header_opt_out(headers: Any, user_agent: str = "", tokens: Iterable[str] = AI_TOKENS,
                   directives: Iterable[str] = AI_DIRECTIVES) -> str | None:
    """``opted_out_header`` when an X-Robots-Tag header gives one of ``directives`` to every crawler,
    to us (``user_agent``'s product token) or to one of ``tokens``."""
    wanted, scopes = _wanted(directives), _our_scopes(user_agent, tokens)
    for value in header_values(headers, "X-Robots-Tag"):
        for scope, directive in robots_tag_directives(value):
            if directive in wanted and (scope is None or scope in scopes):
                return OPTED_OUT_HEADER
    return None


def meta_opt_out(metas: Iterable[tuple[str | None, str | None]], user_agent: str = "",
                 tokens: Iterable[str] = AI_TOKENS, directives: Iterable[str] = AI_DIRECTIVES) -> str | None:
    """``opted_out_meta`` when ``<meta name="robots">`` or a meta named after us or one of ``tokens``
    (``<meta name="CCBot" content="noai">``) lists one of ``directives``."""
    wanted, scopes = _wanted(directives), _our_scopes(user_agent, tokens)
    for name, content in metas:
        name = (name or "").strip().lower()
        if name != "robots" and name not in scopes:
            continue
        for scope, directive in robots_tag_directives(content or ""):
            if directive in wanted and (scope is None or scope in scopes):
                return OPTED_OUT_META
    return None


# --------------------------------------------------------------------------- TDMRep
def tdm_value(value: Any) -> int | None:
    """A ``tdm-reservation`` value: 0 or 1 (number or text); anything else is unset (None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    return None


@dataclass(frozen=True)
class TdmRule:
    location: Rule
    reservation: int | None
    policy: str | None


class TdmRep:
    """The rules of one origin's ``/.well-known/tdmrep.json``. A body that is not a JSON array of rule
    objects means the origin does not implement the protocol: no rules, and ``error`` says why."""

    def __init__(self, body: bytes, rules: list[TdmRule], error: str | None = None):
        self._body, self.rules, self.error = body, rules, error

    @classmethod
    def parse(cls, body: bytes | str) -> TdmRep:
        raw = body.encode("utf-8") if isinstance(body, str) else body
        try:
            doc = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as e:
            return cls(raw, [], f"not JSON: {e}")
        if not isinstance(doc, list):
            return cls(raw, [], f"a JSON {type(doc).__name__}, not an array of rules")
        rules = []
        for item in doc:
            loc = item.get("location") if isinstance(item, dict) else None
            rule = compile_rule(loc.strip(), False) if isinstance(loc, str) and loc.strip() else None
            if rule is not None:
                policy = item.get("tdm-policy")
                rules.append(TdmRule(rule, tdm_value(item.get("tdm-reservation")),
                                     policy if isinstance(policy, str) and policy.strip() else None))
        return cls(raw, rules, None if rules or not doc else "no rule with a usable location")

    @classmethod
    def from_bytes(cls, body: bytes) -> TdmRep:
        return cls.parse(body)

    def to_bytes(self) -> bytes:
        return self._body

    def declaration(self, url: str) -> tuple[int | None, str | None]:
        """(tdm-reservation, tdm-policy) of the first rule whose location matches ``url``; (None, None) if none."""
        path, _ = normalise(url_path(url))
        for rule in self.rules:
            if rule.location.matches(path):
                return rule.reservation, rule.policy
        return None, None


def _first_declaration(pairs: Iterable[tuple[Any, Any]]) -> tuple[int | None, str | None]:
    """The first valid (reservation, policy) among (reservation value, policy value) candidates."""
    for reservation, policy in pairs:
        value = tdm_value(reservation)
        if value is not None:
            return value, (policy.strip() or None) if isinstance(policy, str) else None
    return None, None


def tdm_declaration(url: str = "/", tdmrep: TdmRep | None = None, headers: Any = None,
                    metas: Iterable[tuple[str | None, str | None]] = ()) -> tuple[int | None, str | None]:
    """The (tdm-reservation, tdm-policy) that applies: the file's rule, superseded by the response's
    headers, superseded by the page's metas (TDMRep "processing priority")."""
    value, policy = tdmrep.declaration(url) if tdmrep is not None else (None, None)
    head_policy = (header_values(headers, "tdm-policy") or [None])[0]
    got = _first_declaration((v, head_policy) for v in header_values(headers, "tdm-reservation"))
    if got[0] is not None:
        value, policy = got
    metas = [((n or "").strip().lower(), c) for n, c in metas]
    meta_policy = next((c for n, c in metas if n == "tdm-policy"), None)
    got = _first_declaration((c, meta_policy) for n, c in metas if n == "tdm-reservation")
    if got[0] is not None:
        value, policy = got
    return value, policy


def tdmrep_opt_out(url: str = "/", tdmrep: TdmRep | None = None, headers: Any = None,
                   metas: Iterable[tuple[str | None, str | None]] = ()) -> str | None:
    """``opted_out_tdmrep`` when the TDM reservation that applies (see :func:`tdm_declaration`) is 1."""
    return OPTED_OUT_TDMREP if tdm_declaration(url, tdmrep, headers, metas)[0] == 1 else None


# --------------------------------------------------------------------------- the fetch path
def before_fetch_opt_out(url: str, rules: RobotsRules | None = None, tdmrep: TdmRep | None = None,
                         tokens: Iterable[str] = AI_TOKENS) -> str | None:
    """What the origin says about ``url`` before it is requested: its robots.txt groups for AI tokens,
    then its tdmrep.json (a reservation there is honoured without asking the URL itself, which could
    only lift it with a ``tdm-reservation: 0`` header)."""
    return ((robots_ai_opt_out(rules, url, tokens) if rules is not None else None)
            or tdmrep_opt_out(url, tdmrep))


def after_fetch_opt_out(headers: Any, url: str = "/", user_agent: str = "", tokens: Iterable[str] = AI_TOKENS,
                        directives: Iterable[str] = AI_DIRECTIVES) -> str | None:
    """What a response's headers say: ``tdm-reservation: 1`` (``opted_out_tdmrep``), then X-Robots-Tag
    (``opted_out_header``). Pass urllib3's ``resp.raw.headers`` (repeated headers kept apart)."""
    return tdmrep_opt_out(url, None, headers) or header_opt_out(headers, user_agent, tokens, directives)


# --------------------------------------------------------------------------- pages
def page_opt_out(metas: Iterable[tuple[str | None, str | None]] = (), headers: Any = None, user_agent: str = "",
                 url: str = "/", tdmrep: TdmRep | None = None, tokens: Iterable[str] = AI_TOKENS,
                 directives: Iterable[str] = AI_DIRECTIVES) -> str | None:
    """A page's opt-out from its own signals, checked in this order: TDMRep (file, headers, metas),
    X-Robots-Tag headers, robots metas. None when the page may be used."""
    metas = list(metas)
    return (tdmrep_opt_out(url, tdmrep, headers, metas) or header_opt_out(headers, user_agent, tokens, directives)
            or meta_opt_out(metas, user_agent, tokens, directives))


_HEAD_END = re.compile(r"</head\s*>|<body[\s>]", re.I)


class _MetaParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.metas: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "meta":
            a = dict(attrs)
            if a.get("name"):
                self.metas.append((a["name"], a.get("content") or ""))


def html_metas(html: str | bytes) -> list[tuple[str, str]]:
    """(name, content) of every ``<meta name=…>`` in a page's head (up to ``</head>`` or ``<body>``)."""
    if isinstance(html, bytes):
        html = html.decode("utf-8", "replace")
    m = _HEAD_END.search(html)
    parser = _MetaParser()
    try:
        parser.feed(html[:m.start()] if m else html)
        parser.close()
    except (AssertionError, ValueError):  # html.parser's rare failures on broken markup: keep what was read
        pass
    return parser.metas
