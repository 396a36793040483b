"""Politeness within a task: ``HostScheduler`` runs a fetch callable (one attempt at a URL) over many
URLs, paced host by host by a ``Politeness`` (the settings, and each host's pace kept from one run to
the next). It knows nothing else of the fetcher: ``Fetcher.fetch_all`` hands it ``Fetcher.fetch_once``.

**Each host's pace.** A host's interval between two request starts is the ``min_interval_s`` floor,
raised by its robots.txt ``Crawl-delay`` (``Politeness.delay_of``, up to ``max_crawl_delay_s``; such a
host also gets one connection at a time, as Heritrix and Nutch do), raised by its own response time when
``delay_factor`` is set (adaptive politeness, Heritrix's ``delayFactor``: a host that takes 0.4 s to answer
is asked again no sooner than delay_factor × 0.4 s later, up to ``max_crawl_delay_s``; the response time is
a moving average of the host's answered requests) and paused by its Retry-After. A
Crawl-delay learned during a host's first request (robots.txt is read then) spaces its second. A URL
failed before its host was asked (``NOT_ASKED``: robots.txt said no, an unsafe address) spends none of
the host's interval.

The task's URLs are queued per host; a thread takes a URL whose host is below its connection cap and
past its interval: hosts not yet asked first, those with the most URLs first, else in input order (so
dead hosts and DNS tarpits are found, and cost their timeouts, while the healthy work goes on rather
than at the end), then the host with the most time's work left (its URLs left × the longest of: its
response time ÷ its cap, its interval, the Retry-After pauses it asked for per request; estimates
equal to the second in input order), each host's URLs in input order. A slow host's URLs are so asked
at its cap from the start, not when the rest of the task reaches them in input order (a host answering
in 1.3 s at 2 connections needs 20 s for 30 URLs: a tail of its own at the end of the task otherwise).
A rate limit shows only under load, so a host with ``PROBE_URLS`` or more URLs left is probed: once it
has answered, its next ``cap`` or so requests go before every other answered host's; a host answering
429 to them is then ordered by its pauses from its first seconds (on the many-host bench a host allowing
4 requests/s, 63 URLs in one shard, sat idle for 4 s after its first answer until input order reached
its next page, and was that shard's tail). A host that has not answered yet gets one request at a time: a dead one then holds one thread, not
``host_connections``. Threads never idle while some host has work it may start, and the image work after
a fetch (decode, resize) runs outside the host's slot. Each host has one keep-alive pool of at most that
many connections.

A ``429``, or a ``503`` with ``Retry-After``, pauses the host for the time asked (``Retry-After``
seconds or date; without it 1 s, doubling) and retries the URL if that fits the sample's budget,
``timeout_s * (retries + 1)`` from its first attempt; otherwise the URL fails as ``rate_limited``, and
a host that asks for more than a whole budget fails its remaining URLs so at once. 5xx answers and
timeouts are retried with backoff. After ``failure_limit`` consecutive attempts that could not reach
the host (DNS failure, connection refused, connect timeout: no connection was open), the host's
circuit opens: its remaining URLs fail at once as ``host_unreachable`` instead of each costing a
timeout. A slow answer on a connected socket is that URL's ``timeout``, not the host's failure (as
Heritrix and Nutch count it): one hanging URL does not close a healthy host.
``rate_limited`` and ``host_unreachable`` are transient: ``wit download --retry-failed`` tries again.

**Across tasks.** With ``slots`` (a ``pipeline.fetch.slots.HostSlots``, shared by the tasks running on
one machine) every request start also takes one of its host's machine-wide slots, without waiting: when
the other tasks hold them all, the host is tried again ``SLOT_WAIT_S`` later (a timer, as for an
interval) while the threads serve other hosts, and the slot is given back as soon as the attempt ends,
before the image work. A Retry-After pause is the machine's: written with the slots, read with each
slot taken. A Crawl-delay host uses its first slot only: one request at a time on the whole
machine. How the tasks of a job share one per-host cap (slots, or the static ``task_host_cap`` split on
a cluster) is described in ``pipeline.fetch``'s docstring.
"""

from __future__ import annotations

import email.utils
import heapq
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pipeline.fetch.outcome import NOT_ASKED, RETRY_NOW, FetchResult

RATE_LIMIT_WAIT_S = 1.0  # a 429 without Retry-After pauses its host this long, doubling while they repeat
PROBE_URLS = 16  # a host with this many URLs left is asked at its cap as soon as it answers (the probe)
PROBE_WORK_S = 1e9  # the work left a probed host counts as: more than any host's, so it goes first
SLOT_WAIT_S = 0.025  # a host whose machine-wide slots are all held by other tasks is tried again this much later


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(when.timestamp() - time.time(), 0.0)


def host_key(url) -> str:
    """The host a URL's politeness is counted against ("" when it has none)."""
    try:
        return (urlsplit(url.strip()).hostname or "").rstrip(".")
    except (AttributeError, TypeError, ValueError):
        return ""


def task_host_cap(host_connections: int, job_host_connections: int | None, concurrent_tasks: int | None) -> int:
    """One task's per-host cap: its share of the job-wide cap, at least 1 (see pipeline.fetch's docstring)."""
    if job_host_connections is None:
        return host_connections
    return min(host_connections, max(1, job_host_connections // max(1, concurrent_tasks or 1)))


# --- host-by-host scheduling ----------------------------------------------------------------------


@dataclass
class Politeness:
    """How hard the scheduler may press each host, and each host's pace so far (shared by every
    scheduler of one fetcher, so a host's interval holds from one ``fetch_all`` to the next)."""

    connections: int = 2  # running requests per host
    min_interval_s: float = 0.0  # the floor of every host's interval
    max_crawl_delay_s: float = 10.0  # a Crawl-delay is honoured up to this
    failure_limit: int = 3  # consecutive unreachable attempts that open a host's circuit (0: never)
    retries: int = 2  # inline retries of a 5xx or timeout
    backoff_s: float = 0.25  # their first backoff, doubling
    budget_s: float = 30.0  # how long after its first attempt a URL may still be retried
    delay_of: Callable[[str], float] | None = None  # host → its robots.txt Crawl-delay (0: none)
    delay_factor: float = 0.0  # adaptive: the interval is at least this × the host's response time (0: off)
    last_start: dict[str, float] = field(default_factory=dict, repr=False)  # host → its latest request's start
    paused_until: dict[str, float] = field(default_factory=dict, repr=False)  # host → end of its Retry-After
    response_s: dict[str, float] = field(default_factory=dict, repr=False)  # host → its response time (average)

    def crawl_delay(self, host: str) -> float:
        """The host's robots.txt Crawl-delay as honoured (capped at max_crawl_delay_s; 0: none)."""
        delay = self.delay_of(host) if self.delay_of is not None else 0.0
        return min(delay or 0.0, self.max_crawl_delay_s)

    def interval(self, host: str) -> float:
        adaptive = min(self.delay_factor * self.response_s.get(host, 0.0), self.max_crawl_delay_s)
        return max(self.min_interval_s, self.crawl_delay(host), adaptive)

    def answered(self, host: str, seconds: float) -> None:
        """Record how long the host took to answer a request (its moving average, weight 0.3 to the new one):
        the adaptive interval (with ``delay_factor``) and the scheduler's host order read it."""
        before = self.response_s.get(host)
        self.response_s[host] = seconds if before is None else 0.7 * before + 0.3 * seconds

    def next_start(self, host: str) -> float:
        """When the host may be asked again: its interval after its latest request, and not paused."""
        last = self.last_start.get(host)
        return max(self.paused_until.get(host, 0.0), 0.0 if last is None else last + self.interval(host))

    def cap(self, host: str) -> int:
        return 1 if self.crawl_delay(host) else self.connections


class _Job:
    """One URL until its outcome is final."""

    __slots__ = ("seq", "item", "url", "host", "attempts", "retries", "first_start", "started", "before", "skip",
                 "slot")

    def __init__(self, seq: int, item: Any, url: str, host: str):
        self.seq, self.item, self.url, self.host = seq, item, url, host
        self.attempts = 0  # requests made
        self.retries = 0  # of them, retries after a 5xx or a timeout
        self.first_start: float | None = None
        self.started = 0.0  # when its latest attempt started
        self.before: float | None = None  # the host's latest start before it
        self.skip: str | None = None  # fail without a request, for this reason
        self.slot: int | None = None  # the machine-wide host slot its running attempt holds (HostSlots token)


class _Host:
    __slots__ = ("fresh", "later", "active", "started", "answered", "failures", "tripped", "rate_hits", "answers",
                 "paused_s", "slot_retry_at")

    def __init__(self):
        self.fresh: deque[_Job] = deque()  # never tried, in input order
        self.later: list[tuple[float, int, _Job]] = []  # (when, seq, job): retries and Retry-After waits
        self.active = 0  # requests running
        self.started = False  # asked at least once
        self.answered = False  # has sent a status line: until then one request at a time
        self.failures = 0  # consecutive attempts that could not reach the host
        self.tripped: str | None = None  # its remaining URLs fail at once with this reason
        self.rate_hits = 0  # consecutive rate-limit answers
        # what orders the hosts (HostScheduler._work_left, with the host's response time in Politeness):
        self.answers = 0  # attempts that got a status line
        self.paused_s = 0.0  # the Retry-After pauses it asked for, in all
        self.slot_retry_at = 0.0  # when its machine-wide slots are tried again (one such timer at a time)

    def has_work(self) -> bool:
        return bool(self.fresh or self.later)


_DONE = object()


class HostScheduler:
    """Runs ``fetch(url) -> FetchResult`` over a task's URLs on a few threads, host by host (see the
    module docstring): per-host cap and interval, Retry-After, retries with backoff, the breaker; with
    ``slots`` (``HostSlots``) each request also holds one of its host's slots shared with other tasks."""

    def __init__(self, fetch: Callable[[str], FetchResult], politeness: Politeness, failure_limit: int | None = None,
                 slots: Any = None):
        self.fetch = fetch
        self.pace = politeness
        self.slots = slots
        self.failure_limit = politeness.failure_limit if failure_limit is None else failure_limit
        self._hosts: dict[str, _Host] = {}
        # (asked before?, -its whole seconds of work left (not asked: its URLs), seq of its next job, host): may start now
        self._ready: list[tuple[bool, float, int, str]] = []
        self._timers: list[tuple[float, int, str]] = []  # (when, id, host): may start then
        self._ids = itertools.count()
        lock = threading.RLock()
        self._cv = threading.Condition(lock)  # idle threads sleep here until woken for a ready host ...
        self._clock = threading.Condition(lock)  # ... but one, the timekeeper, which waits for the earliest timer
        self._sleepers = 0  # threads asleep on _cv and not yet woken
        self._timekeeper = False
        self._unfinished = 0
        self._closed = False

    def load(self, items: Iterable, url_of: Callable[[Any], str]) -> None:
        new: list[str] = []
        for seq, item in enumerate(items):
            url = url_of(item)
            key = host_key(url)
            host = self._hosts.get(key)
            if host is None:
                host = self._hosts[key] = _Host()
                new.append(key)
            host.fresh.append(_Job(seq, item, url, key))
            self._unfinished += 1
        for key in new:  # not asked yet: the most URLs first (the most work, before anything is known of it)
            host = self._hosts[key]
            heapq.heappush(self._ready, (False, -float(len(host.fresh)), host.fresh[0].seq, key))

    def run(self, threads: int, process: Callable[[Any, FetchResult], Any] | None) -> Iterator[tuple[Any, Any]]:
        results: queue.Queue = queue.Queue(maxsize=2 * threads)
        errors: list[BaseException] = []

        def worker():
            try:
                self.work(process, results.put)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
                errors.append(e)
                self.close()
            finally:
                results.put(_DONE)

        n = max(1, min(threads, self._unfinished))
        pool = [threading.Thread(target=worker, name=f"fetch-worker-{i}", daemon=True) for i in range(n)]
        for t in pool:
            t.start()
        alive = n
        try:
            while alive:
                got = results.get()
                if got is _DONE:
                    alive -= 1
                elif not errors:
                    yield got
            if errors:
                raise errors[0]
        finally:
            self.close()
            while alive:  # the consumer stopped early: let the threads finish their fetch and leave
                if results.get() is _DONE:
                    alive -= 1
            for t in pool:
                t.join()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._wake_all()

    def work(self, process, put) -> None:
        """One thread's loop: take a URL whose host may be asked now, fetch, judge, hand the outcome on."""
        while (job := self._next()) is not None:
            if job.skip is not None:
                result = FetchResult(job.url, reason=job.skip, detail="host skipped", attempts=job.attempts)
            else:
                try:
                    result = self.fetch(job.url)
                finally:
                    if job.slot is not None:  # the host's connection is free: its slot too, before the image work
                        self.slots.release(job.slot)
                        job.slot = None
                job.attempts += 1
                result.attempts = job.attempts
            if self._done(job, result):
                put((job.item, process(job.item, result) if process is not None else result))

    # -- under the lock --

    def _next(self) -> _Job | None:
        with self._cv:
            while True:
                if self._unfinished == 0 or self._closed:
                    return None
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    self._wake(heapq.heappop(self._timers)[2], now)
                while self._ready:
                    job = self._take(heapq.heappop(self._ready)[-1], now)
                    if job is not None:
                        if self._ready or (self._timers and not self._timekeeper):
                            self._wake_one()  # another thread takes the next ready host, or keeps the timers
                        return job
                self._idle()

    def _idle(self) -> None:
        """Wait for work: one thread (the timekeeper) until the earliest timer, the others until woken for
        a ready host, so frequent timers (slot waits) wake one thread, never all of them."""
        if self._timers and not self._timekeeper:
            self._timekeeper = True
            try:
                self._clock.wait(self._timers[0][0] - time.monotonic())
            finally:
                self._timekeeper = False
        else:
            self._sleepers += 1
            self._cv.wait()

    def _wake_one(self) -> None:
        """Wake one idle thread: a sleeper, else the timekeeper."""
        if self._sleepers:
            self._sleepers -= 1
            self._cv.notify()
        elif self._timekeeper:
            self._clock.notify()

    def _wake_all(self) -> None:
        self._sleepers = 0
        self._cv.notify_all()
        self._clock.notify_all()

    def _start_at(self, key: str, host: _Host, now: float) -> float | None:
        """When the host's next job may start (None: it has none, or is at its cap)."""
        if not host.has_work():
            return None
        if host.tripped:
            return now
        if host.active >= (self.pace.cap(key) if host.answered else 1):
            return None
        return max(now if host.fresh else host.later[0][0], self.pace.next_start(key))

    def _wake(self, key: str, now: float) -> None:
        host = self._hosts[key]
        at = self._start_at(key, host, now)
        if at is None:
            return
        if at <= now:
            retry_first = host.later and (host.tripped or not host.fresh or host.later[0][0] <= now)
            seq = host.later[0][1] if retry_first else host.fresh[0].seq
            heapq.heappush(self._ready, (host.started, -int(self._work_left(key, host)), seq, key))
            self._wake_one()
        else:
            self._timer(at, key)

    def _timer(self, at: float, key: str) -> None:
        if not self._timers or at < self._timers[0][0]:  # the timekeeper sleeps until the earliest: an earlier one
            if self._timekeeper:
                self._clock.notify()
            else:
                self._wake_one()  # a sleeper becomes the timekeeper
        heapq.heappush(self._timers, (at, next(self._ids), key))

    def _work_left(self, key: str, host: _Host) -> float:
        """Seconds the host's queued URLs need at its pace (0 until it has answered; a host being probed
        counts as the most): the longest go first, compared to the whole second, then in input order.
        The fast hosts, whose work is our CPU and not waiting, so keep input order: their URLs come in
        runs, which keeps their keep-alive connections in use (ordered finer, they took turns and each
        task's least recently used pools were closed: a new connection for nearly every request of a
        slow host)."""
        left, cap = len(host.fresh) + len(host.later), self.pace.cap(key)
        if host.answers <= cap and left >= PROBE_URLS:
            return PROBE_WORK_S  # the probe: before every other answered host
        per_url = max(self.pace.response_s.get(key, 0.0) / cap, self.pace.interval(key), host.paused_s / max(1, host.answers))
        return left * per_url

    def _take(self, key: str, now: float) -> _Job | None:
        host = self._hosts[key]
        at = self._start_at(key, host, now)
        if at is None:
            return None  # woken again when a request of the host ends
        if at > now:
            self._wake(key, now)
            return None
        slot = None
        if self.slots is not None and not host.tripped:
            slot = self.slots.try_acquire(key, self.pace.cap(key))
            if slot is None:  # other tasks hold all of the host's slots: try again shortly, serve others meanwhile
                if host.slot_retry_at <= now:
                    host.slot_retry_at = now + SLOT_WAIT_S
                    self._timer(host.slot_retry_at, key)
                return None
            if (wait := self.slots.paused_for(slot)) > 0:  # another task's Retry-After: this task's too
                self.slots.release(slot)
                if wait > self.pace.budget_s:  # longer than any URL may wait (as _judge has it)
                    host.tripped = "rate_limited"
                else:
                    self.pace.paused_until[key] = max(self.pace.paused_until.get(key, 0.0), now + wait)
                self._wake(key, now)
                return None
        if host.later and (host.tripped or not host.fresh or host.later[0][0] <= now):  # as _wake ordered it
            job = heapq.heappop(host.later)[2]
        else:
            job = host.fresh.popleft()
        if host.tripped:
            job.skip = host.tripped
        else:
            host.active += 1
            host.started = True
            if job.first_start is None:
                job.first_start = now
            job.started, job.before, job.slot = now, self.pace.last_start.get(key), slot
            self.pace.last_start[key] = now
        self._wake(key, now)  # more of this host may start (below its cap, or skipped)
        return job

    def _done(self, job: _Job, result: FetchResult) -> bool:
        """Record an attempt's outcome; True when it is the job's final one, False when it was requeued."""
        with self._cv:
            now = time.monotonic()
            host = self._hosts[job.host]
            final = True
            if job.skip is None:
                host.active -= 1
                if result.reason in NOT_ASKED and not result.connected and self.pace.last_start.get(job.host) == job.started:
                    self._unstart(job)  # decided before asking the host (robots.txt, safety): no interval spent
                final = self._judge(job, host, result, now)
            if final:
                self._unfinished -= 1
                if self._unfinished == 0:
                    self._wake_all()
            self._wake(job.host, now)
            return final

    def _unstart(self, job: _Job) -> None:
        if job.before is None:
            del self.pace.last_start[job.host]
        else:
            self.pace.last_start[job.host] = job.before

    def _judge(self, job: _Job, host: _Host, result: FetchResult, now: float) -> bool:
        reason = result.reason
        if reason in ("timeout", "connection_error") and not result.connected:
            host.failures += 1  # the host was not reached: dead, unresolvable or not accepting
            if self.failure_limit and host.failures >= self.failure_limit:
                host.tripped = "host_unreachable"
        elif result.connected or result.http_status is not None:
            host.failures = 0  # reached: a slow URL is that URL's timeout, not the host's failure
            if result.http_status is not None:
                host.answers += 1
                host.answered = True
                self.pace.answered(job.host, now - job.started)
            if host.tripped == "host_unreachable":
                host.tripped = None
        if reason == "rate_limited":
            host.rate_hits += 1
            wait = result.retry_after
            if wait is None:
                wait = RATE_LIMIT_WAIT_S * 2 ** min(host.rate_hits - 1, 10)
            wait = max(wait, self.pace.backoff_s)
            host.paused_s += wait
            self.pace.paused_until[job.host] = max(self.pace.paused_until.get(job.host, 0.0), now + wait)
            if self.slots is not None:
                self.slots.pause(job.host, wait)  # every task on the machine waits for it too
            if wait > self.pace.budget_s:  # longer than any URL of the host may wait
                host.tripped = "rate_limited"
                return True
            if now + wait <= job.first_start + self.pace.budget_s:
                heapq.heappush(host.later, (now + wait, job.seq, job))
                return False
            return True
        if result.http_status is not None:
            host.rate_hits = 0
        if reason in RETRY_NOW and job.retries < self.pace.retries:
            job.retries += 1
            heapq.heappush(host.later, (now + self.pace.backoff_s * 2 ** (job.retries - 1), job.seq, job))
            return False
        return True
