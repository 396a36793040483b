"""`wit report`: one self-contained HTML page of a run (plots as embedded PNGs, no network).

It reads what the stages left under ``output_dir`` (_stats.json files, Parquet outputs, shard
metadata, training metrics) and shows: the funnel with drops per reason, the caption-language
histogram, query matches per entry before/after balancing, the CLIP-score histogram with its cut,
image sizes, a grid of kept and rejected samples, training curves and evaluation results, and the
run's config and library versions. Sections whose stage has not run say so instead of failing.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from pipeline import inputs, log, storage
from pipeline.config import RunConfig, dump_config, join_path
from pipeline.shards import iter_tar
from pipeline.stage import StageContext, stage
from pipeline.stats import read_stats

# The funnel, in data-flow order: (stage label, folder under output_dir).
FUNNEL = [
    ("extract", "candidates"),
    ("filter", "filtered"),
    ("match", "matched"),
    ("balance", "balanced"),
    ("download", "shards"),
    ("score", "scores"),
    ("select", "final"),
]
VERSIONED = ["pyspark", "pyarrow", "img2dataset", "open_clip_torch", "torch", "webdataset", "fastwarc", "pyahocorasick"]


def _read_parquet_columns(path: str, columns: list[str]):
    """Read some columns of a Parquet dataset (file or folder) with pyarrow, or None if absent."""
    import pyarrow.dataset as ds

    if not storage.exists(path):
        return None
    damaged = inputs.check_parquet_inputs(f for f in inputs.parquet_files(path) if "/dropped" not in f)
    if damaged:  # named in the page by render_report, not skipped silently
        raise inputs.InputFileError(*damaged[0], "report input")
    fs, p = storage.fs_for(path)
    try:
        dataset = ds.dataset(p, filesystem=fs, format="parquet", exclude_invalid_files=True,
                             ignore_prefixes=[".", "_", "dropped"])
        have = [c for c in columns if c in dataset.schema.names]
        return dataset.to_table(columns=have) if have else None
    except Exception as e:  # a damaged output must not stop the report
        log.warn(f"report: cannot read {path}: {e}")
        return None


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img class="plot" alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(w: float = 6.0, h: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h))


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _missing(what: str) -> str:
    return f'<p class="missing">{html.escape(what)} has not run (no output found).</p>'


CONSENT_REASONS = ("robots_disallowed", "robots_unavailable", "opted_out_robots_ai", "opted_out_tdmrep",
                   "opted_out_header", "opted_out_meta")


def consent_note(cfg: RunConfig) -> str:
    """The report's first lines on consent: a warning when the download or extraction ran with the sites'
    consent checks off, else how many URLs their owners' signals removed, by reason."""
    notes, dropped = [], {}
    dl = read_stats(cfg.path("shards"))
    if dl is not None and (dl.get("extra") or {}).get("consent") is False:
        notes.append("download ran with consent checks OFF (download.consent=false / --no-consent): robots.txt, "
                     "tdmrep.json, tdm-reservation and X-Robots-Tag were not honoured")
    ex = read_stats(cfg.path("candidates"))
    if ex is not None and not cfg.extract.honour_opt_outs:
        notes.append("extract ran with page opt-outs OFF (extract.honour_opt_outs=false)")
    for folder in ("candidates", "shards"):
        st = read_stats(cfg.path(folder)) or {}
        for k, v in (st.get("drops") or {}).items():
            if k in CONSENT_REASONS:
                dropped[k] = dropped.get(k, 0) + v
    warn = "".join(f'<p class="verdict missing">⚠ {html.escape(n)}</p>' for n in notes)
    counts = ", ".join(f"{k}: {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1]))
    return warn + (f'<p class="sub">consent: {html.escape(counts)}</p>' if counts else "")


def funnel_section(cfg: RunConfig) -> str:
    rows, labels, counts = [], [], []
    for label, folder in FUNNEL:
        st = read_stats(cfg.path(folder))
        if st is None:
            rows.append(f"<tr><td>{label}</td><td colspan=3 class=missing>not run</td></tr>")
            continue
        drops = st.get("drops") or {}
        drop_txt = ", ".join(f"{html.escape(k)}: {v:,}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1])) or "—"
        out = st.get("output_rows")
        rows.append(
            f"<tr><td>{label}</td><td class=num>{_fmt(st.get('input_rows'))}</td><td class=num>{_fmt(out)}</td>"
            f"<td>{drop_txt}</td></tr>"
        )
        if out is not None:
            labels.append(label)
            counts.append(out)
    table = ("<table class=funnel><tr><th>stage</th><th>rows in</th><th>rows out</th><th>dropped, by reason</th></tr>"
             + "".join(rows) + "</table>")
    plot = ""
    if counts:
        fig, ax = _figure(6.5, 0.45 * len(counts) + 1)
        ax.barh(labels[::-1], counts[::-1], color="#4c72b0")
        for i, c in enumerate(counts[::-1]):
            ax.text(c, i, f" {c:,}", va="center", fontsize=8)
        ax.set_xlabel("pairs")
        ax.set_title("pairs after each stage")
        plot = _png(fig)
    return _section("Funnel", plot + table, "funnel")


def _fmt(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else ("—" if v is None else html.escape(str(v)))


def language_section(cfg: RunConfig) -> str:
    """Languages as the filter stage counted them (a Spark aggregation in its stats), not re-read here."""
    from collections import Counter

    extra = (read_stats(cfg.path("filtered")) or {}).get("extra") or {}
    c = Counter({(k or "unknown"): v for k, v in (extra.get("detected_languages") or {}).items()})
    if not c:
        return _section("Caption languages", _missing("The language filter"), "languages")
    top = c.most_common(20)
    fig, ax = _figure()
    ax.bar([k for k, _ in top], [v for _, v in top], color="#55a868")
    ax.set_yscale("log")
    ax.set_ylabel("captions (log)")
    ax.set_title(f"detected caption language (kept: {', '.join(cfg.filter.languages)})")
    return _section("Caption languages", _png(fig), "languages")


def balance_section(cfg: RunConfig) -> str:
    """Per-entry counts before/after, from the balance stage's _entry_counts.parquet (one row per matched entry)."""
    t = _read_parquet_columns(join_path(cfg.path("balanced"), "_entry_counts.parquet"), ["count", "kept"])
    if t is None or t.num_rows == 0:
        return _section("Query matches before and after balancing", _missing("Balancing"), "balance")
    before = sorted((int(x) for x in t.column("count").to_pylist()), reverse=True)
    after = sorted((int(x) for x in t.column("kept").to_pylist() if x), reverse=True)
    fig, ax = _figure(6.5, 3.5)
    ax.plot(range(1, len(before) + 1), before, label=f"matched ({len(before):,} entries)", color="#c44e52")
    if after:
        ax.plot(range(1, len(after) + 1), after, label=f"balanced ({len(after):,} entries)", color="#4c72b0")
    threshold = (read_stats(cfg.path("balanced")) or {}).get("extra", {}).get("t", cfg.balance.t)
    ax.axhline(threshold, ls="--", color="gray", lw=1, label=f"t = {threshold:,}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("entry rank (head → tail)")
    ax.set_ylabel("texts matching the entry")
    ax.legend(fontsize=8)
    head = ", ".join(f"{c:,}" for c in before[:5])
    note = f"<p>Head of the distribution before balancing: {head} texts for the top entries.</p>"
    return _section("Query matches before and after balancing", _png(fig) + note, "balance")


def score_section(cfg: RunConfig) -> str:
    t = _read_parquet_columns(cfg.path("scores"), ["clip_score"])
    if t is None:
        return _section("CLIP scores", _missing("Scoring"), "scores")
    scores = [s for s in t.column("clip_score").to_pylist() if s is not None]
    if not scores:
        return _section("CLIP scores", "<p>No sample could be scored.</p>", "scores")
    extra = (read_stats(cfg.path("final")) or {}).get("extra", {})
    cut = extra.get("threshold") if extra.get("threshold") is not None else extra.get("cutoff")
    fig, ax = _figure()
    ax.hist(scores, bins=50, color="#8172b2")
    if isinstance(cut, (int, float)):
        rule = "valley" if (extra.get("valley") or {}).get("found") and extra.get("threshold") is None else "cut"
        ax.axvline(cut, color="#c44e52", ls="--", label=f"{rule} = {cut:.3f}")
        ax.legend(fontsize=8)
    ax.set_xlabel("CLIP score (cosine)")
    ax.set_ylabel("pairs")
    return _section("CLIP scores", _png(fig), "scores")


def fidelity_section(cfg: RunConfig) -> str:
    """Curation graded against the sample web's ground truth (pipeline/fidelity.py); absent on other inputs."""
    from pipeline.fidelity import measure

    title = "Curation fidelity (against ground truth)"
    m = measure(cfg)
    if m is None:
        return _section(title, "<p class=missing>No ground truth: this run is not over the sample web.</p>", "fidelity")
    rows = []
    for group, f in (m.get("filters") or {}).items():
        rows.append(f"<tr><td>{group} ({', '.join(f['filters'])})</td><td class=num>{_fmt(f['targets'])}</td>"
                    f"<td class=num>{_fmt(f['dropped'])}</td><td class=num>{_fmt(f['precision'])}</td>"
                    f"<td class=num>{_fmt(f['recall'])}</td></tr>")
    body = ("<table><tr><th>caption filter</th><th>rows it should drop</th><th>rows it dropped</th><th>precision</th>"
            "<th>recall</th></tr>" + "".join(rows) + "</table>") if rows else _missing("The caption filter")
    copies = m.get("copies")
    if copies:
        rows = [f"<tr><td>{reason}</td><td class=num>{_fmt(c['targets'])}</td><td class=num>{_fmt(c['dropped'])}</td>"
                f"<td class=num>{_fmt(c['precision'])}</td><td class=num>{_fmt(c['recall'])}</td></tr>"
                for reason, c in copies.items() if "targets" in c]
        # planted look-alikes (distinct pictures): how many the rule saw, and how many it wrongly dropped
        rows += [f"<tr><td>{reason.replace('_', ' ')} (distinct)</td><td class=num>0 of {_fmt(c['reached'])}</td>"
                 f"<td class=num>{_fmt(c['dropped'])}</td><td class=num>—</td><td class=num>—</td></tr>"
                 for reason, c in copies.items() if "targets" not in c]
        body += ("<table><tr><th>select rule</th><th>planted copies</th><th>rows it dropped</th><th>precision</th>"
                 "<th>recall</th></tr>" + "".join(rows) + "</table>")
    sc = m.get("clip_score")
    if sc:
        before = sc.get("mismatched_share_scored") or {}
        after = sc.get("mismatched_share_final") or {}
        body += (f"<p>CLIP score ROC AUC, true vs mismatched English captions: <b>{_fmt(sc.get('clip_score_auc'))}</b> "
                 f"({_fmt(sc.get('scored_pairs'))} pairs; mean score {_fmt(sc.get('mean_score_matching'))} matching vs "
                 f"{_fmt(sc.get('mean_score_mismatched'))} mismatched). Mismatched pairs: "
                 f"{_fmt(before.get('share'))} of {_fmt(before.get('pairs'))} scored, "
                 f"{_fmt(after.get('share'))} of {_fmt(after.get('pairs'))} selected.</p>")
    return _section(title, body, "fidelity")


def image_size_section(cfg: RunConfig) -> str:
    t = _read_parquet_columns(cfg.path("shards"), ["original_width", "original_height", "status"])
    if t is None or "original_width" not in t.column_names:
        return _section("Image sizes", _missing("Download"), "sizes")
    rows = [r for r in t.to_pylist() if r.get("original_width")]
    if not rows:
        return _section("Image sizes", "<p>No image was downloaded.</p>", "sizes")
    fig, ax = _figure()
    ax.hist([min(r["original_width"], r["original_height"]) for r in rows], bins=40, color="#dd8452")
    ax.set_xlabel("shorter side of the original image (px)")
    ax.set_ylabel("images")
    return _section("Image sizes", _png(fig), "sizes")


def _tar_members(shard_dir: str, keys: set[str], limit_bytes: int = 400_000) -> dict[str, dict[str, bytes]]:
    """Read the image and caption of the wanted keys from the shards (small images only).

    Uses the shards' own tar reader, so a cut or damaged shard gives a warning and the samples before
    the damage, not a failed report."""
    fs, p = storage.fs_for(shard_dir)
    found: dict[str, dict[str, bytes]] = {}
    for tar_path in sorted(fs.glob(f"{p.rstrip('/')}/*.tar")):
        with fs.open(tar_path, "rb") as f:
            for _, key, sample in iter_tar(f):
                if key in keys:
                    found[key] = {ext: data for ext, data in sample.items() if len(data) <= limit_bytes}
        if len(found) >= len(keys):
            break
    return found


def _first_shards_metadata(shard_dir: str, columns: list[str], n_shards: int = 2):
    """Metadata rows of the first shards only: a grid needs dozens of samples, not the whole pool."""
    import pyarrow.parquet as pq

    if not storage.exists(shard_dir):
        return None
    fs, p = storage.fs_for(shard_dir)
    files = sorted(fs.glob(f"{p.rstrip('/')}/[0-9]*.parquet"))[:n_shards]
    if damaged := inputs.check_parquet_inputs(files):
        raise inputs.InputFileError(*damaged[0], "report input")
    return pq.read_table(files, filesystem=fs, columns=columns) if files else None


def grid_section(cfg: RunConfig) -> str:
    n = cfg.report.sample_grid
    meta = _first_shards_metadata(cfg.path("shards"), ["key", "uid", "text", "status"])
    if meta is None or n == 0:
        return _section("Samples", _missing("Download"), "grid")
    scores = _read_parquet_columns(cfg.path("scores"), ["uid", "clip_score"])
    score_of = {} if scores is None else dict(zip(scores.column("uid").to_pylist(), scores.column("clip_score").to_pylist()))
    final = _read_parquet_columns(join_path(cfg.path("final"), "manifest.parquet"), ["uid"])
    kept = set() if final is None else set(final.column("uid").to_pylist())
    ok = [r for r in meta.to_pylist() if r["status"] == "success"]
    ok.sort(key=lambda r: r["uid"])
    kept_rows = [r for r in ok if r["uid"] in kept][: n // 2]
    rejected_rows = [r for r in ok if r["uid"] not in kept][: n - len(kept_rows)]
    chosen = kept_rows + rejected_rows
    members = _tar_members(cfg.path("shards"), {r["key"] for r in chosen})  # scans only until all are found
    cards = []
    for r in chosen:
        files = members.get(r["key"], {})
        ext = next((e for e in ("jpg", "webp", "png") if e in files), None)
        if ext is None:
            continue
        mime = {"jpg": "jpeg"}.get(ext, ext)
        src = f"data:image/{mime};base64,{base64.b64encode(files[ext]).decode()}"
        s = score_of.get(r["uid"])
        verdict = "kept" if r["uid"] in kept else "rejected"
        cards.append(
            f'<figure class="card {verdict}"><img src="{src}" alt="sample"><figcaption>'
            f'<b>{verdict}</b>{"" if s is None else f" · score {s:.3f}"}<br>{html.escape(r["text"][:160])}'
            "</figcaption></figure>"
        )
    if not cards:
        return _section("Samples", "<p>No sample images found in the shards.</p>", "grid")
    return _section("Samples (kept and rejected)", f'<div class="grid">{"".join(cards)}</div>', "grid")


def training_section(cfg: RunConfig) -> str:
    """Training curves and evaluation results of every model trained under train/ (one per subfolder or one)."""
    runs = _find_training_runs(cfg.path("train"))
    if not runs:
        return _section("Training and evaluation", _missing("Training"), "training")
    fig, ax = _figure()
    rows = []
    for name, folder in runs:
        steps, losses = [], []
        mpath = join_path(folder, "metrics.jsonl")
        if storage.exists(mpath):
            fs, p = storage.fs_for(mpath)
            with fs.open(p, "r") as f:
                for line in f:
                    try:
                        m = json.loads(line)
                    except ValueError:
                        continue
                    if "loss" in m and "step" in m:
                        steps.append(m["step"])
                        losses.append(m["loss"])
        if steps:
            ax.plot(steps, losses, label=name)
        spath = join_path(folder, "summary.json")
        summary = storage.read_json(spath) if storage.exists(spath) else {}
        ev = summary.get("eval") or {}
        zs, ret = ev.get("zeroshot") or {}, ev.get("retrieval") or {}
        cells = [_num(zs, "top1"), _num(zs, "top5"), _num(ret, "image_to_text_R@1"), _num(ret, "text_to_image_R@1"),
                 _num(zs, "chance_top1"), _fmt(summary.get("steps"))]
        splits = [f"{html.escape(split)}: {_num(z, 'top1')} (chance {_num(z, 'chance_top1')})"
                  for split, z in (ev.get("zeroshot_splits") or {}).items()]
        rows.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td class=num>{c}</td>" for c in cells)
                    + f"<td>{'<br>'.join(splits) or '—'}</td></tr>")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.legend(fontsize=8)
    table = ("<table><tr><th>model</th><th>zero-shot top-1</th><th>zero-shot top-5</th>"
             "<th>image→text R@1</th><th>text→image R@1</th><th>chance top-1</th><th>steps</th>"
             "<th>zero-shot top-1 per labelled split</th></tr>" + "".join(rows) + "</table>")
    comparison = ""
    cmp_path = join_path(cfg.path("train"), "curation.json")
    if storage.exists(cmp_path):
        c = storage.read_json(cmp_path)
        comparison = f'<p class="verdict">{html.escape(c.get("verdict", ""))}</p>'
    return _section("Training and evaluation", _png(fig) + table + comparison, "training")


def _num(d: dict, key: str) -> str:
    v = d.get(key)
    return f"{v:.3f}" if isinstance(v, (int, float)) else "—"


def _find_training_runs(train_dir: str) -> list[tuple[str, str]]:
    if not storage.exists(train_dir):
        return []
    fs, p = storage.fs_for(train_dir)
    runs = []
    if fs.exists(f"{p}/metrics.jsonl") or fs.exists(f"{p}/summary.json"):
        runs.append(("model", train_dir))
    for entry in sorted(fs.ls(p, detail=True), key=lambda e: e["name"]):
        if entry["type"] == "directory":
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if fs.exists(f"{entry['name']}/metrics.jsonl") or fs.exists(f"{entry['name']}/summary.json"):
                runs.append((name, join_path(train_dir, name)))
    return runs


def config_section(cfg: RunConfig) -> str:
    versions = []
    for pkg in VERSIONED:
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return _section(
        "Run config and versions",
        f"<p>{html.escape(' · '.join(versions))}</p><pre>{html.escape(dump_config(cfg))}</pre>",
        "config",
    )


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0} section{margin:2rem 0;border-top:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem} td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums} .missing{color:#999;font-style:italic}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:.8rem}
.card{margin:0;border:2px solid #ccc;border-radius:6px;padding:.3rem;font-size:.75rem}
.card.kept{border-color:#55a868}.card.rejected{border-color:#c44e52} .card img{width:100%;height:auto}
img.plot{max-width:100%} pre{background:#f6f6f6;padding:1rem;overflow:auto;font-size:.8rem} .verdict{font-weight:bold}
nav a{margin-right:1rem}
"""


def render_report(cfg: RunConfig, failed: list[str] | None = None) -> str:
    """The whole page as one HTML string; ``failed`` collects the sections that could not be drawn and why."""
    sections = [funnel_section, fidelity_section, language_section, balance_section, score_section, image_size_section,
                grid_section, training_section, config_section]
    body = []
    for make in sections:
        try:
            body.append(make(cfg))
        except Exception as e:  # one broken section must not lose the rest of the report
            log.warn(f"report: section {make.__name__} failed: {e}")
            if failed is not None:
                failed.append(f"{make.__name__}: {e}")
            body.append(_section(make.__name__.replace("_section", ""), f"<p class=missing>could not render: {html.escape(str(e))}</p>",
                                 make.__name__))
    nav = " ".join(f'<a href="#{a}">{a}</a>' for a in ["funnel", "fidelity", "languages", "balance", "scores", "sizes", "grid", "training", "config"])
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        consent = consent_note(cfg)
    except Exception as e:  # as a section: never lose the report over it
        consent = f"<p class=missing>consent: could not read: {html.escape(str(e))}</p>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>WIT builder report</title>"
        f"<style>{STYLE}</style></head><body><h1>WIT builder report</h1>"
        f'<p class="sub">{html.escape(cfg.output_dir)} · {now}</p>{consent}<nav>{nav}</nav>{"".join(body)}</body></html>'
    )


@stage("report", order=120, input=None, output=None, writes="view",
       spark=False, show=lambda d: d["path"], help="write a self-contained HTML report of a run",
       description="Read every stage's outputs under --output-dir and write report.html: the funnel, languages, "
       "query balance, CLIP scores, image sizes, sample grid, training and config.",
       input_help="the run folder to report on (default: --output-dir)",
       output_help="where to write the page (default <output_dir>/report.html)")
def run_report(ctx: StageContext) -> dict:
    """Write the report of the run under ``input`` (default output_dir) to ``output`` (default
    ``<output_dir>/report.html``), atomically; return where it is. Rewritten on every call: it is a view."""
    cfg = ctx.cfg
    if ctx.input:
        cfg = cfg.model_copy(update={"output_dir": ctx.input.rstrip("/")})
    out = ctx.output or join_path(cfg.output_dir, "report.html")
    failed: list[str] = []
    page = render_report(cfg, failed)
    with storage.atomic_path(out) as tmp:
        fs, p = storage.fs_for(tmp)
        with fs.open(p, "w") as f:
            f.write(page)
    log.info(f"report: {out} ({len(page) / 1e6:.1f} MB)")
    return {"stage": "report", "path": out, "bytes": len(page), "sections_failed": failed}
