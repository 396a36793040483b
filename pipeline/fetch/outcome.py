"""What a fetch ends as: a FetchResult, whose failure reason is one of a fixed vocabulary (``REASONS``),
never an exception string."""

from __future__ import annotations

from dataclasses import dataclass

# The fixed vocabulary of fetch failures (download adds the image ones, see pipeline/download.py).
REASONS = (
    "bad_url", "url_too_long", "userinfo", "blocked_scheme", "blocked_address", "too_many_redirects",
    "http_404", "http_4xx", "http_5xx", "http_other", "timeout", "connection_error", "too_large",
    "robots_disallowed", "robots_unavailable", "rate_limited", "host_unreachable",
    # AI-training opt-outs (pipeline/fetch/consent.py): robots.txt AI groups, TDMRep, X-Robots-Tag
    "opted_out_robots_ai", "opted_out_tdmrep", "opted_out_header",
    "redirected",  # only with Fetcher(follow_redirects=False): the crawler queues the target instead
)
# Failures worth trying again later (`wit download --retry-failed`); retried inline: RETRY_NOW.
TRANSIENT = frozenset({"timeout", "http_5xx", "connection_error", "rate_limited", "host_unreachable",
                       "robots_unavailable"})
RETRY_NOW = frozenset({"timeout", "http_5xx"})
# Failures decided before the URL's host was asked (its robots.txt aside): they spend none of its interval.
NOT_ASKED = frozenset({"bad_url", "url_too_long", "userinfo", "blocked_scheme", "blocked_address",
                       "robots_disallowed", "robots_unavailable", "opted_out_robots_ai", "opted_out_tdmrep"})


@dataclass
class FetchResult:
    url: str
    data: bytes | None = None
    reason: str | None = None  # None = fetched
    http_status: int | None = None  # the last status line received (None: the host never answered)
    final_url: str | None = None
    detail: str = ""  # for logs only
    attempts: int = 0
    retry_after: float | None = None  # seconds, from a 429/503 Retry-After header
    connected: bool = False  # a connection to the host was open: it was reached, whatever came after
    headers: list[tuple[str, str]] | None = None  # the response's headers (a 2xx), for the crawler's WARC
    status_line: str = ""  # "200 OK"
    protocol: str = "HTTP/1.1"

    @property
    def ok(self) -> bool:
        return self.reason is None


class FetchError(Exception):
    """A fetch failed for ``reason`` (one of REASONS)."""

    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after
