"""fidelity.copy_fidelity grades select's near_duplicate and eval_overlap against the sample web's
ground truth, look-alikes included (real Parquet files, graded as the report and the demo do)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import load_config
from pipeline.fidelity import copy_fidelity, headline
from pipeline.ids import make_uid


def _gt(pair_id, near=None, eval_of=None, look=None, eval_look=None):
    return {"pair_id": pair_id, "url": f"http://h/{pair_id}.jpg", "text": f"t{pair_id}", "lang": "en", "junk_kind": None,
            "matches_image": True, "fault": None, "near_dup_of": near, "eval_copy_of": eval_of,
            "look_alike_of": look, "eval_look_alike_of": eval_look}


def test_look_alikes_wrongly_dropped_are_counted_per_rule(tmp_path):
    rows = [_gt(0), _gt(1, near=0), _gt(2, near=0), _gt(3, look=0), _gt(4, look=0), _gt(5, eval_of="eval/a/0.jpg"),
            _gt(6, eval_look="eval/a/1.jpg"), _gt(7, eval_look="eval/a/2.jpg")]
    (tmp_path / "sample").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "sample" / "ground_truth.parquet")
    uid = {r["pair_id"]: make_uid(r["url"], r["text"]) for r in rows}
    # Kept: the original, one look-alike of it, one eval look-alike. Dropped: both copies (right), a
    # look-alike as near_duplicate (wrong), the eval copy (right), an eval look-alike (wrong).
    (tmp_path / "final").mkdir()
    pq.write_table(pa.table({"uid": [uid[0], uid[3], uid[6]]}), tmp_path / "final" / "manifest.parquet")
    dropped = [(1, "near_duplicate"), (2, "near_duplicate"), (4, "near_duplicate"), (5, "eval_overlap"), (7, "eval_overlap")]
    pq.write_table(pa.table({"uid": [uid[i] for i, _ in dropped], "drop_reason": [r for _, r in dropped]}),
                   tmp_path / "final" / "dropped.parquet")
    cfg = load_config(overrides={"output_dir": str(tmp_path)})
    out = copy_fidelity(cfg, {uid[r["pair_id"]]: r for r in rows})
    assert out["near_duplicate_look_alikes"] == {"reached": 2, "dropped": 1}
    assert out["eval_overlap_look_alikes"] == {"reached": 2, "dropped": 1}
    assert out["near_duplicate"]["precision"] == 0.6667 and out["near_duplicate"]["recall"] == 1.0
    assert out["eval_overlap"]["precision"] == 0.5 and out["eval_overlap"]["recall"] == 1.0
    stats = {"extra": {"near_dup": {"copy_confirm": True, "copy_max_residual": 12.0, "copy_max_peak": 45.0, "distance": 12}}}
    line = headline({"copies": out}, stats)
    assert "1 of 2 planted look-alikes wrongly dropped" in line and "residual ≤ 12.0, peak ≤ 45.0" in line
