"""The crawl stage (``run_crawl``) and the ``wit crawl`` command; the seeds it starts from."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

import pyarrow.parquet as pq

from pipeline import inputs, storage
from pipeline.crawl.frontier import Rounds
from pipeline.crawl.layout import CrawlFiles
from pipeline.errors import UserError
from pipeline.stage import StageContext, stage


def read_seeds(sources: Iterable[str], url_col: str) -> list[str]:
    """Seed URLs from URLs and files, local or on any filesystem (text: one URL a line, # comments;
    .parquet/.csv: ``url_col``). An http(s) URL that is no file is a seed itself."""
    urls: list[str] = []
    for src in sources:
        is_web = src.lower().startswith(("http://", "https://"))
        if is_web or not storage.exists(src):
            if is_web or "://" in src and not src.startswith("file://"):
                urls.append(src)  # a URL: the seed (a bad one is dropped as bad_url)
                continue
            raise UserError(f"crawl seed {src!r} is neither a URL nor a file")
        inputs.require_seed_file(src, url_col)  # a damaged seeds file stops, naming it
        fs, path = storage.fs_for(src)
        if path.endswith(".parquet"):
            with fs.open(path, "rb") as f:
                table = pq.read_table(f)
            if url_col not in table.column_names:
                raise UserError(f"crawl seeds {src}: no column {url_col!r} (config crawl.seed_url_col)")
            urls += [u for u in table.column(url_col).to_pylist() if u]
            continue
        with fs.open(path, "rb") as f:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            if path.endswith(".csv"):
                reader = csv.DictReader(text)
                if url_col not in (reader.fieldnames or []):
                    raise UserError(f"crawl seeds {src}: no column {url_col!r} (config crawl.seed_url_col)")
                urls += [row[url_col] for row in reader if row[url_col]]
            else:
                urls += [line.strip() for line in text if line.strip() and not line.lstrip().startswith("#")]
    return urls


def warc_files(output: str) -> list[str]:
    """The crawl's WARC files (the input of `wit extract`)."""
    return [f"{output.rstrip('/')}/warc/{n}" for n in CrawlFiles(output).listing("warc", suffix=".warc.gz")]


def _seeds_default(cfg):
    return list(cfg.crawl.seeds) or None


@stage("crawl", order=10, input=_seeds_default, output="crawl", writes="parts")
def run_crawl(ctx: StageContext) -> None:
    """Crawl from ``input`` (seed URLs or files of them; default: config crawl.seeds) into ``output``
    (default: <output_dir>/crawl, any filesystem): WARC files, a CDX-style index, frontiers and per-page
    outcomes."""
    sources = [ctx.input] if isinstance(ctx.input, str) else list(ctx.input or [])
    if not sources:
        raise UserError("crawl: no seeds: pass URLs or files, or set crawl.seeds in the config")
    seeds = read_seeds(sources, ctx.cfg.crawl.seed_url_col)
    Rounds(ctx).run(seeds)
    return None


def register(sub, common) -> None:
    from pipeline.cli import flag, stage_command

    p = stage_command(
        sub, common, run_crawl, help="seed pages -> WARC files (polite crawler, robots.txt, breadth-first)",
        description="Crawl HTML pages breadth first from seed URLs (or files of them: text, Parquet/CSV with "
        "a url column) into WARC files (output/warc/*.warc.gz, which `wit extract` reads) with a CDX-style index "
        "(output/index), each round's frontier and every URL's outcome; the output may be any path or URL "
        "(s3:// …). robots.txt is always honoured (RFC 9309: an unreachable one disallows its site for "
        "robots.unavailable_s), read once per origin per job from the robots table (<output_dir>/robots, reused "
        "while fresh), and so are the AI-training opt-outs (robots.txt AI-token groups, tdmrep.json, "
        "tdm-reservation and X-Robots-Tag headers, noai/noimageai page metas: each URL's reason recorded), each host at most one request per crawl.min_interval_s, or per its Crawl-delay "
        "up to crawl.max_crawl_delay_s. Resumable: a rerun skips complete rounds and parts.",
        input_help="seed URLs or files (default: config crawl.seeds)",
        output_help="output folder or URL (default: <output_dir>/crawl)", positional_input="*",
    )
    flag(p, "--scope", key="crawl.scope", choices=["same_host", "same_domain", "any"])
    flag(p, "--max-depth", key="crawl.max_depth", type=int)
    flag(p, "--max-pages", key="crawl.max_pages", type=int)
    flag(p, "--max-pages-per-host", key="crawl.max_pages_per_host", type=int)
    flag(p, "--threads", key="crawl.threads", type=int)
    flag(p, "--tasks", key="crawl.tasks", type=int)
