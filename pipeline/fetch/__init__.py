"""The safe image fetcher (on ``requests``): what img2dataset's urllib fetcher does, minus its holes,
and scheduled host by host so that dead, slow and rate-limiting hosts cost little and get little.

One module per part (each one's docstring says how it works):

- ``fetcher``: ``Fetcher``. One attempt at a URL (every hop checked, redirects followed by hand, a
  byte cap, one deadline); ``fetch`` one URL, ``fetch_all`` a task's URLs through the scheduler.
- ``guarded``: the safety and deadline machinery under an attempt: urllib3 connections that connect
  only to the addresses that were checked (so DNS rebinding cannot redirect them), and the watchdog
  that shuts an attempt's sockets when its deadline passes.
- ``dns``: ``Resolver``. Per-name lookups that never wait behind one another, answers and failures
  cached, the system resolver or ``dns_servers``.
- ``hosts``: ``HostScheduler`` runs a fetch callable host by host under a ``Politeness``: each host's
  own interval (floor, Crawl-delay, Retry-After), connection cap and circuit breaker; ``task_host_cap``.
- ``robots``: ``RobotsCache``, an origin's robots.txt (fetched and kept per RFC 9309) and tdmrep.json;
  ``robots_rules`` parses robots.txt (RFC 9309 exactly), ``consent`` judges the AI-training opt-outs
  (robots.txt AI groups, TDMRep, X-Robots-Tag), ``robots_table`` fetches them once per job.
- ``url_safety``: which URLs may be asked at all (scheme, userinfo, IP literals, IDNA-mapped names);
  the caption filter ``filters.url_safety`` wraps it.
- ``outcome``: ``FetchResult``, ``FetchError`` and the fixed vocabulary of failure reasons
  (``REASONS``, ``TRANSIENT``): a failure is always one of them, never an exception string.

**Across the job.** A task is one output shard (input order, so a resumed job redoes exactly the
missing shards), and any task may hold URLs of any host. With ``job_host_connections`` set, each
task's per-host cap is ``max(1, job_host_connections // concurrent_tasks)`` (and at most
``host_connections``), where ``concurrent_tasks`` is how many download tasks run at once (Spark's
default parallelism, at most the number of shards). One host then sees at most
``job_host_connections`` connections from the whole job as long as ``concurrent_tasks`` is not
larger; beyond that, at most one per running task. We chose this over grouping URLs by host into
fetch tasks: that needs a second pass that moves every fetched image back into input-order shards
(twice the I/O of the images), or shards that no longer follow the input, and resume would no
longer be per shard.
"""

from pipeline.fetch.dns import Resolver, default_resolver, resolver_for
from pipeline.fetch.fetcher import Fetcher
from pipeline.fetch.guarded import AllowList, GuardedAdapter, vetted_addresses
from pipeline.fetch.hosts import HostScheduler, Politeness, host_key, retry_after_seconds, task_host_cap
from pipeline.fetch.outcome import NOT_ASKED, REASONS, RETRY_NOW, TRANSIENT, FetchError, FetchResult
from pipeline.fetch.robots import OriginRecord, RobotsCache, RobotsRules, parse_robots
from pipeline.fetch.url_safety import check_url

__all__ = [
    "NOT_ASKED", "REASONS", "RETRY_NOW", "TRANSIENT", "AllowList", "FetchError", "FetchResult", "Fetcher",
    "GuardedAdapter", "HostScheduler", "Politeness", "Resolver", "RobotsCache", "RobotsRules", "check_url",
    "OriginRecord", "default_resolver", "host_key", "parse_robots", "resolver_for", "retry_after_seconds",
    "task_host_cap", "vetted_addresses",
]
