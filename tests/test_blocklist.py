"""User blocklists of domains and URLs (filters/blocklist.py): what a listed domain blocks, URL
normalisation, list files with the mess real lists carry, the config rule that puts the filter in
the chain, and the `wit filter` stage in Spark dropping rows as ``blocklisted``."""

from __future__ import annotations

import gzip
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters.blocklist import BlocklistFilter, domain_blocked, normalise_url, parse_domain
from filters.chain import FilterChain, expand_names
from pipeline.config import RunConfig, load_config
from pipeline.errors import ConfigError, UserError


def kept(f: BlocklistFilter, urls: list) -> list:
    res = f.apply(pa.RecordBatch.from_pydict({"url": pa.array(urls, pa.string())}))
    return [u for u, k in zip(urls, res.keep, strict=True) if k]


@pytest.mark.parametrize(("entry", "want"), [
    ("example.com", "example.com"), ("  Example.COM \n", "example.com"), ("*.example.com", "example.com"),
    (".example.com", "example.com"), ("example.com.", "example.com"), ("bücher.de", "xn--bcher-kva.de"),
    ("BÜCHER.de", "xn--bcher-kva.de"), ("XN--BCHER-KVA.DE", "xn--bcher-kva.de"), ("_dmarc.example.com", "_dmarc.example.com"),
    ("203.0.113.9", "203.0.113.9"), ("[2001:DB8::1]", "2001:db8::1"), ("localhost", "localhost"),
])
def test_domain_entries(entry, want):
    assert parse_domain(entry) == want


@pytest.mark.parametrize(("entry", "why"), [
    ("example.com:8080", "no port"), ("http://example.com", "URL"), ("example.com/path", "URL"), ("", "not a domain"),
    ("exa mple.com", "not a domain"), ("-bad.example.com", "not a domain"), ("a..b.com", "not a domain"),
    ("x" * 64 + ".com", "not a domain"), ("ex!ample.com", "not a domain"),
])
def test_bad_domain_entries(entry, why):
    with pytest.raises(ValueError, match=why):
        parse_domain(entry)


def test_domain_matching_covers_subdomains_only():
    blocked = {"example.com", "203.0.113.9", "co.uk"}
    for host in ("example.com", "img.example.com", "a.b.example.com", "203.0.113.9", "bbc.co.uk"):
        assert domain_blocked(host, blocked), host
    for host in ("notexample.com", "example.com.evil.org", "example.co", "com", "113.9", "1.203.0.113.9x", "uk"):
        assert not domain_blocked(host, blocked), host


def test_filter_on_urls_with_case_ports_idna_and_junk():
    f = BlocklistFilter(domains=["Example.com", "bücher.de", "xn--mnchen-3ya.de", "[2001:db8::1]"])
    urls = [
        "http://example.com/a.jpg", "HTTPS://IMG.EXAMPLE.COM/b.jpg", "http://img.example.com:8080/c.jpg",
        "http://user:pw@example.com/d.jpg", "http://example.com./e.jpg", "http://Bücher.de/f.jpg",
        "http://xn--bcher-kva.de/g.jpg", "http://münchen.de/h.jpg", "http://[2001:db8::1]:8080/i.jpg",
        # kept
        "http://notexample.com/a.jpg", "http://example.com.evil.org/a.jpg", "http://other.org/example.com/a.jpg",
        "http://other.org/?u=http://example.com/", "http://[::1/broken", "http://exa mple.com/x", "", None, "not a url",
    ]
    assert kept(f, urls) == urls[9:]
    assert kept(BlocklistFilter(), urls) == urls  # no lists: keeps everything


def test_url_normalisation():
    same = ["http://example.com/a.jpg", "HTTP://Example.COM/a.jpg", "http://example.com:80/a.jpg",
            "http://example.com/a.jpg#frag", "http://u:p@example.com/a.jpg", "http://example.com./a.jpg"]
    assert {normalise_url(u) for u in same} == {"http://example.com/a.jpg"}
    assert normalise_url("https://example.com:443") == normalise_url("https://example.com/") == "https://example.com/"
    assert normalise_url("http://bücher.de/ä.jpg?x=Y") == "http://xn--bcher-kva.de/ä.jpg?x=Y"
    assert normalise_url("http://[2001:DB8::1]:80/a") == "http://[2001:db8::1]/a"
    different = ["https://example.com/a.jpg", "http://example.com:8080/a.jpg", "http://example.com/A.jpg",
                 "http://example.com/a.jpg?x=1", "http://img.example.com/a.jpg"]
    assert len({normalise_url(u) for u in [same[0], *different]}) == 6
    for bad in ("ftp://example.com/a", "example.com/a.jpg", "http://example.com:99999/a", "http://[::1/a", "http:///a", ""):
        assert normalise_url(bad) is None, bad


def test_list_files(tmp_path):
    domains = tmp_path / "domains.txt"
    domains.write_bytes(
        "\ufeff# a comment line\n\nAds.Example.com\r\n*.tracker.net   # inline comment\n"
        "0.0.0.0 hosts-style.org other-hosts.org\n127.0.0.1\tlocalhost-style.org\n  .dotted.io  \n".encode()
    )
    urls = tmp_path / "urls.txt.gz"
    urls.write_bytes(gzip.compress(
        b"# blocked images\nHTTP://Photos.Example.org:80/cat.jpg#x\n\nhttps://cdn.site.com/p/Q.png?s=1  # a comment\n"
    ))
    f = BlocklistFilter(domains=[str(domains), "inline.example"], url_files=[str(urls)])
    f.setup()
    assert f.domains == {"ads.example.com", "tracker.net", "hosts-style.org", "other-hosts.org", "localhost-style.org",
                         "dotted.io", "inline.example"}
    assert f.urls == {"http://photos.example.org/cat.jpg", "https://cdn.site.com/p/Q.png?s=1"}
    urls_in = ["http://x.ads.example.com/1.jpg", "http://a.b.tracker.net/1.jpg", "http://hosts-style.org/1.jpg",
               "http://photos.example.org/cat.jpg", "https://cdn.site.com/p/Q.png?s=1",
               # kept
               "http://photos.example.org/dog.jpg", "https://cdn.site.com/p/q.png?s=1", "http://example.com/1.jpg",
               "http://0.0.0.0/1.jpg"]
    assert kept(f, urls_in) == urls_in[5:]


def test_bad_list_files_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("ok.example.com\n\nexample.com:8080\n")
    with pytest.raises(UserError, match=r"bad.txt, line 3: 'example.com:8080': a domain entry has no port"):
        BlocklistFilter(domains=[str(bad)]).setup()
    bad.write_text("a.example b.example\n")
    with pytest.raises(UserError, match="line 1: .*one domain a line"):
        BlocklistFilter(domains=[str(bad)]).setup()
    bad.write_text("# urls\nhttp://ok.example/a.jpg\nwww.example.com/b.jpg\n")
    with pytest.raises(UserError, match=r"blocklist_urls: .*bad.txt, line 3: 'www.example.com/b.jpg' is not an http\(s\) URL"):
        BlocklistFilter(url_files=[str(bad)]).setup()
    bad.write_bytes(b"caf\xe9.example\n")
    with pytest.raises(UserError, match="not UTF-8"):
        BlocklistFilter(domains=[str(bad)]).setup()
    with pytest.raises(UserError, match="file not found: .*missing.txt"):
        BlocklistFilter(domains=[str(tmp_path / "missing.txt")]).setup()
    with pytest.raises(UserError, match="file not found"):
        BlocklistFilter(url_files=[str(tmp_path / "missing.txt")]).setup()


def test_config_puts_the_filter_in_the_chain(tmp_path, monkeypatch):
    default = RunConfig().filter.chain
    assert "blocklist" not in default and "blocklisted" not in default  # nothing configured: chain unchanged
    cfg = load_config(overrides={"filter.blocklist_domains": ["Example.com"]})
    assert cfg.filter.chain == ["blocklist", *default]
    assert expand_names(cfg.filter.chain)[0] == "blocklisted"
    later = load_config(overrides={"filter.chain": ["url_safety", "blocklist", "dedup"], "filter.blocklist_urls": ["u.txt"]})
    assert later.filter.chain == ["url_safety", "blocklist", "dedup"]  # placed by the user: left there
    assert later.filter.blocklist_urls == [os.path.abspath("u.txt")]  # absolute, for the workers
    named = load_config(overrides={"filter.chain": ["blocklist", "dedup"]})
    assert FilterChain.from_config(named).names == ["blocklisted", "dedup"]  # no lists: a no-op filter
    assigned = RunConfig()
    assigned.filter.blocklist_domains = ["example.com"]
    assert assigned.filter.chain[0] == "blocklist"
    again = RunConfig.model_validate_json(cfg.model_dump_json())  # as Spark workers rebuild it
    assert again.filter.chain == cfg.filter.chain

    with pytest.raises(ConfigError, match=r"filter.blocklist_domains: .*'example.com:81'.*no port"):
        load_config(overrides={"filter.blocklist_domains": ["ok.example", "example.com:81"]})
    with pytest.raises(ConfigError, match=r"filter.blocklist_domains: .*not a domain"):
        load_config(overrides={"filter.blocklist_domains": [""]})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "domains.txt").write_text("example.com\n")
    cfg = load_config(overrides={"filter.blocklist_domains": ["domains.txt", "lists/more.txt", "s3://bucket/d.txt"]})
    assert cfg.filter.blocklist_domains == [str(tmp_path / "domains.txt"), str(tmp_path / "lists" / "more.txt"), "s3://bucket/d.txt"]


def test_chain_records_blocklisted(tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("http://fine.example/private.jpg\n")
    cfg = load_config(overrides={"filter.chain": ["url_safety", "min_length"], "filter.blocklist_domains": ["bad.example"],
                                 "filter.blocklist_urls": [str(urls)]})
    chain = FilterChain.from_config(cfg)
    table = pa.table({"url": ["http://cdn.bad.example/a.jpg", "http://fine.example/private.jpg", "http://fine.example/a.jpg",
                              "file:///etc/passwd", "http://fine.example/b.jpg"],
                      "text": ["a long enough caption"] * 4 + ["x"]})
    tagged = chain.tag(table)
    assert tagged.column("drop_reason").to_pylist() == ["blocklisted", "blocklisted", None, "url_safety", "min_length"]


# --- `wit filter` in Spark ----------------------------------------------------------------------------
def test_filter_stage_in_spark_drops_blocklisted(spark, tmp_path):
    from pipeline.filter import run_filter
    from pipeline.ids import make_uid
    from schemas import CANDIDATES

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "domains.txt").write_text("# shock sites\nBAD.example\n0.0.0.0 tracker.example\n")
    (lists / "urls.txt").write_text("HTTP://good.example:80/removed.jpg#top\n")
    text = "A brown dog runs through the green grass."
    urls = ["http://good.example/a.jpg", "http://img.bad.example/b.jpg", "http://bad.example:8080/c.jpg",
            "http://notbad.example/d.jpg", "http://good.example/removed.jpg", "http://good.example/Removed.jpg",
            "http://x.tracker.example/e.jpg", "http://10.0.0.1/f.jpg"]
    src = tmp_path / "out" / "candidates"
    src.mkdir(parents=True)
    rows = {f.name: [] for f in CANDIDATES}
    for i, u in enumerate(urls):
        vals = {"uid": make_uid(u, text), "url": u, "text": text, "text_source": "alt", "page_url": None,
                "source_file": "test", "record_id": str(i), "page_lang": None}
        for k in rows:
            rows[k].append(vals[k])
    pq.write_table(pa.table(rows, schema=CANDIDATES), src / "part-0.parquet")

    cfg = load_config(overrides={
        "output_dir": str(tmp_path / "out"), "filter.chain": ["url_safety", "dedup"],
        "filter.blocklist_domains": [str(lists / "domains.txt")], "filter.blocklist_urls": [str(lists / "urls.txt")],
    })
    stats = run_filter(cfg, spark)
    out = tmp_path / "out"
    kept_urls = pq.read_table(out / "filtered").column("url").to_pylist()
    dropped = pq.read_table(out / "dropped" / "filter")
    reasons = dict(zip(dropped.column("url").to_pylist(), dropped.column("drop_reason").to_pylist(), strict=True))
    assert sorted(kept_urls) == ["http://good.example/Removed.jpg", "http://good.example/a.jpg", "http://notbad.example/d.jpg"]
    assert reasons == {u: "blocklisted" for u in (urls[1], urls[2], urls[4], urls[6])} | {"http://10.0.0.1/f.jpg": "url_safety"}
    assert stats["drops"] == {"blocklisted": 4, "url_safety": 1}
    assert stats["extra"]["chain"] == ["blocklisted", "url_safety", "dedup"]
