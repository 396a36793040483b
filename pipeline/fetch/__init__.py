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
- ``slots``: ``HostSlots``, the job-wide per-host cap shared at run time by the tasks on one machine
  (per host, that many lock files; a request holds one while it runs).
- ``robots``: ``RobotsCache``, an origin's robots.txt (fetched and kept per RFC 9309) and tdmrep.json;
  ``robots_rules`` parses robots.txt (RFC 9309 exactly), ``consent`` judges the AI-training opt-outs
  (robots.txt AI groups, TDMRep, X-Robots-Tag), ``robots_table`` fetches them once per job.
- ``url_safety``: which URLs may be asked at all (scheme, userinfo, IP literals, IDNA-mapped names);
  the caption filter ``filters.url_safety`` wraps it.
- ``outcome``: ``FetchResult``, ``FetchError`` and the fixed vocabulary of failure reasons
  (``REASONS``, ``TRANSIENT``): a failure is always one of them, never an exception string.

**Across the job.** A task is one output shard (input order, so a resumed job redoes exactly the
missing shards), and any task may hold URLs of any host. With ``job_host_connections`` set, one
host sees at most that many requests at once from the whole job, shared in one of two ways:

- Every task on one machine (Spark's local master, what ``wit download`` checks): the cap is shared
  at run time. The driver makes a folder of slot files for the job (``slots.job_slots_folder``,
  removed at its end) and every request start takes one of its host's ``job_host_connections``
  slots (``HostSlots``), never waiting for it: the scheduler serves other hosts and tries again a
  few tens of milliseconds later. A task may so use the whole cap of a host the other running tasks
  are not asking (a slow host's URLs mostly in one shard no longer take that shard's static share
  of the time); ``host_connections`` and ``concurrent_tasks`` play no part.
- Tasks on several machines (a cluster): each task's per-host cap is a static share,
  ``max(1, job_host_connections // concurrent_tasks)`` and at most ``host_connections``
  (``task_host_cap``), where ``concurrent_tasks`` is how many download tasks run at once (Spark's
  default parallelism, at most the number of shards). The bound holds while ``concurrent_tasks`` is
  not larger than the cap; beyond that, at most one per running task.

We chose this over grouping URLs by host into fetch tasks: that needs a second pass that moves every
fetched image back into input-order shards (twice the I/O of the images), or shards that no longer
follow the input, and resume would no longer be per shard.
"""

from pipeline.fetch.dns import Resolver, default_resolver, resolver_for
from pipeline.fetch.fetcher import Fetcher
from pipeline.fetch.guarded import AllowList, GuardedAdapter, vetted_addresses
from pipeline.fetch.hosts import HostScheduler, Politeness, host_key, retry_after_seconds, task_host_cap
from pipeline.fetch.outcome import NOT_ASKED, REASONS, RETRY_NOW, TRANSIENT, FetchError, FetchResult
from pipeline.fetch.robots import OriginRecord, RobotsCache, RobotsRules, parse_robots
from pipeline.fetch.slots import HostSlots, job_slots_folder
from pipeline.fetch.url_safety import check_url

__all__ = [
    "NOT_ASKED", "REASONS", "RETRY_NOW", "TRANSIENT", "AllowList", "FetchError", "FetchResult", "Fetcher",
    "GuardedAdapter", "HostScheduler", "HostSlots", "Politeness", "Resolver", "RobotsCache", "RobotsRules", "check_url",
    "OriginRecord", "default_resolver", "host_key", "job_slots_folder", "parse_robots", "resolver_for", "retry_after_seconds",
    "task_host_cap", "vetted_addresses",
]
