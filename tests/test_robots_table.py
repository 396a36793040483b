"""One robots.txt (and tdmrep.json) request per host per job on a cluster: the download's robots table,
against real servers on many loopback addresses, across several Spark tasks and two runs."""

from __future__ import annotations

import time

from pipeline.download import run_download
from pipeline.fetch.robots import OriginRecord
from pipeline.fetch.robots_table import read_table, write_table
from tests.test_download import cfg_for, shard_metadata, write_input
from tests.test_fetch_hosts import JPEG, hosts  # noqa: F401 - hosts is the fixture

IPS = [f"127.0.0.{170 + i}" for i in range(6)]
ROBOTS = b"User-agent: *\nDisallow: /private/\n\nUser-agent: CCBot\nDisallow: /noai/\n"


def route(path, n):
    if path == "/robots.txt":
        return 200, {}, ROBOTS
    if path == "/.well-known/tdmrep.json":
        return 404, {}, b""
    return 200, {"Content-Type": "image/jpeg"}, JPEG


def test_each_hosts_robots_txt_is_asked_once_per_job_and_not_again_while_fresh(hosts, spark, tmp_path):  # noqa: F811
    sites = [hosts(ip, route) for ip in IPS]
    urls = [s.url(f"/{kind}/{i}.jpg") for i in range(8) for s in sites for kind in ("ok", "private", "noai")]
    src = write_input(tmp_path / "in", [{"url": u, "text": f"caption {i}"} for i, u in enumerate(urls)])
    cfg = cfg_for(tmp_path, IPS, shard_size=12)  # 144 URLs → 12 shards, each holding every host's URLs
    run_download(cfg, spark, input=str(src), output=str(tmp_path / "first"))
    rows = {r["url"]: r for r in shard_metadata(tmp_path / "first")}
    assert {(u.split("/")[3], rows[u]["error_message"]) for u in urls} == {
        ("ok", None), ("private", "robots_disallowed"), ("noai", "opted_out_robots_ai")}
    for s in sites:  # one request per host for the whole job, however many tasks held its URLs
        assert s.hits["/robots.txt"] == 1 and s.hits["/.well-known/tdmrep.json"] == 1
    table = read_table(cfg.path("robots"))
    assert sorted(table) == sorted(f"http://{ip}:{s.port}" for ip, s in zip(IPS, sites))
    assert {r.status for r in table.values()} == {"ok"}
    # a second run (another output) while the table is fresh asks no host again
    run_download(cfg, spark, input=str(src), output=str(tmp_path / "second"))
    assert all(s.hits["/robots.txt"] == 1 and s.hits["/.well-known/tdmrep.json"] == 1 for s in sites)
    assert len(shard_metadata(tmp_path / "second")) == len(urls)


def test_stale_records_are_dropped_and_the_table_rewritten(tmp_path):
    folder = str(tmp_path / "robots")
    now = time.time()
    write_table(folder, [OriginRecord("http://a.test", "ok", now, now + 100, robots=b"User-agent: *\n"),
                         OriginRecord("http://b.test", "unavailable", now - 700, now - 100, "robots.txt: http_5xx")])
    assert list(read_table(folder)) == ["http://a.test"]
    write_table(folder, read_table(folder).values())
    assert len(list((tmp_path / "robots").glob("*.parquet"))) == 1
    assert read_table(folder, now=now + 200) == {}
