"""`wit sample` (generate the sample web) and `wit serve` (serve it with its faults)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.errors import UserError
from pipeline.registry import flag


def register(sub, common) -> None:
    p = sub.add_parser(
        "sample", parents=[common], help="generate the built-in sample web (images, pages, WARC/WAT, ground truth)",
        description="Generate a deterministic sample web under OUT (default <output_dir>/sample): site/ "
        "(images + HTML pages + faults.json, served by `wit serve`), crawl.warc.gz and crawl.warc.wat.gz "
        "(Common Crawl style), ground_truth.parquet (one row per <img>), eval/ (zero-shot split labelled "
        "by shape), eval_background/ (labelled by background colour) and sample.json. Same seed -> same bytes.",
    )
    p.add_argument("out", nargs="?", default=None, help="output folder (default <output_dir>/sample)")
    p.add_argument("--out", dest="out_opt", metavar="DIR", help="same as OUT")
    flag(p, "--n-pairs", key="sample.n_pairs", type=int, metavar="N", help="image/text pairs (config sample.n_pairs)")
    flag(p, "--seed", key="sample.seed", type=int, metavar="S", help="random seed (config sample.seed)")
    flag(p, "--base-url", key="sample.base_url", metavar="URL",
         help="URL the pages and images live at, i.e. where `wit serve` will listen (config sample.base_url)")
    p.add_argument("--overwrite", action="store_true", help="regenerate even if a complete sample with the same args exists")
    p.set_defaults(func=_cli_sample)

    s = sub.add_parser(
        "serve", parents=[common], help="serve a sample web on 127.0.0.1 (with its faults) until Ctrl-C",
        description="Serve FOLDER/site (default <output_dir>/sample) over HTTP, threaded, with the faults "
        "listed in site/faults.json (404, 500 once, slow, truncated, redirects, noai, bomb, huge body …).",
    )
    s.add_argument("folder", nargs="?", default=None, help="sample folder (default <output_dir>/sample)")
    flag(s, "--port", key="serve.port", type=int, metavar="P", help="port (config serve.port; 0 = any free port)")
    flag(s, "--host", key="serve.host", metavar="H", help="interface (config serve.host)")
    s.set_defaults(func=_cli_serve)


def _cli_sample(args: argparse.Namespace, cfg: RunConfig) -> int:
    from pipeline.sample_web import generate_sample_web
    from pipeline.sample_web.generate import sample_is_complete

    out = args.out_opt or args.out or cfg.path("sample")
    want = {"n_pairs": cfg.sample.n_pairs, "seed": cfg.sample.seed, "base_url": cfg.sample.base_url.rstrip("/")}
    if not args.overwrite and sample_is_complete(out, **want):
        print(f"sample web already complete at {out} (use --overwrite to regenerate)")
        return 0
    s = generate_sample_web(out, **want)
    print(f"sample web: {s['pairs']} pairs, {s['pages']} pages, {s['images']} images, "
          f"{s['faulty_urls']} faulty URLs in {s['seconds']}s")
    print(f"  WARC: {out}/crawl.warc.gz   WAT: {out}/crawl.warc.wat.gz")
    print(f"  ground truth: {out}/ground_truth.parquet   labelled splits: {out}/eval/ (shape), {out}/eval_background/")
    print(f"  serve it with: wit serve {out} --port {_port_of(want['base_url'])}")
    return 0


def _port_of(url: str) -> int:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return u.port or (443 if u.scheme == "https" else 80)


def _cli_serve(args: argparse.Namespace, cfg: RunConfig) -> int:
    from pipeline.sample_web.server import SampleWebServer

    folder = Path(args.folder or cfg.path("sample"))
    if not folder.is_dir():
        raise UserError(f"sample folder not found: {folder} (run `wit sample` first)")
    srv = SampleWebServer(folder, host=cfg.serve.host, port=cfg.serve.port)
    meta = folder / "sample.json"
    if meta.exists():
        base = json.loads(meta.read_text()).get("args", {}).get("base_url")
        if base and base != srv.url:
            print(f"note: the pages link to {base}, but this server is {srv.url}")
    print(f"serving {srv.site_dir} at {srv.url}  ({len(srv.faults)} faulty URLs; Ctrl-C stops)", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    return 0
