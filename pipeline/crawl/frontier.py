"""The crawl's breadth-first rounds on the driver (``Rounds``): round 0's frontier from the seeds, each
round's fetch as a Spark job of one task per host group, each next frontier as a Spark job (links
normalised, deduplicated, anti-joined against every URL seen, budgets by window functions). The
driver holds none of the frontier: its memory does not grow with the crawl. A small round's next
frontier is computed on the driver by the same rules (``local_frontier``)."""

from __future__ import annotations

import time
from collections import Counter
from functools import partial

import pyarrow as pa

from pipeline import log, storage
from pipeline.crawl import local_frontier
from pipeline.crawl.layout import (
    FRONTIER,
    PAGES,
    REJECTED,
    CrawlFiles,
    dataset,
    list_values,
    round_name,
    spark_read,
    spark_write,
    value_counts,
    write_arrow,
    write_folder,
)
from pipeline.crawl.local_frontier import link_rows
from pipeline.crawl.pages import Crawler, crawl_group, user_agent
from pipeline.crawl.scope import Scope, host_of, normalise
from pipeline.errors import UserError
from pipeline.stage import StageContext


def _normalised_links(batches, strip_params: tuple[str, ...], scope: Scope):
    """mapInPandas: (link, depth) → (url, host, depth, in_scope); links that are no web page dropped."""
    import pandas as pd

    for df in batches:
        yield pd.DataFrame(list(link_rows(df["link"], df["depth"], strip_params, scope)),
                           columns=["url", "host", "depth", "in_scope"])


class Rounds(CrawlFiles):
    """The crawl's loop on the driver (see the module docstring)."""

    def __init__(self, ctx: StageContext):
        super().__init__(ctx.tmp)
        self.ctx, self.cfg, self.cc = ctx, ctx.cfg, ctx.cfg.crawl
        self.prepare()

    def groups(self) -> int:
        """Host groups of a new frontier: one fetch task each (crawl.tasks, else Spark's parallelism)."""
        return self.cc.tasks or self.ctx.spark.sparkContext.defaultParallelism

    def seed(self, seeds: list[str]) -> Scope:
        """Round 0's frontier (written once): the seeds, and with crawl.sitemaps the pages of the
        sitemaps their robots.txt names; the scope from the seeds' hosts."""
        sc = self.cc
        good = []
        for raw in seeds:
            url = normalise(raw, sc.strip_params)
            if url is None:
                self.ctx.stats.drop("bad_url")
            else:
                good.append(url)
        good = list(dict.fromkeys(good))
        if not good:
            raise UserError("crawl: no seed is an http(s) URL")
        scope = Scope(sc, {host_of(u) for u in good})
        if not self.exists("frontier", 0):
            listed = self._sitemap_pages(good) if sc.sitemaps else []
            per_host: Counter = Counter()
            rows, rejected = [], []
            for url in dict.fromkeys(good + listed):
                host = host_of(url)
                if url not in scope:
                    rejected.append({"url": url, "depth": 0, "reason": "out_of_scope"})
                elif per_host[host] >= sc.max_pages_per_host or len(rows) >= sc.max_pages:
                    rejected.append({"url": url, "depth": 0, "reason": "budget_exhausted"})
                else:
                    per_host[host] += 1
                    rows.append({"url": url, "depth": 0, "host": host})
            if rejected:
                write_folder(self.path("rejected", 0),
                             lambda tmp: write_arrow(pa.Table.from_pylist(rejected, schema=REJECTED), f"{tmp}/part-00000.parquet"))
            self.write_frontier_table(pa.Table.from_pylist(rows, schema=local_frontier.QUEUED), 0)
        return scope

    def _sitemap_pages(self, seeds: list[str]) -> list[str]:
        crawler = Crawler(self.cfg)  # the driver's: robots.txt and sitemaps of the seeds' origins
        try:
            return [u for u in map(partial(normalise, strip_params=self.cc.strip_params), crawler.sitemap_urls(seeds))
                    if u is not None]
        finally:
            crawler.close()

    def write_frontier(self, df, r: int) -> int:
        """Write round r's frontier from ``df`` (url, depth, host) with its host groups (the one rule:
        xxhash64(host) mod crawl.tasks), each group in one file, sorted by URL (``group_chunks``
        relies on it); nothing when it is empty. Returns its rows."""
        from pyspark.sql import functions as F

        groups = self.groups()
        grouped = (df.select("url", F.col("depth").cast("int"), "host",
                             F.pmod(F.xxhash64("host"), F.lit(groups)).cast("int").alias("group"))
                   .repartition(groups, "group").sortWithinPartitions("group", "url"))
        return write_folder(self.path("frontier", r), lambda tmp: spark_write(grouped, tmp, FRONTIER))

    def write_frontier_table(self, queued: pa.Table, r: int) -> int:
        """``write_frontier`` for rows the driver holds (url, depth, host): the same groups and files."""
        def write(tmp: str) -> int:
            for g, rows in local_frontier.by_group(queued, self.groups()):
                write_arrow(rows.select(FRONTIER.names).cast(FRONTIER), f"{tmp}/part-{g:05d}.parquet")
            return len(queued)
        return write_folder(self.path("frontier", r), write)

    def run(self, seeds: list[str]) -> None:
        scope = self.seed(seeds)
        r = 0
        while self.exists("frontier", r):
            if not self.exists("rounds", r):
                t0 = time.perf_counter()
                self.crawl_round(r)
                t1 = time.perf_counter()
                self.next_frontier(r, scope)
                counts = {**self.round_counts(r), "fetch_s": round(t1 - t0, 3),
                          "frontier_s": round(time.perf_counter() - t1, 3)}
                self.write_json(self.path("rounds", r), counts)
                log.info(f"crawl: round {r}: {counts['frontier']} URLs fetched in {counts['fetch_s']:.1f}s, next "
                         f"frontier in {counts['frontier_s']:.1f}s")
            r += 1
        self.totals()

    def crawl_round(self, r: int) -> None:
        import pyarrow.compute as pc

        frontier = dataset(self.path("frontier", r)).to_table(columns=["group"])
        groups = sorted(pc.unique(frontier.column("group")).to_pylist())
        sc = self.ctx.spark.sparkContext
        sc.setJobDescription(f"wit crawl: round {r}, {frontier.num_rows} pages in {len(groups)} host group(s)")
        log.info(f"crawl: round {r}: {frontier.num_rows} URLs in {len(groups)} host group(s)")
        cfg_json = self.cfg.model_dump_json()
        table = sc.broadcast(self.robots_table(r))
        sc.setJobDescription(f"wit crawl: round {r}, {frontier.num_rows} pages in {len(groups)} host group(s)")
        tasks = [(cfg_json, self.out, r, g, table) for g in groups]
        sc.parallelize(tasks, len(tasks)).foreach(crawl_group)

    def robots_table(self, r: int) -> list:
        """The round's origins' robots.txt and tdmrep.json from the job's robots table (pipeline.fetch.
        robots_table, shared with the download): only origins without a fresh record are asked, once."""
        from pipeline.fetch import robots_table

        self.ctx.spark.sparkContext.setJobDescription(f"wit crawl: round {r}'s origins")
        overrides = {"respect_robots_txt": True, "tdmrep": True, "user_agent": user_agent(self.cfg)}
        return robots_table.build(self.ctx.spark, self.origins(r), self.cfg.path(robots_table.TABLE_DIR),
                                  self.cfg.download, self.cfg.robots, **overrides)

    def origins(self, r: int) -> list[str]:
        """The distinct origins of round r's frontier, read here a batch of URLs at a time: memory holds
        the origins (a few per host), not the frontier, and reading a round's URLs costs less than the
        Spark job that did it before (a second or two per round, whatever the round's size)."""
        import pyarrow.compute as pc

        from pipeline.fetch.robots_table import origins_of

        found: set[str] = set()
        for batch in dataset(self.path("frontier", r)).to_batches(columns=["url"]):
            prefixes = pc.extract_regex(batch.column("url"), r"^(?P<origin>[^:/?#]+://[^/?#]*)").field("origin")
            found |= origins_of(pc.unique(prefixes).to_pylist())
        return sorted(found)

    def next_frontier(self, r: int, scope: Scope) -> None:
        """Round r+1's frontier from round r's links (on the driver while the round's links and the
        URLs seen so far are at most crawl.driver_frontier_max_urls, else a Spark job): normalised,
        deduplicated, not seen (an anti-join against every URL queued or rejected so far), in scope, within max_depth,
        the per-host budget (a host's earlier URLs count, then its new ones by depth and URL) and the
        total one (the cut by URL hash). The links not queued go to rejected/ with their reason, each
        URL once. Memory: Spark's (it spills), not the driver's, beyond the driver's small rounds."""
        from pyspark.sql import functions as F

        cc, spark = self.cc, self.ctx.spark
        parts = self.parts(r)
        if not parts:
            return
        frontiers = [self.path("frontier", q) for q in range(r + 1)]
        rejected_so_far = [p for q in range(r + 1) if self.exists("rejected", q) for p in [self.path("rejected", q)]]
        seen_rows = sum(dataset(p).count_rows() for p in frontiers + rejected_so_far)
        remaining = cc.max_pages - sum(dataset(p).count_rows() for p in frontiers)
        if list_values(parts, "links") + seen_rows <= cc.driver_frontier_max_urls:
            self._next_frontier_here(r, scope, parts, frontiers, rejected_so_far, remaining)
            return
        spark.sparkContext.setJobDescription(f"wit crawl: frontier of round {r + 1}")

        links = spark_read(spark, parts, PAGES).select(
            F.when(F.col("reason") == "redirected", F.col("depth")).otherwise(F.col("depth") + 1).alias("depth"),
            F.explode("links").alias("link"))
        normalised = links.mapInPandas(
            partial(_normalised_links, strip_params=tuple(cc.strip_params), scope=scope),
            "url string, host string, depth int, in_scope boolean")
        new = normalised.groupBy("url").agg(F.min("depth").alias("depth"), F.first("host").alias("host"),
                                            F.first("in_scope").alias("in_scope"))
        seen = spark_read(spark, frontiers, FRONTIER).select("url")
        if rejected_so_far:
            seen = seen.unionByName(spark_read(spark, rejected_so_far, REJECTED).select("url"))
        new = new.join(seen, "url", "left_anti")
        per_host = spark_read(spark, frontiers, FRONTIER).groupBy("host").agg(F.count("*").alias("before"))
        staged = f"{self.out}/rejected/{round_name(r + 1)}-staged"
        try:
            if write_folder(staged, lambda tmp: spark_write(self._decided(new, per_host), tmp, _DECIDED)):
                self._split(staged, r, remaining)
        finally:
            storage.remove(staged)

    def _next_frontier_here(self, r: int, scope: Scope, parts: list[str], frontiers: list[str],
                            rejected_so_far: list[str], remaining: int) -> None:
        """``next_frontier`` on the driver (pipeline.crawl.local_frontier): the same rules and files."""
        before = dataset(frontiers).to_table(columns=["host", "url"])
        seen = [before["url"]] + [dataset(p).to_table(columns=["url"])["url"] for p in rejected_so_far]
        counts = before.group_by("host").aggregate([("url", "count")])
        per_host = pa.table({"host": counts["host"], "before": counts["url_count"]})
        pages = dataset(parts).to_table(columns=["depth", "reason", "links"])
        queued, rejected = local_frontier.next_frontier(
            pages, pa.chunked_array([c for s in seen for c in s.chunks], pa.string()),
            per_host, self.cc, scope, remaining)
        write_folder(self.path("rejected", r + 1), lambda tmp: write_arrow(rejected, f"{tmp}/part-00000.parquet"))
        self.write_frontier_table(queued, r + 1)  # last: its presence starts the next round

    def _decided(self, new, per_host):
        """Each new URL's reason not to be queued (None: queued, unless the total budget cuts it)."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        cc = self.cc
        rank = F.row_number().over(Window.partitionBy("host", "in_bounds").orderBy("depth", "url"))
        return (new.join(per_host, "host", "left")
                .withColumn("in_bounds", F.col("in_scope") & (F.col("depth") <= cc.max_depth))
                .withColumn("n", F.coalesce(F.col("before"), F.lit(0)) + rank)
                .select("url", F.col("depth").cast("int"), "host", F.when(~F.col("in_scope"), "out_of_scope")
                        .when(F.col("depth") > cc.max_depth, "max_depth")
                        .when(F.col("n") > cc.max_pages_per_host, "budget_exhausted").alias("reason")))

    def _split(self, staged: str, r: int, remaining: int) -> None:
        """Round r+1's rejected/ (with the URLs the total budget cuts) and then its frontier/."""
        import pyarrow.dataset as ds
        from pyspark.sql import functions as F

        decided = spark_read(self.ctx.spark, [staged], _DECIDED)
        candidates = decided.where(F.col("reason").isNull())
        cut = candidates.orderBy(F.xxhash64("url"), "url").limit(max(remaining, 0))
        over = dataset(staged).count_rows(filter=ds.field("reason").is_null()) > remaining
        kept = cut if over else candidates
        rejected = decided.where(F.col("reason").isNotNull()).select("url", "depth", "reason")
        if over:
            rejected = rejected.unionByName(candidates.join(cut.select("url"), "url", "left_anti")
                                            .select("url", "depth", F.lit("budget_exhausted").alias("reason")))
        write_folder(self.path("rejected", r + 1), lambda tmp: spark_write(rejected.coalesce(self.groups()), tmp, REJECTED))
        self.write_frontier(kept, r + 1)  # last: its presence starts the next round

    def round_counts(self, r: int) -> dict:
        return {"round": r, "frontier": self.rows("frontier", r), "outcomes": dict(value_counts(self.parts(r), "reason"))}

    def totals(self) -> None:
        """The crawl's stats: pages stored (output_rows), every URL not crawled by reason (drops)."""
        import pyarrow.compute as pc

        stats = self.ctx.stats
        rounds = list(self.rounds_on_disk())
        frontiers = [self.path("frontier", r) for r in rounds]
        frontier_sizes = [dataset(p).count_rows() for p in frontiers]
        outcomes = value_counts([p for r in rounds for p in self.parts(r)], "reason")
        rejected = value_counts([self.path("rejected", r) for r in range(len(rounds) + 1)
                                 if self.exists("rejected", r)], "reason")
        for reason, n in (outcomes + rejected).items():
            if reason != "None":
                stats.drop(reason, n)
        hosts = len(pc.unique(dataset(frontiers).to_table(columns=["host"]).column("host"))) if frontiers else 0
        stats.input_rows = sum(frontier_sizes)
        stats.output_rows = outcomes["None"]
        timings = [self.read_json(self.path("rounds", r)) for r in rounds if self.exists("rounds", r)]
        stats.extra.update({
            "rounds": len(rounds), "frontier_sizes": frontier_sizes, "hosts": hosts,
            "fetch_s": round(sum(t.get("fetch_s", 0) for t in timings), 3),  # this run's and earlier runs' rounds
            "frontier_s": round(sum(t.get("frontier_s", 0) for t in timings), 3),
            "warc_files": self.listing("warc", suffix=".warc.gz"),
            "user_agent": user_agent(self.cfg),
        })


_DECIDED = REJECTED.append(pa.field("host", pa.string()))  # the staged decisions of next_frontier
