"""How right the curation is, measured against the sample web's ground truth.

The sample web knows, for every ``<img>``, the caption's language, its junk kind and whether it describes
its image (``sample/ground_truth.parquet``). A run over the sample can therefore be graded, not just
counted: precision and recall of each caption filter on the rows it was meant to drop, how well the CLIP
score separates true captions from mismatched ones (ROC AUC), and the share of mismatched pairs before and
after selection. Rows are joined on ``uid = make_uid(url, text)``, the key every stage carries.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage
from pipeline.config import RunConfig, join_path
from pipeline.ids import make_uid

# What each caption filter is meant to drop, in ground-truth terms. Junk with HTML entities is a fine
# caption once unescaped, and duplicates are extract's and dedup's business, so neither is a target here.
TEXT_JUNK = ("filename", "click_here", "empty", "whitespace", "long", "url_as_text", "repeated_char", "single_word")
FILTER_GROUPS = {"text_rules": ("junk", "min_length", "max_length"), "language": ("language",)}


def ground_truth_path(cfg: RunConfig) -> str:
    return cfg.report.ground_truth or join_path(cfg.path("sample"), "ground_truth.parquet")


def _read(path: str, columns: list[str], optional: tuple[str, ...] = ()) -> pa.Table | None:
    """The columns of a Parquet file or dataset folder, with those of ``optional`` that it has, or
    None when it is absent or unreadable."""
    import pyarrow.dataset as ds

    if not storage.exists(path):
        return None
    fs, p = storage.fs_for(path)
    try:
        data = ds.dataset(p, filesystem=fs, format="parquet", exclude_invalid_files=True)
        return data.to_table(columns=columns + [c for c in optional if c in data.schema.names])
    except (OSError, ValueError, pa.ArrowInvalid):
        return None


def _truth(cfg: RunConfig) -> dict[str, dict[str, Any]] | None:
    """uid → the ground truth of its first <img> (a repeated pair has one uid and the same truth)."""
    columns = ["pair_id", "url", "text", "lang", "junk_kind", "matches_image", "fault", "near_dup_of", "eval_copy_of"]
    # Look-alikes and caption kinds exist in sample webs generated since they were planted; older ones are
    # graded without them.
    t = _read(ground_truth_path(cfg), columns, optional=("look_alike_of", "eval_look_alike_of", "caption_kind"))
    if t is None:
        return None
    truth: dict[str, dict[str, Any]] = {}
    for row in t.to_pylist():
        truth.setdefault(make_uid(row["url"], row["text"]), row)
    return truth


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance a random positive scores above a random negative (ties half)."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def filter_fidelity(cfg: RunConfig, truth: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Precision and recall of each caption filter group on the rows it is meant to drop."""
    kept = _read(cfg.path("filtered"), ["uid"])
    dropped = _read(cfg.path("dropped/filter"), ["uid", "drop_reason"])
    if kept is None or dropped is None:
        return None
    reason = dict.fromkeys(kept.column("uid").to_pylist())
    reason.update(zip(dropped.column("uid").to_pylist(), dropped.column("drop_reason").to_pylist()))
    wanted = set(cfg.filter.languages)
    targets = {
        "text_rules": lambda g: g["junk_kind"] in TEXT_JUNK,
        "language": lambda g: g["junk_kind"] is None and g["lang"] is not None and g["lang"] not in wanted,
    }
    out: dict[str, Any] = {}
    for group, reasons in FILTER_GROUPS.items():
        is_target = targets[group]
        seen = [(reason[u], is_target(g)) for u, g in truth.items() if u in reason]
        caught = sum(1 for r, t in seen if r in reasons and t)
        flagged = sum(1 for r, _ in seen if r in reasons)
        by_other = sum(1 for r, t in seen if t and r is not None and r not in reasons)
        targets_n = sum(1 for _, t in seen if t)
        reached = targets_n - by_other  # targets an earlier filter did not already drop
        out[group] = {
            "filters": list(reasons), "targets": targets_n, "dropped": flagged, "caught": caught,
            "dropped_by_other_filters": by_other, "missed": reached - caught,
            "precision": round(caught / flagged, 4) if flagged else None,
            "recall": round(caught / reached, 4) if reached else None,
        }
    return out


def score_fidelity(cfg: RunConfig, truth: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """ROC AUC of the CLIP score for true vs mismatched English captions, and the mismatched share before
    and after selection (among the pairs the ground truth knows)."""
    scores = _read(cfg.path("scores"), ["uid", "clip_score"])
    if scores is None:
        return None
    scores = scores.filter(pc.is_valid(scores.column("clip_score")))
    uids, vals = scores.column("uid").to_pylist(), scores.column("clip_score").to_numpy(zero_copy_only=False)
    clean = [(v, truth[u]["matches_image"]) for u, v in zip(uids, vals)
             if u in truth and truth[u]["junk_kind"] is None and truth[u]["lang"] == "en" and np.isfinite(v)]
    result: dict[str, Any] = {"scored_pairs": len(clean)}
    if clean:
        s = np.array([v for v, _ in clean], dtype=np.float64)
        pos = np.array([m for _, m in clean], dtype=bool)
        result["clip_score_auc"] = None if (a := roc_auc(s, pos)) is None else round(a, 4)
        result["mean_score_matching"] = round(float(s[pos].mean()), 4) if pos.any() else None
        result["mean_score_mismatched"] = round(float(s[~pos].mean()), 4) if (~pos).any() else None
    known = [u for u in uids if u in truth]
    result["mismatched_share_scored"] = _mismatched_share(known, truth)
    final = _read(join_path(cfg.path("final"), "manifest.parquet"), ["uid"])
    if final is not None:
        result["mismatched_share_final"] = _mismatched_share(
            [u for u in final.column("uid").to_pylist() if u in truth], truth)
    return result


def copy_fidelity(cfg: RunConfig, truth: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Precision and recall of select's ``eval_overlap`` (planted copies of eval images) and
    ``near_duplicate`` (planted copies of earlier pictures: each cluster should lose all but one member)
    over the pairs that reached select. Rows another select rule dropped first are left out of recall."""
    final = _read(join_path(cfg.path("final"), "manifest.parquet"), ["uid"])
    dropped = _read(join_path(cfg.path("final"), "dropped.parquet"), ["uid", "drop_reason"])
    if final is None or dropped is None:
        return None
    reason = dict.fromkeys(final.column("uid").to_pylist())
    reason.update(zip(dropped.column("uid").to_pylist(), dropped.column("drop_reason").to_pylist()))
    seen = {u: r for u, r in reason.items() if u in truth}
    out: dict[str, Any] = {}
    # eval_overlap: every planted eval copy should go, nothing else.
    targets = {u for u in seen if truth[u]["eval_copy_of"]}
    flagged = {u for u, r in seen.items() if r == "eval_overlap"}
    reached = {u for u in targets if seen[u] in (None, "eval_overlap")}
    out["eval_overlap"] = _precision_recall(len(targets), len(flagged), len(flagged & targets), len(reached))
    # near_duplicate: clusters = an original and its planted copies, as far as they reached the rule.
    cluster: dict[str, int] = {}
    for u in seen:
        g = truth[u]
        if g["near_dup_of"] is not None:
            cluster[u] = g["near_dup_of"]
    roots = set(cluster.values())
    for u in seen:
        if truth[u]["pair_id"] in roots and truth[u]["near_dup_of"] is None:
            cluster[u] = truth[u]["pair_id"]
    members: dict[int, int] = {}
    for u, c in cluster.items():
        if seen[u] in (None, "near_duplicate"):
            members[c] = members.get(c, 0) + 1
    should_drop = sum(n - 1 for n in members.values())
    flagged = {u for u, r in seen.items() if r == "near_duplicate"}
    caught = min(sum(1 for u in flagged if u in cluster), should_drop)
    out["near_duplicate"] = _precision_recall(
        sum(1 for u in cluster if truth[u]["near_dup_of"] is not None), len(flagged), caught, should_drop)
    # look-alikes (distinct pictures planted to resemble another): every one dropped as a copy is a mistake.
    for field, rule in (("look_alike_of", "near_duplicate"), ("eval_look_alike_of", "eval_overlap")):
        looks = [u for u in seen if truth[u].get(field) is not None and seen[u] in (None, rule)]
        out[f"{rule}_look_alikes"] = {"reached": len(looks), "dropped": sum(seen[u] == rule for u in looks)}
    return out


def _precision_recall(targets: int, flagged: int, caught: int, reached: int) -> dict[str, Any]:
    return {"targets": targets, "dropped": flagged, "caught": caught, "reached": reached,
            "precision": round(caught / flagged, 4) if flagged else None,
            "recall": round(caught / reached, 4) if reached else None}


def _mismatched_share(uids: list[str], truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    bad = sum(1 for u in uids if not truth[u]["matches_image"])
    kinds = Counter(truth[u].get("caption_kind") or "junk" for u in uids)  # matching / loose / unrelated (captions.py)
    return {"pairs": len(uids), "mismatched": bad, "share": round(bad / len(uids), 4) if uids else None,
            "caption_kinds": dict(sorted(kinds.items())) if "caption_kind" in next(iter(truth.values()), {}) else None}


def measure(cfg: RunConfig) -> dict[str, Any] | None:
    """Every fidelity figure a run over the sample web allows; None when the run has no ground truth."""
    truth = _truth(cfg)
    if truth is None:
        return None
    return {"ground_truth_pairs": len(truth), "filters": filter_fidelity(cfg, truth),
            "clip_score": score_fidelity(cfg, truth), "copies": copy_fidelity(cfg, truth)}


def headline(m: dict[str, Any] | None, select_stats: dict[str, Any] | None = None) -> str | None:
    """What curation measurably removed, in one paragraph: the demo leads with it, since on a CPU-sized run
    the two-model zero-shot comparison sits within the evaluation's noise."""
    if not m:
        return None
    parts = []
    for group, label in (("text_rules", "junk captions"), ("language", "captions in other languages")):
        f = (m.get("filters") or {}).get(group)
        if f and f["targets"]:
            parts.append(f"{f['caught']} of {f['targets']} {label} dropped by {group} "
                         f"(precision {_pct(f['precision'])}, recall {_pct(f['recall'])})")
    sc = m.get("clip_score") or {}
    before, after = sc.get("mismatched_share_scored") or {}, sc.get("mismatched_share_final") or {}
    if before.get("pairs") and after.get("pairs"):
        kinds = ""
        if before.get("caption_kinds") and after.get("caption_kinds"):
            kinds = " (" + ", ".join(f"{k} {before['caption_kinds'].get(k, 0)} → {after['caption_kinds'].get(k, 0)}"
                                     for k in ("matching", "loose", "unrelated")) + ")"
        parts.append(f"mismatched captions {_pct(before['share'])} of downloaded pairs → {_pct(after['share'])} "
                     f"of selected{kinds} (CLIP score ROC AUC {sc.get('clip_score_auc')})")
    copies = m.get("copies") or {}
    drops = (select_stats or {}).get("drops") or {}
    for reason, label in (("near_duplicate", "near-duplicate images"), ("eval_overlap", "copies of eval images")):
        c = copies.get(reason)
        looks = copies.get(f"{reason}_look_alikes") or {}
        if c and c["dropped"]:
            parts.append(f"{c['dropped']} {label} dropped by {reason} "
                         f"(precision {_pct(c['precision'])}, recall {_pct(c['recall'])}; "
                         f"{looks.get('dropped', 0)} of {looks.get('reached', 0)} planted look-alikes wrongly dropped)")
        elif reason in drops:
            parts.append(f"{drops[reason]} {label} removed")
    nd = ((select_stats or {}).get("extra") or {}).get("near_dup") or {}
    if nd.get("copy_confirm"):
        peak = f"peak ≤ {nd['copy_max_peak']}"
        if "copy_peak_floor" in nd:  # stats written before the peak allowed grew with the residual lack them
            peak = f"peak ≤ min({nd['copy_max_peak']}, {nd['copy_peak_floor']} + {nd['copy_peak_per_residual']} × residual)"
        parts.append(f"copies confirmed at residual ≤ {nd['copy_max_residual']}, {peak} "
                     f"(pHash candidates within {nd['distance']} bits)")
    return ("Measured against the sample web's ground truth: " + "; ".join(parts) + ".") if parts else None


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"
