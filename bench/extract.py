"""Extraction throughput per core: pairs/s and records/s on a large sample WAT and WARC, same run.

WAT: ours (`pipeline.extract.extract_file`: FastWARC + orjson + clean-up + uid + Arrow batches)
vs cc2dataset's own `process_wat(path, "image")` (FastWARC + simdjson, the extraction cc2dataset
runs per WAT file; skipped, with its ratios, where cc2dataset is not installed). WARC: ours
(FastWARC + selectolax) vs a warcio + html.parser baseline doing the same clean-up. Every run is one
single-threaded process (so rates are per core); peak RSS of that process is reported at two file
sizes to show memory stays flat in the file size.

Input: `wit sample`'s crawl (3,000 pairs) replicated into big files — each copy of a record gets a
different host of the same length, so every page URL is distinct and every Content-Length stays
right. Full run: 100k+ pages per file; quick: ~6k pages.

  python -m bench extract [--quick]
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import real_data  # noqa: E402

HOST = b"127.0.0.1:8765"  # the sample's base URL host; replaced by same-length hosts per copy


def _members(path: Path) -> list[bytes]:
    """The decompressed records of a one-gzip-member-per-record file."""
    import zlib

    data, out = path.read_bytes(), []
    while data:
        d = zlib.decompressobj(31)
        out.append(d.decompress(data))
        data = d.unused_data
    return out


def make_big(src: Path, dst: Path, copies: int) -> None:
    """``copies`` copies of every record of ``src`` (warcinfo once), each copy on its own host."""
    recs = _members(src)
    head, body = recs[:1], recs[1:]
    with open(dst, "wb") as f:
        for r in head:
            f.write(gzip.compress(r, 1))
        for k in range(copies):
            host = f"c{k:05d}.test:80".encode()
            assert len(host) == len(HOST)
            for r in body:
                f.write(gzip.compress(r.replace(HOST, host), 1))


def make_cc_shaped_wat(dst: Path, copies: int) -> int | None:
    """Real Common Crawl WAT records (the real test data, $WIT_REAL_DATA: CC-MAIN-2014-35 npm + CC-MAIN-2019-35, the latter
    re-serialised with CRLF so that FastWARC/cc2dataset can read it) repeated ``copies`` times.
    Real CC has three WAT records per page (request, response, metadata) and mostly A@/href links,
    unlike the sample's one image-dense record per page. Returns records per copy, None without data."""
    from pipeline.extract import FileStats, lenient_records, read_lines

    data = (real_data() or Path("/nonexistent")) / "warc"
    if not data.is_dir():
        return None
    records = []
    for name in ("npmwarc_CC-MAIN-2014-35.warc.wat", "pycommoncrawl_file1.warc.wat.gz"):
        st = FileStats(name)
        with open(data / name, "rb") as f:
            for _, headers, payload in lenient_records(read_lines(f, st), st, lenient=True):
                payload = payload.rstrip(b"\r\n")
                names = [k.title().replace("Warc-", "WARC-").replace("-Uri", "-URI").replace("-Id", "-ID") for k in headers]
                head = ["WARC/1.0"] + [f"{n}: {v}" for n, v in zip(names, headers.values()) if n != "Content-Length"]
                head.append(f"Content-Length: {len(payload)}")
                records.append("\r\n".join(head).encode() + b"\r\n\r\n" + payload + b"\r\n\r\n")
    with open(dst, "wb") as f:
        for _ in range(copies):
            for r in records:
                f.write(gzip.compress(r, 1))
    return len(records)


# --------------------------------------------------------------------------- the measured functions
def run_ours(path: str, fmt: str, parser: str = "selectolax") -> dict:
    from pipeline.extract import FileStats, Options, extract_file

    st = FileStats(path)
    n = 0
    for b in extract_file(path, fmt, Options(parser=parser), st):
        n += b.num_rows
    return {"pairs": n, "records": st.records, "pages": st.pages}


def run_cc2dataset(path: str) -> dict:
    import logging

    from loguru import logger

    logger.remove()
    logging.disable(logging.INFO)
    from cc2dataset.main import process_wat

    n = sum(1 for _ in process_wat(path, "image"))
    return {"pairs": n}


def run_warcio_baseline(path: str) -> dict:
    """warcio + html.parser + the same clean-up: what a straightforward script does."""
    import re
    from html.parser import HTMLParser
    from urllib.parse import urljoin

    from warcio.archiveiterator import ArchiveIterator

    from pipeline.extract import clean_text, image_src, resolve_url
    from pipeline.ids import make_uid

    class P(HTMLParser):
        def reset(self):
            super().reset()
            self.imgs, self.base = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                a = dict(attrs)
                self.imgs.append((a.get("src"), a.get("data-src"), a.get("srcset"), a.get("alt"), a.get("title")))
            elif tag == "base" and self.base is None:
                self.base = dict(attrs).get("href")

    charset_re = re.compile(r"charset=([\w-]+)", re.I)
    pairs = records = 0
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f):
            records += 1
            if rec.rec_type != "response":
                continue
            ctype = rec.http_headers.get_header("Content-Type") or ""
            if "html" not in ctype:
                continue
            body = rec.content_stream().read()
            m = charset_re.search(ctype)
            try:
                text = body.decode(m.group(1) if m else "utf-8", "replace")
            except LookupError:
                text = body.decode("utf-8", "replace")
            uri = rec.rec_headers.get_header("WARC-Target-URI")
            p = P(convert_charrefs=True)
            p.feed(text)
            base = urljoin(uri, p.base) if p.base else uri
            for src, dsrc, srcset, alt, title in p.imgs:
                url, _ = resolve_url(image_src(src, dsrc, srcset), base)
                t = clean_text(alt, 1000, False) or clean_text(title, 1000, False)
                if url and t:
                    make_uid(url, t)
                    pairs += 1
    return {"pairs": pairs, "records": records}


IMPLS = {
    "ours_wat": lambda p: run_ours(p, "wat"),
    "cc2dataset_wat": run_cc2dataset,
    "ours_warc": lambda p: run_ours(p, "warc"),
    "ours_warc_html.parser": lambda p: run_ours(p, "warc", "html.parser"),
    "warcio_html.parser_warc": run_warcio_baseline,
}


def _worker(impl: str, path: str) -> None:
    """Run one implementation in this (fresh) process; print seconds, counts and peak RSS as JSON."""
    # import everything first: the timings are for the extraction, not for module loading
    if impl == "cc2dataset_wat":
        import cc2dataset.main  # noqa: F401
    import fastwarc.warc  # noqa: F401
    import orjson  # noqa: F401
    import pyarrow as pa
    import resiliparse.parse.encoding  # noqa: F401
    import selectolax.lexbor  # noqa: F401
    import warcio.archiveiterator  # noqa: F401

    import pipeline.extract  # noqa: F401
    import schemas  # noqa: F401

    pa.array(["warm-up"], pa.string())  # pyarrow's first string conversion costs ~0.2 s once per process
    t0 = time.perf_counter()
    c0 = time.process_time()
    out = IMPLS[impl](path)
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    # VmHWM: this process's own peak RSS (ru_maxrss would include the parent's, inherited over exec)
    hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:")]
    out["peak_rss_mb"] = int(hwm[0].split()[1]) / 1024 if hwm else None
    print(json.dumps(out))


def measure(impl: str, path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", impl, str(path)],
                       capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{impl} failed: {r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["file_mb"] = round(path.stat().st_size / 1e6, 1)
    return out


def main(quick: bool = False) -> dict:
    import shutil
    import tempfile

    from pipeline.sample_web import generate_sample_web

    work = Path(tempfile.mkdtemp(prefix="wit_bench_extract_"))
    sample = work / "sample"
    generate_sample_web(str(sample), n_pairs=3000, seed=0)
    n_pages = json.loads((sample / "sample.json").read_text())["pages"]
    big = max(1, (6_000 if quick else 100_000) // n_pages + 1)
    sizes = {"small": max(1, big // 5), "large": big}
    cases: dict[str, dict] = {}  # case → {size label: (file, pages)}
    for label, copies in sizes.items():
        for kind, name in (("sample_wat", "crawl.warc.wat.gz"), ("sample_warc", "crawl.warc.gz")):
            dst = work / f"{label}.{name}"
            make_big(sample / name, dst, copies)
            cases.setdefault(kind, {})[label] = (dst, copies * n_pages)
        cc = work / f"{label}.cc.warc.wat.gz"
        per_copy = make_cc_shaped_wat(cc, copies * 10)
        if per_copy:
            cases.setdefault("cc_wat", {})[label] = (cc, None)
    import importlib.util

    peer_wat = ["cc2dataset_wat"] if importlib.util.find_spec("cc2dataset") else []
    if not peer_wat:
        print("cc2dataset is not installed: the WAT runs have no peer (pip install cc2dataset)", flush=True)
    impls_of = {"sample_wat": ["ours_wat", *peer_wat], "cc_wat": ["ours_wat", *peer_wat],
                "sample_warc": ["ours_warc", "ours_warc_html.parser", "warcio_html.parser_warc"]}
    runs: dict = {}
    for case, by_size in cases.items():
        for label, (path, pages) in by_size.items():
            for impl in impls_of[case]:
                if label == "small" and impl == "ours_warc_html.parser":
                    continue
                r = measure(impl, path)
                r["pairs_per_s"] = r["pairs"] / r["cpu_seconds"]
                if pages:
                    r["pages"] = pages
                    r["pages_per_s"] = pages / r["cpu_seconds"]
                if "records" in r:
                    r["records_per_s"] = r["records"] / r["cpu_seconds"]
                runs[f"{case}/{label}/{impl}"] = r
                print(f"{case:11s} {label:5s} {impl:24s} {r['file_mb']:7.1f} MB {r['pairs']:8d} pairs "
                      f"{r['cpu_seconds']:7.2f} s CPU {r['pairs_per_s']:9,.0f} pairs/s "
                      f"{r.get('records_per_s', 0):9,.0f} rec/s  peak RSS {r['peak_rss_mb']:5.0f} MB", flush=True)

    def per_file_rate(run: str) -> float:  # files of the same size per CPU-second (same input, any output)
        return 1.0 / runs[run]["cpu_seconds"]

    ratios = {
        "sample_warc_ours_vs_warcio_html.parser": per_file_rate("sample_warc/large/ours_warc")
        / per_file_rate("sample_warc/large/warcio_html.parser_warc"),
        "sample_warc_selectolax_vs_html.parser_same_reader": per_file_rate("sample_warc/large/ours_warc")
        / per_file_rate("sample_warc/large/ours_warc_html.parser"),
    }
    if peer_wat:
        ratios["sample_wat_ours_vs_cc2dataset"] = (per_file_rate("sample_wat/large/ours_wat")
                                                   / per_file_rate("sample_wat/large/cc2dataset_wat"))
        if "cc_wat" in cases:
            ratios["cc_wat_ours_vs_cc2dataset"] = per_file_rate("cc_wat/large/ours_wat") / per_file_rate("cc_wat/large/cc2dataset_wat")
    peak = {}
    for key, r in runs.items():
        case, label, impl = key.split("/")
        peak.setdefault(f"{case}/{impl}", {})[f"{label} ({r['file_mb']} MB)"] = round(r["peak_rss_mb"], 1)
    results = {
        "runs": runs, "ratios": ratios, "peak_rss_mb": peak, "quick": quick,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores_used": 1, "python": platform.python_version()},
        "note": "one single-threaded process per run (modules imported and warmed up first), CPU seconds: rates are "
                "per core. Ratios compare the time to "
                "process the same file. cc2dataset keeps only pairs with a non-empty alt (no title fallback, no "
                "clean-up, no Arrow output). sample_* = `wit sample` crawl replicated (one host per copy); cc_wat = "
                "real CC WAT records (2014 + 2019) replicated.",
    }
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    print("peak RSS MB:", json.dumps(peak))
    out = ROOT / "bench/results/extract.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3])
    else:
        main(quick="--quick" in sys.argv)
