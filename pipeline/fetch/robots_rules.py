"""robots.txt rules as RFC 9309 defines them, with the typos Google's reference parser accepts.

How to call it (the fetcher, the robots table and the consent checks all use this one class)::

    rules = RobotsRules.parse(body)                  # the bytes of a 2xx robots.txt (only 500 KiB are read)
    rules.allowed("wit-builder/1.0 (+https://x)", "https://host/a/b?c=d")   # a UA string or token; a URL or a path
    rules.crawl_delay("wit-builder")                 # seconds, or None
    rules.sitemaps                                   # every Sitemap: value, in file order (not group-bound)
    rules.disallows_agent("GPTBot", url)             # a group that names GPTBot itself disallows url
    RobotsRules.allow_all(), RobotsRules.disallow_all()   # the outcomes of a 4xx / an unreachable robots.txt
    RobotsRules.from_bytes(rules.to_bytes())         # what a robots table stores: the body that was read

What it implements:

- Lines end at CR, LF or CRLF; a UTF-8 byte-order mark (or the start of one) is skipped; ``#`` starts a
  comment; keys are case-insensitive and may carry Google's accepted typos (``useragent``, ``user agent``,
  ``dissallow``, ``site-map`` …) or miss their colon (``disallow /``, exactly two words). Only the first
  500 KiB are parsed (a line cut by the limit is dropped), each line at most 16,663 bytes (Google's limit).
- A group is one or more consecutive ``User-agent`` lines and the rules after them; blank lines, comments,
  ``Sitemap``, ``Crawl-delay`` and unknown lines do not end it, only a ``User-agent`` line after a rule does.
  Rules before any ``User-agent`` are ignored.
- Agents are product tokens: the user-agent value up to its first character outside ``[A-Za-z0-9_-]``
  (``Googlebot/2.1`` → ``googlebot``), compared whole and case-insensitively; ours is taken from our UA
  string the same way (``wit-builder/1.0 (+…)`` → ``wit-builder``), so a group for ``it`` or ``builder``
  does not apply to us. Every group naming an agent is merged; ``*`` (``* …`` too) applies only to agents
  that no group names; no group at all → everything allowed.
- Matching: rules must start with ``/`` or ``*`` (others never match, as in Google's parser); ``*`` is any
  run of characters, a final ``$`` anchors the end; the longest rule (octets of its normalised pattern)
  wins and ``Allow`` wins a tie; an empty rule is ignored; ``/robots.txt`` is always allowed; Google's
  ``Allow: …/index.html`` also allows ``…/``. Paths are case-sensitive.
- Percent-encoding (RFC 9309 §2.2.2) is normalised the same way on both sides before matching: octets
  outside ASCII (raw UTF-8 in a rule or a URL) and characters not allowed in a URI are %-encoded, %XX
  of an unreserved character is decoded, every other %XX is upper-cased (``%2F`` in a path stays
  distinct from ``/``), except %2A and %24: a rule writes a literal ``*`` or ``$`` that way (§2.2.3),
  so they equal ``*`` and ``$`` in a URL. In the query, %XX of the reserved characters ``:/?@!$'(),*[]``
  is decoded too: RFC 9309's table matches ``/foo/bar?baz=https://foo.bar`` against
  ``?baz=https%3A%2F%2Ffoo.bar``. A rule's text after a ``*`` is read as query text (``/*?url=http%3A``
  and ``/*url=http%3A`` both match ``/go?url=http://x``); only a ``%2F`` meant for a path after a
  wildcard is lost by that, which real rules do not write.

Two rows where RFC 9309 and Google's robotstxt-spec-test differ (the RFC is followed): a rule
``/foo/bar/%62%61%7A`` matches ``/foo/bar/baz``, and a URL with raw UTF-8 (``/foo/bar/ツ``) matches the
rule written either way. Also deliberate: digits count as product-token characters (``AI2Bot``,
``img2dataset`` are real tokens sites name), where Google's parser stops at the first digit.

Why not protego (0.7.0, Scrapy's parser): measured by ``python -m bench robots`` on tests/test_robots_rfc9309.py's
table it passes all 53 rows of Google's path-value table but fails 12 of the 160 others: a query value
written ``https://foo.bar`` in one and ``https%3A%2F%2Ffoo.bar`` in the other (RFC 9309 §2.2.2's row 2,
both ways, and after a wildcard); an unknown line or a Crawl-delay between two user-agent lines ends
its group; user agents are matched by prefix, not as whole tokens (a group ``wit`` applies to
``wit-builder/1.0``; ``User-agent: Googlebot/2.1`` does not apply to
Googlebot; ``User-agent: Foo Bar`` does not apply to Foo); a BOM is kept on the first line. Fixing
those around it means redoing group selection, agent matching and normalisation, i.e. most of a
parser; this one follows Google's reference implementation (robots.cc) where the RFC is silent.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

MAX_BYTES = 500 * 1024  # RFC 9309 §2.5: parse at least 500 KiB
MAX_LINE = 2083 * 8 - 1  # Google's robots.cc kMaxLineLen (16,664 with its NUL)
_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")
_SPACE = " \t\v\f"  # ASCII whitespace inside a line (Google's StripWhitespace)
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
# %XX of these is decoded everywhere: the unreserved characters, and "*" and "$", which a rule can only
# write as %2A / %24 to mean themselves (RFC 9309 §2.2.3: /path/foo-%24 matches /path/foo-$).
_DECODED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~*$")
_QUERY_DECODED = frozenset(":/?@!$'(),*[]")  # reserved, but %XX and literal are one thing in a query
_HEX = frozenset("0123456789abcdefABCDEF")
# Strings made only of these (no "%", nothing outside printable ASCII URI characters) are already normal.
_PLAIN = re.compile(r"[A-Za-z0-9\-._~:/?\[\]@!$&'()*+,;=]*\Z")

_USER_AGENT_KEYS = ("user-agent", "useragent", "user agent")
_ALLOW_KEYS = ("allow",)
_DISALLOW_KEYS = ("disallow", "dissallow", "dissalow", "disalow", "diasllow", "disallaw")
_SITEMAP_KEYS = ("sitemap", "site-map")
_CRAWL_DELAY_KEYS = ("crawl-delay", "crawldelay", "crawl delay")


@functools.lru_cache(maxsize=4096)
def product_token(agent: str) -> str:
    """The product token of a user-agent string or robots.txt value, lower-cased:
    ``"wit-builder/1.0 (+https://x)"`` → ``"wit-builder"``; ``""`` when it starts with no token character."""
    m = _TOKEN.match(agent.strip())
    return m.group(0).lower() if m else ""


def normalise(text: str, in_query: bool = False) -> tuple[str, bool]:
    """``text`` with RFC 9309's percent-encoding normalisation (see the module docstring), and whether
    the text after it is in the query (a ``?`` was seen). Lone surrogates (``surrogateescape``) stand
    for raw non-UTF-8 bytes of a robots.txt and are encoded as those bytes."""
    if "%" not in text and _PLAIN.match(text):
        return text, in_query or "?" in text
    data = text.encode("utf-8", "surrogateescape")
    out: list[str] = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b == 0x25 and i + 2 < n and chr(data[i + 1]) in _HEX and chr(data[i + 2]) in _HEX:
            v = int(data[i + 1:i + 3], 16)
            ch = chr(v)
            keep_literal = v < 0x80 and (ch in _DECODED or (in_query and ch in _QUERY_DECODED))
            out.append(ch if keep_literal else f"%{v:02X}")
            i += 3
            continue
        ch = chr(b)
        if b >= 0x7F or b <= 0x20 or ch in '"%<>\\^`{|}':
            out.append(f"%{b:02X}")
        else:
            out.append(ch)
            in_query = in_query or ch == "?"
        i += 1
    return "".join(out), in_query


def url_path(url: str) -> str:
    """The path and query of a URL (or of a path), without the fragment; ``/`` when empty."""
    m = re.match(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*", url) if not url.startswith("/") or url.startswith("//") else None
    rest = url[m.end():] if m else url
    rest = rest.split("#", 1)[0]
    return rest if rest.startswith("/") else "/" + rest


@dataclass(frozen=True)
class Rule:
    allow: bool
    segments: tuple[str, ...]  # the normalised pattern split at each "*"
    anchored: bool  # ended with "$"
    priority: int  # octets of the normalised pattern, "*" and "$" included

    def matches(self, path: str) -> bool:
        """Greedy leftmost matching, exact for patterns whose only wildcard is ``*``."""
        segs = self.segments
        if not path.startswith(segs[0]):
            return False
        pos = len(segs[0])
        if len(segs) == 1:
            return pos == len(path) if self.anchored else True
        for seg in segs[1:-1]:
            found = path.find(seg, pos)
            if found < 0:
                return False
            pos = found + len(seg)
        last = segs[-1]
        if self.anchored:
            return path.endswith(last) and len(path) - len(last) >= pos
        return path.find(last, pos) >= 0


def compile_rule(value: str, allow: bool) -> Rule | None:
    """A rule from an Allow/Disallow value; None for an empty one or one not starting with / or *."""
    anchored = value.endswith("$")
    body = value[:-1] if anchored else value
    if not body.startswith(("/", "*")):
        return None
    segments, in_query = [], False
    for k, part in enumerate(body.split("*")):
        # after a wildcard the text may be in the URL's query (it usually is when it holds %3A, %2F …)
        seg, in_query = normalise(part, in_query or k > 0)
        segments.append(seg)
    priority = sum(map(len, segments)) + len(segments) - 1 + anchored
    return Rule(allow, tuple(segments), anchored, priority)


@dataclass
class _Group:
    agents: list[str]  # product tokens, lower case
    is_global: bool = False
    rules: list[Rule] | None = None
    crawl_delays: list[float] | None = None


def _readable(body: bytes) -> bytes:
    """The first MAX_BYTES of a body, less a line that the limit cuts in two."""
    if len(body) <= MAX_BYTES:
        return body
    cut = body[:MAX_BYTES]
    if body[MAX_BYTES:MAX_BYTES + 1] not in (b"\n", b"\r"):
        cut = cut[:max(cut.rfind(b"\n"), cut.rfind(b"\r")) + 1]
    return cut


def _lines(body: bytes) -> list[str]:
    """The lines of a (``_readable``) body, BOM skipped, each at most MAX_LINE bytes."""
    for k in (3, 2, 1):  # a whole BOM or the start of one (Google skips partial ones too)
        if body[:k] == _BOM[:k]:
            body = body[k:]
            break
    return [line[:MAX_LINE].decode("utf-8", "surrogateescape") for line in _LINE_END.split(body)]


def _key_value(line: str) -> tuple[str, str] | None:
    """(lower-cased key, value) of a line, Google's way: comment cut, colon or (two words) whitespace."""
    line = line.split("#", 1)[0].strip(_SPACE)
    if not line:
        return None
    key, sep, value = line.partition(":")
    if not sep:
        words = line.split()
        if len(words) != 2:
            return None
        key, value = words
    key = key.strip(_SPACE).lower()
    return (key, value.strip(_SPACE)) if key else None


def _kind(key: str) -> str | None:
    for kind, keys in (("user-agent", _USER_AGENT_KEYS), ("allow", _ALLOW_KEYS), ("disallow", _DISALLOW_KEYS),
                       ("sitemap", _SITEMAP_KEYS), ("crawl-delay", _CRAWL_DELAY_KEYS)):
        if key.startswith(keys):
            return kind
    return None


def _delay(value: str) -> float | None:
    try:
        d = float(value)
    except ValueError:
        return None
    return d if d >= 0 and d == d and d != float("inf") else None


class RobotsRules:
    """The parsed rules of one robots.txt body (see the module docstring for the semantics)."""

    def __init__(self, body: bytes, groups: list[_Group], sitemaps: list[str]):
        self._body, self._groups, self.sitemaps = body, groups, sitemaps
        self._cache: dict[str, tuple[list[Rule], list[float], bool]] = {}
        self.agents: frozenset[str] = frozenset(a for g in groups for a in g.agents)  # tokens some group names

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse(cls, body: bytes | str) -> RobotsRules:
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogateescape")
        body = _readable(body)
        lines = _lines(body)
        groups: list[_Group] = []
        sitemaps: list[str] = []
        current: _Group | None = None
        in_rules = False
        for line in lines:
            kv = _key_value(line)
            if kv is None:
                continue
            kind, value = _kind(kv[0]), kv[1]
            if kind == "user-agent":
                if current is None or in_rules:
                    current = _Group([], rules=[], crawl_delays=[])
                    groups.append(current)
                    in_rules = False
                if value[:1] == "*" and (len(value) == 1 or value[1].isspace()):
                    current.is_global = True
                elif token := product_token(value):
                    current.agents.append(token)
            elif kind in ("allow", "disallow"):
                if current is None:
                    continue  # a rule before any user-agent line belongs to no group
                in_rules = True
                rule = compile_rule(value, kind == "allow") if value else None
                if rule is not None:
                    current.rules.append(rule)
                    if rule.allow:
                        current.rules.extend(_index_html_rule(value))
            elif kind == "sitemap":
                if value:
                    sitemaps.append(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            elif kind == "crawl-delay" and current is not None:
                d = _delay(value)
                if d is not None:
                    current.crawl_delays.append(d)
        return cls(body, groups, sitemaps)

    @classmethod
    def from_bytes(cls, body: bytes) -> RobotsRules:
        return cls.parse(body)

    def to_bytes(self) -> bytes:
        """The body these rules were parsed from (at most 500 KiB): ``from_bytes`` gives them back."""
        return self._body

    @classmethod
    def allow_all(cls) -> RobotsRules:
        """No rules: what a 4xx robots.txt (other than 429) means (RFC 9309 §2.3.1.3)."""
        return cls.parse(b"")

    @classmethod
    def disallow_all(cls) -> RobotsRules:
        """Everything disallowed for every agent: an unreachable robots.txt (RFC 9309 §2.3.1.4)."""
        return cls.parse(b"User-agent: *\nDisallow: /\n")

    # ------------------------------------------------------------------ queries
    def _select(self, agent: str) -> tuple[list[Rule], list[float], bool]:
        """(merged rules, crawl delays, named specifically?) of the groups that apply to ``agent``."""
        token = product_token(agent)
        got = self._cache.get(token)
        if got is None:
            groups = [g for g in self._groups if token and token in g.agents]
            specific = bool(groups)
            if not specific:
                groups = [g for g in self._groups if g.is_global]
            # most specific first, Allow before Disallow at equal length: the first match decides
            rules = sorted((r for g in groups for r in g.rules), key=lambda r: (-r.priority, not r.allow))
            got = (rules, [d for g in groups for d in g.crawl_delays], specific)
            self._cache[token] = got
        return got

    def _verdict(self, rules: list[Rule], url: str) -> bool | None:
        """True (allowed) / False (disallowed) by the longest matching rule, Allow winning a tie; None: no match.
        ``rules`` come from ``_select``, sorted so that the first rule that matches is that rule."""
        path, _ = normalise(url_path(url))
        if path.split("?", 1)[0] == "/robots.txt":
            return True
        for rule in rules:  # sorted by _select: longest first, Allow first on a tie
            if path.startswith(rule.segments[0]) and rule.matches(path):
                return rule.allow
        return None

    def allowed(self, agent: str, url: str) -> bool:
        """Whether ``agent`` (a product token or a whole UA string) may fetch ``url`` (a URL or a path)."""
        return self._verdict(self._select(agent)[0], url) is not False

    def disallows_agent(self, agent: str, url: str) -> bool:
        """Whether a group naming ``agent`` itself (not ``*``) disallows ``url``: the opt-out check for
        AI-training tokens, where a ``*`` group says nothing about AI training."""
        rules, _, specific = self._select(agent)
        return specific and self._verdict(rules, url) is False

    def crawl_delay(self, agent: str) -> float | None:
        """The Crawl-delay (seconds) of the groups that apply to ``agent``; the largest when several do."""
        delays = self._select(agent)[1]
        return max(delays) if delays else None


def _index_html_rule(value: str) -> list[Rule]:
    """Google's reading of ``Allow: /dir/index.html``: ``/dir/`` itself (``/dir/$``) is allowed too."""
    slash = value.rfind("/")
    if slash >= 0 and value[slash:].startswith("/index.htm"):
        rule = compile_rule(value[:slash + 1] + "$", True)
        return [rule] if rule is not None else []
    return []
