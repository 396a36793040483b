"""`wit download`: fetch and resize the images of a pair dataset into img2dataset-layout shards.

Input: any Parquet dataset with at least url and text (balanced/ by default; uid is computed when
absent, other schema columns become null). Rows are split, in input order (files sorted by name,
rows in file order), into shards of ``download.shard_size``; one Spark task per shard reads its
own rows from the input files by row range, so a task's memory does not grow with the input.
Each task fetches with ``download.threads`` threads through the safe fetcher (pipeline/fetch/),
honouring the sites' consent (``download.consent``, on by default: robots.txt and the AI-training
opt-outs, each origin's files read once per job from the robots table, ``pipeline.fetch.robots_table``),
checks the image header before decoding (pixel cap, real image format, complete file) and resizes
with img2dataset's Resizer (both in pipeline/images.py), and writes img2dataset's layout (the plan of
row ranges is pipeline/shard_plan.py; tars by pipeline.shards.SampleTarWriter):

    shards/NNNNN.tar           key.jpg, key.txt, key.json   (output_format=webdataset; names and
                               keys follow pipeline.shards' one rule: 6 digits past 100,000 shards)
    shards/NNNNN.parquet       one row per input sample, schemas.SHARD_METADATA (+ the image
                               column when output_format=parquet)
    shards/NNNNN_stats.json    counts, failures by reason, bytes, images/s
    shards/_stats.json, _SUCCESS    the whole stage: success rate, failures by reason, bytes, images/s

A shard is written in shards/_tmp/ and moved into place when complete, the .parquet last: it is
the shard's completion marker, so a killed run rerun skips complete shards and redoes the others,
giving the same samples with no duplicates. ``--retry-failed`` refetches only the transient
failures (``pipeline.fetch.TRANSIENT``: timeout, http_5xx, connection_error, rate_limited,
host_unreachable) of complete shards and rewrites those shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
import uuid
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import inputs, log, near_dup, progress, storage
from pipeline.errors import UserError
from pipeline.fetch import TRANSIENT, Fetcher, HostSlots, job_slots_folder
from pipeline.images import RESIZER_REASONS, inspect_image, make_resizer
from pipeline.shard_plan import ShardSpec, carried_schema, check_input_schema, input_files, plan_shards, read_shard_rows
from pipeline.shards import sample_key, shard_digits, shard_name
from pipeline.stage import StageContext, stage

PLAN_FILE = "_plan.json"
TMP_DIR = "_tmp"
DRIVER_ORIGINS_MAX_ROWS = 200_000  # a job of at most this many rows lists its origins on the driver

# --- one shard --------------------------------------------------------------------------------------


def _writer_class(output_format: str):
    from img2dataset.writer import BufferedParquetWriter, ParquetSampleWriter

    from pipeline.shards import SampleTarWriter

    class WebDatasetWriter:
        """img2dataset's webdataset layout (NNNNN.tar + NNNNN.parquet of every row), the tar written by
        ``SampleTarWriter`` (no pax record per member); the per-sample JSON leaves out binary columns
        (the copy thumbnail): they are in the shard's parquet only."""

        def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format):
            name = f"{shard_id:0{oom_shard_count}d}"
            fs, folder = storage.fs_for(output_folder)
            self._fd = fs.open(f"{folder}/{name}.tar", "wb")
            self._tar = SampleTarWriter(self._fd)
            self._rows = BufferedParquetWriter(f"{output_folder}/{name}.parquet", schema, 100)
            self.save_caption, self.encode_format = save_caption, encode_format

        def write(self, img_str, key, caption, meta):
            if img_str is not None:
                members = {self.encode_format: img_str, "json": _sample_json(meta)}
                if self.save_caption:
                    members["txt"] = (str(caption) if caption is not None else "").encode()
                self._tar.write(key, members)
            self._rows.write(meta)

        def close(self):
            self._rows.close()
            self._tar.close()
            self._fd.close()

    return WebDatasetWriter if output_format == "webdataset" else ParquetSampleWriter


def _sample_json(meta: dict[str, Any]) -> bytes:
    """A sample's key.json: its metadata without the binary values (the signature's thumbnail)."""
    return json.dumps({k: v for k, v in meta.items() if not isinstance(v, bytes)}, indent=4).encode()


def _meta(row: dict[str, Any], key: str, shard: int) -> dict[str, Any]:
    return {**row, "key": key, "shard": shard, "status": "failed", "error_message": None, "width": None,
            "height": None, "original_width": None, "original_height": None, "bytes": None, "sha256": None,
            "phash": None, "colour_grid": None, "copy_thumb": None}


class ShardJob:
    """Download one shard: threads fetch, check headers, resize and hash; this thread writes."""

    def __init__(self, dl, out: str, spec: ShardSpec, n_shards: int, robots=None, robots_table=(),
                 host_slots: str | None = None):
        from PIL import Image

        self.dl, self.robots, self.out, self.spec = dl, robots, out.rstrip("/"), spec
        self.robots_table = robots_table  # the job's OriginRecords (pipeline.fetch.robots_table)
        self.host_slots = host_slots  # the job's host slots folder (tasks on one machine share the host cap)
        self.name = shard_name(spec.shard, n_shards)
        self.digits = shard_digits(n_shards)  # img2dataset's writers name the files with it
        self.key_of = lambda index: sample_key(spec.shard, index, n_shards, dl.shard_size)
        Image.MAX_IMAGE_PIXELS = dl.max_pixels  # Pillow's own bomb guard at our cap (2x: error)
        self.fs, _ = storage.fs_for(self.out)

    def path(self, suffix: str, folder: str | None = None) -> str:
        return f"{folder or self.out}/{self.name}{suffix}"

    def run(self, retry_failed: bool) -> dict[str, Any]:
        done = storage.exists(self.path(".parquet"))
        if done and not retry_failed:
            return {**self._old_stats(), "skipped": True}
        t0, started = time.perf_counter(), time.time()
        tmp = f"{self.out}/{TMP_DIR}/{self.name}-{uuid.uuid4().hex[:8]}"
        self._clean_tmp()
        self.fs.makedirs(storage.fs_for(tmp)[1], exist_ok=True)
        writer = _writer_class(self.dl.output_format)(
            self.spec.shard, tmp, self.dl.output_format == "webdataset", self.digits, _meta_schema(), self.dl.encode_format
        )
        counts: Counter = Counter()
        totals = Counter()
        try:
            if done:  # --retry-failed: carry the old samples over, refetch the transient failures
                todo = self._carry_over(writer, counts, totals)
                if todo is None:
                    writer.close()
                    storage.remove(tmp)
                    return {**self._old_stats(), "skipped": True}
            else:
                todo = [(i, _meta(r, self.key_of(i), self.spec.shard)) for i, r in enumerate(read_shard_rows(self.spec))]
            retried = len(todo) if done else 0
            self._download(todo, writer, counts, totals)
        finally:
            writer.close()
        duration = time.perf_counter() - t0
        n = sum(counts.values())
        ok = counts.pop("success", 0)
        stats = {
            "shard": self.spec.shard, "count": n, "successes": ok, "failed": n - ok,
            "success_rate": round(ok / n, 4) if n else 0.0, "failures": dict(sorted(counts.items())),
            "bytes_downloaded": totals["downloaded"], "bytes_written": totals["written"],
            "fetched": totals["fetched"], "duration_s": round(duration, 3),
            "new_successes": totals["new_ok"],
            "images_per_s": round(totals["new_ok"] / duration, 2) if duration else 0.0,
            "start_time": started, "end_time": time.time(), "retried": retried,
            "consent_files_fetched": totals["consent_files"],
        }
        storage.write_json(self.path("_stats.json", tmp), stats)
        self._commit(tmp, replacing=done)
        return stats

    def _download(self, todo, writer, counts: Counter, totals: Counter) -> None:
        """Fetch host by host (pipeline.fetch.HostScheduler: per-host cap, Retry-After, circuit
        breaker); the image work runs in the fetch threads after the host's connection is free."""
        slots = HostSlots(self.host_slots, self.dl.job_host_connections) if self.host_slots else None
        fetcher = Fetcher.from_config(self.dl, self.robots, host_slots=slots)
        if fetcher.robots is not None:
            fetcher.robots.preload(self.robots_table)
        resizer = make_resizer(self.dl)

        def work(item, r):
            """Check the header, resize and hash (in a fetch thread)."""
            _, meta = item
            if not r.ok:
                return None, r.reason, 0
            _, _, reason = inspect_image(r.data, self.dl.max_pixels)
            if reason:
                return None, reason, len(r.data)
            img, width, height, ow, oh, err = resizer(io.BytesIO(r.data))
            if err is not None or img is None:
                return None, RESIZER_REASONS.get(err, "decode_error"), len(r.data)
            meta.update(status="success", width=width, height=height, original_width=ow, original_height=oh,
                        bytes=len(img), sha256=hashlib.sha256(img).hexdigest())
            meta["phash"], meta["colour_grid"], meta["copy_thumb"] = near_dup.stored_signature_or_none(
                img, width, height, ow, oh, self.dl.resize_mode)
            return img, None, len(r.data)

        try:  # at most 2x threads results wait for the writer (bounded memory)
            for (_, meta), (img, reason, size) in fetcher.fetch_all(
                todo, url_of=lambda item: item[1]["url"], threads=self.dl.threads, process=work
            ):
                totals["fetched"] += 1
                totals["downloaded"] += size
                if img is None:
                    meta["error_message"] = reason or "decode_error"
                    counts[meta["error_message"]] += 1
                else:
                    counts["success"] += 1
                    totals["new_ok"] += 1
                    totals["written"] += len(img)
                writer.write(img, meta["key"], meta["text"], meta)
        finally:
            totals["consent_files"] += fetcher.robots.fetched if fetcher.robots is not None else 0
            fetcher.close()

    def _carry_over(self, writer, counts: Counter, totals: Counter) -> list | None:
        """Rewrite a complete shard's kept samples into ``writer``; return its transient failures (None: none)."""
        from pipeline.shards import iter_tar

        fs, p = storage.fs_for(self.path(".parquet"))
        with fs.open(p, "rb") as fh:
            pf = pq.ParquetFile(fh)
            # Shards written before a column was added (e.g. phash) are carried over with it null.
            names = [n for n in _meta_schema().names if n in pf.schema_arrow.names]
            old = [{n: None for n in _meta_schema().names} | row for row in pf.read(columns=names).to_pylist()]
        retry = [(i, _meta(m, m["key"], m["shard"])) for i, m in enumerate(old)
                 if m["status"] != "success" and m["error_message"] in TRANSIENT]
        if not retry:
            return None
        success = {m["key"]: m for m in old if m["status"] == "success"}
        img_col = self.dl.encode_format
        if self.dl.output_format == "webdataset":
            fs, p = storage.fs_for(self.path(".tar"))
            with fs.open(p, "rb") as fh:
                for _, key, sample in iter_tar(fh):
                    meta = success.pop(key, None)
                    img = next((v for k, v in sample.items() if k not in ("txt", "json")), None)
                    if meta is not None and img is not None:
                        writer.write(img, key, meta["text"], meta)
                        counts["success"] += 1
                        totals["written"] += len(img)
        else:
            with fs.open(p, "rb") as fh:
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=256):
                    for row in batch.to_pylist():
                        meta = success.pop(row["key"], None)
                        if meta is not None and row.get(img_col) is not None:
                            writer.write(row[img_col], row["key"], meta["text"], meta)
                            counts["success"] += 1
                            totals["written"] += len(row[img_col])
        lost = list(success.values())  # a success whose image is missing from the tar: fetch again
        retry_keys = {m["key"] for _, m in retry} | {m["key"] for m in lost}
        for m in old:
            if m["status"] != "success" and m["key"] not in retry_keys:
                writer.write(None, m["key"], m["text"], m)
                counts[m["error_message"] or "decode_error"] += 1
        return retry + [(-1, _meta(m, m["key"], m["shard"])) for m in lost]

    def _commit(self, tmp: str, replacing: bool) -> None:
        """Move the finished files into place; the .parquet (the completion marker) last."""
        if replacing:  # between here and the last move the shard counts as incomplete, never mixed
            storage.remove(self.path(".parquet"))
        suffixes = ([".tar"] if self.dl.output_format == "webdataset" else []) + ["_stats.json", ".parquet"]
        for suffix in suffixes:
            fs, src = storage.fs_for(self.path(suffix, tmp))
            _, dst = storage.fs_for(self.path(suffix))
            fs.mv(src, dst)
        storage.remove(tmp)

    def _clean_tmp(self) -> None:
        """Remove this shard's leftovers of killed attempts from _tmp/.

        The other shards' tasks add and remove their own entries there meanwhile, and on an object
        store the folder vanishes with its last entry: one listing, read fresh, a missing folder
        counting as empty (an exists-then-list failed the task when another task emptied _tmp/ in
        between, which a loaded machine makes likely).
        """
        fs, p = storage.fs_for(f"{self.out}/{TMP_DIR}")
        fs.invalidate_cache(p)
        try:
            entries = fs.ls(p, detail=False)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.rstrip("/").rsplit("/", 1)[-1].startswith(self.name + "-"):
                try:
                    fs.rm(entry, recursive=True)
                except FileNotFoundError:  # already gone
                    pass

    def _old_stats(self) -> dict[str, Any]:
        path = self.path("_stats.json")
        return storage.read_json(path) if storage.exists(path) else {"shard": self.spec.shard}


def _meta_schema() -> pa.Schema:
    from schemas import SHARD_METADATA

    return SHARD_METADATA


def _shard_task(args: tuple) -> dict[str, Any]:
    """Spark task: one shard (module-level so it pickles by reference)."""
    from pipeline.config import DownloadConfig, RobotsConfig

    dl_dict, robots_dict, out, spec, n_shards, retry_failed, table, host_slots = args
    dl, robots = DownloadConfig.model_validate(dl_dict), RobotsConfig.model_validate(robots_dict)
    table = table.value if table is not None else ()
    return ShardJob(dl, out, spec, n_shards, robots, table, host_slots).run(retry_failed)


def _spec_origins(spec: ShardSpec) -> list[str]:
    """Spark task: the origins of one shard's URLs."""
    from pipeline.fetch.robots_table import origins_of

    return sorted(origins_of(r.get("url") for r in read_shard_rows(spec)))


def job_origins(sc, specs: list[ShardSpec]) -> list[str]:
    """The distinct origins of the job's URLs: read on the driver for a job of at most
    DRIVER_ORIGINS_MAX_ROWS rows (a Spark job and its shuffle cost 2 s there), else by a Spark job."""
    if sum(s.n_rows for s in specs) <= DRIVER_ORIGINS_MAX_ROWS:
        return sorted(set().union(*map(_spec_origins, specs)))
    sc.setJobDescription("wit download: the job's origins")
    return sc.parallelize(specs, len(specs)).flatMap(_spec_origins).distinct().collect()


def _robots_table(ctx: StageContext, specs: list[ShardSpec], dl):
    """The job's robots table (pipeline.fetch.robots_table), broadcast; None with consent off."""
    if not dl.consent:
        return None
    from pipeline.fetch import robots_table

    sc = ctx.spark.sparkContext
    origins = job_origins(sc, specs)
    records = robots_table.build(ctx.spark, origins, ctx.cfg.path(robots_table.TABLE_DIR), dl, ctx.cfg.robots)
    return sc.broadcast(records)


# --- the stage ----------------------------------------------------------------------------------------


def _retrying(cfg, retry_failed: bool | None = None) -> bool:
    return cfg.download.retry_failed if retry_failed is None else retry_failed


@stage("download", order=70, input="balanced", output="shards", writes="parts", redo_complete=_retrying)
def run_download(ctx: StageContext, retry_failed: bool | None = None) -> None:
    """Download the input (default balanced/) into shards (default shards/); returns the stats.

    ``retry_failed`` (default: config download.retry_failed) refetches the transient failures of
    complete shards, also in a complete output.
    """
    dl, out = ctx.cfg.download, ctx.output
    retry = _retrying(ctx.cfg, retry_failed)
    inputs.require_parquet(input_files(ctx.input), "download input", ("url", "text"), carried_schema())  # stop naming a damaged file
    files, specs = plan_shards(ctx.input, dl.shard_size)
    check_input_schema(files[0][0])
    _check_plan(out, files, dl)
    n_rows = sum(n for _, n in files)
    log.info(f"download: {n_rows} samples in {len(specs)} shard(s) of {dl.shard_size} from {ctx.input} → {out}"
             + (" (retrying transient failures)" if retry else ""))
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    if specs:
        sc = ctx.spark.sparkContext
        sc.setJobDescription(f"wit download: {len(specs)} shards")
        # The job-wide host cap: slots shared at run time by the tasks when they all run on this machine
        # (a local master), else each task's static share (pipeline.fetch's docstring).
        share = dl.job_host_connections is not None and sc.master.startswith("local")
        if dl.job_host_connections and dl.concurrent_tasks is None and not share:
            dl = dl.model_copy(update={"concurrent_tasks": min(len(specs), sc.defaultParallelism)})
        robots = ctx.cfg.robots.model_dump(mode="json")
        table = _robots_table(ctx, specs, dl)  # each origin's robots.txt and tdmrep.json, once per job
        sc.setJobDescription(f"wit download: {len(specs)} shards")
        with job_slots_folder() if share else contextlib.nullcontext() as slots:
            tasks = [(dl.model_dump(mode="json"), robots, out, s, len(specs), retry, table, slots) for s in specs]
            with progress.watch_folder("download", n_rows, out, pattern="[0-9]*_stats.json"):  # shards' stats files
                results = sc.parallelize(tasks, len(tasks)).map(_shard_task).collect()
    wall = time.perf_counter() - t0
    storage.remove(f"{out}/{TMP_DIR}")
    _aggregate(ctx.stats, results, wall, n_rows, dl)


def _check_plan(out: str, files: list[tuple[str, int]], dl) -> None:
    """Refuse to resume into shards made from another input, shard size or format."""
    plan = {"files": [[f.rsplit("/", 1)[-1], n] for f, n in files], "shard_size": dl.shard_size,
            "output_format": dl.output_format}
    path = f"{out}/{PLAN_FILE}"
    if storage.exists(path):
        old = storage.read_json(path)
        if old != plan:
            raise UserError(f"download: {out} holds shards of another input, shard_size or output_format; "
                            "use --overwrite to start over (or another --output)")
    else:
        storage.write_json(path, plan)


def _aggregate(stats, results: list[dict[str, Any]], wall: float, n_rows: int, dl) -> None:
    failures: Counter = Counter()
    for r in results:
        failures.update(r.get("failures", {}))
    ok = sum(r.get("successes", 0) for r in results)
    fresh = [r for r in results if not r.get("skipped")]
    fetched_ok = sum(r.get("new_successes", 0) for r in fresh)
    stats.input_rows, stats.output_rows = n_rows, ok
    stats.drops.update(failures)
    stats.extra = {
        "success_rate": round(ok / n_rows, 4) if n_rows else 0.0,
        "shards": len(results), "shards_skipped": len(results) - len(fresh),
        "bytes_downloaded": sum(r.get("bytes_downloaded", 0) for r in fresh),
        "bytes_written": sum(r.get("bytes_written", 0) for r in results),
        "wall_s": round(wall, 3),
        "images_per_s": round(fetched_ok / wall, 2) if wall and fresh else 0.0,
        "retried": sum(r.get("retried", 0) for r in fresh),
        "output_format": dl.output_format, "image_size": dl.image_size, "threads": dl.threads,
        "consent": dl.consent, "honour_ai_tokens": dl.consent and dl.honour_ai_tokens,
        "consent_origins_fetched": sum(r.get("consent_files_fetched", 0) for r in fresh),
        "per_shard": [{k: r.get(k) for k in ("shard", "count", "successes", "success_rate", "images_per_s", "skipped")}
                      for r in sorted(results, key=lambda r: r.get("shard", 0))],
    }


# --- CLI ------------------------------------------------------------------------------------------------


def register(sub, common) -> None:
    from pipeline.cli import flag, stage_command

    def show(d: dict[str, Any]) -> str:
        from pipeline.stats import summary_line

        extra = d.get("extra", {})
        return summary_line(d) + f"; success rate {extra.get('success_rate', 0):.1%}, {extra.get('images_per_s', 0)} images/s"

    p = stage_command(
        sub, common, run_download, help="fetch and resize images into webdataset shards (safe fetcher)",
        description="Fetch every image of a pair dataset (default <output_dir>/balanced; any Parquet with url and "
        "text) through the safe fetcher (http/https only, no private addresses unless allowed, deadline, size "
        "cap) honouring each site's robots.txt and AI-training opt-outs (robots.txt AI groups, TDMRep, X-Robots-Tag; "
        "--no-consent switches them off), resize with img2dataset's resizer and write img2dataset-layout shards to "
        "<output_dir>/shards: NNNNN.tar (key.jpg/.txt/.json) or Parquet, NNNNN.parquet metadata (status and "
        "failure reason per sample), NNNNN_stats.json, _stats.json. Resumable: a rerun skips complete shards.",
        input_help="input dataset (default: <output_dir>/balanced)",
        output_help="output folder (default: <output_dir>/shards)", show=show,
    )
    flag(p, "--retry-failed", key="download.retry_failed", action="store_const", const=True,
         help="refetch only the transient failures (timeout, http_5xx, connection_error, rate_limited, "
         "host_unreachable) of complete shards")
    flag(p, "--threads", key="download.threads", type=int, metavar="N", help="fetch threads per task")
    flag(p, "--shard-size", key="download.shard_size", type=int, metavar="N", help="samples per shard")
    flag(p, "--output-format", key="download.output_format", choices=["webdataset", "parquet"])
    flag(p, "--image-size", key="download.image_size", type=int, metavar="PX")
    flag(p, "--resize-mode", key="download.resize_mode", choices=["no", "keep_ratio", "center_crop", "border"])
    flag(p, "--encode-format", key="download.encode_format", choices=["jpg", "webp", "png"])
    flag(p, "--timeout", key="download.timeout_s", type=float, metavar="SECONDS", help="total deadline per request, seconds")
    flag(p, "--allow-host", key="download.allow_hosts", action="append", metavar="HOST[:PORT]",
         help="fetch from this host even if it is a private/loopback address (repeatable), e.g. 127.0.0.1:8765")
    flag(p, "--no-consent", key="download.consent", action="store_const", const=False,
         help="do not honour the sites' consent signals, on by default (download.consent=false): robots.txt "
         "(RFC 9309: robots_disallowed; 5xx, 429 or unreachable → robots_unavailable for robots.unavailable_s; "
         "Crawl-delay paces the host), AI-training opt-outs (opted_out_robots_ai, opted_out_tdmrep from "
         "tdmrep.json or the tdm-reservation header, opted_out_header from X-Robots-Tag). The report says so")
