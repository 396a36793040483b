"""`wit crawl`: a polite page crawler that writes WARC files `wit extract` reads unchanged.

**Rounds.** Breadth first: round ``r`` fetches its frontier (the seeds are round 0) and computes
round ``r+1``'s frontier from the links of its pages. Under the output folder (crawl/, any path or
URL the storage layer opens, ``s3://`` included):

    frontier/round-RRRRR/                   Parquet: url, depth, host, group: the pages round r fetches
    rejected/round-RRRRR/                   Parquet: url, depth, reason: links of round r-1 not queued
    warc/round-RRRRR-part-GGGGG-CCCCC.warc.gz   request, response and metadata records, gzip per record
    index/round-RRRRR-part-GGGGG-CCCCC.parquet  CDX-style: url, status, mime, file, offset, length
    pages/round-RRRRR-part-GGGGG-CCCCC.parquet  every frontier URL's outcome: reason (None: stored), links
    rounds/round-RRRRR.json                 the round's counts; its presence marks the round complete

**Where it runs.** Each round is a Spark fetch job and a next frontier. The fetch: the frontier is partitioned by host into
``group``s (``crawl.tasks``, default Spark's parallelism), one task per group, so every request to
a host comes from one task, whose one host scheduler (per-host connection cap, interval,
Retry-After, circuit breaker) is polite for the whole job. A task fetches its group part by part
(``crawl.part_pages`` URLs, ``CCCCC``) on ``crawl.threads`` threads; robots.txt is read once per host
per round, and a host's pace carries from one part to the next. The next frontier: links exploded,
normalised, deduplicated and anti-joined against every URL queued or rejected so far, budgets
applied by window functions; the driver holds none of it, so its memory does not grow with the
frontier. A small round's next frontier (``crawl.driver_frontier_max_urls``) is computed on the driver
instead, by the same rules (``local_frontier``): a Spark job's fixed seconds are most of a small round. Every file, the Spark jobs' included, is read and written through ``pipeline.storage``.

**Resume.** A part is the unit of work: its three files are written under temporary names and
renamed, the pages file last, which marks the part complete. A rerun skips complete rounds and
parts and redoes a part whose pages file is missing, replacing whatever WARC it had (no
duplicate records). A frontier is written whole and renamed, then the round's json.

**Politeness and safety.** Every fetch goes through ``pipeline.fetch.Fetcher`` (address safety,
deadlines, size caps) with robots.txt always on (RFC 9309). Each host has its own interval:
``crawl.min_interval_s``, raised by its ``Crawl-delay`` (up to ``crawl.max_crawl_delay_s``, and then
one connection at a time) and by Retry-After. Only HTML pages are stored (``not_html``). Redirects
are not followed in the fetch: a 3xx is recorded as ``redirected`` and its target queued for the next
round at the same depth, through the scope rules, robots.txt and the seen-URL check like any link
(as Heritrix and Common Crawl do), so a page reached both ways is stored once. With
``crawl.sitemaps`` the pages of the sitemaps named by the seeds' robots.txt are seeds too.

**Traps** (endless calendars, session ids, link farms) are bounded by URL normalisation (session-id
parameters stripped, fragments dropped), the scope rules, ``max_depth`` and the per-host and total
page budgets. Every URL not crawled has a reason in ``_stats.json`` drops, counted once per URL:
the fetcher's reasons (robots_disallowed, robots_unavailable and the AI-training opt-outs
opted_out_robots_ai, opted_out_tdmrep, opted_out_header among them), opted_out_meta, not_html, redirected,
out_of_scope, max_depth, budget_exhausted.

One module per part: ``scope`` (URL normalisation, registered domains by the Public Suffix List, the
scope rules), ``layout`` (where the files are; every read and write, Spark's too), ``pages`` (the
fetch task: page fetch, links, sitemaps), ``warc`` (WARC parts and their index), ``frontier`` (the
rounds and their Spark jobs), ``local_frontier`` (a small round's next frontier on the driver), ``stage`` (``run_crawl``, ``wit crawl``, the seeds).
"""

from pipeline.crawl.frontier import Rounds
from pipeline.crawl.layout import FRONTIER, INDEX, PAGES, REJECTED, CrawlFiles
from pipeline.crawl.pages import Crawler, page_links, parse_sitemap
from pipeline.crawl.scope import Scope, host_of, normalise, registered_domain
from pipeline.crawl.stage import read_seeds, register, run_crawl, warc_files
from pipeline.crawl.warc import WarcPart

# Crawl decisions, beside the fetcher's REASONS.
CRAWL_REASONS = ("robots_disallowed", "robots_unavailable", "out_of_scope", "budget_exhausted", "not_html",
                 "max_depth", "opted_out_robots_ai", "opted_out_tdmrep", "opted_out_header", "opted_out_meta")

__all__ = [
    "CRAWL_REASONS", "FRONTIER", "INDEX", "PAGES", "REJECTED", "CrawlFiles", "Crawler", "Rounds", "Scope",
    "WarcPart", "host_of", "normalise", "page_links", "parse_sitemap", "read_seeds", "register",
    "registered_domain", "run_crawl", "warc_files",
]
