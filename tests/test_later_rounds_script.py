"""benchmarks/later_rounds.py: what each later round of --scan-rounds did, from the run's cell file."""
from __future__ import annotations

import json

from conftest import load_benchmark

later_rounds = load_benchmark("later_rounds")


def _row(defense: str, asr: float, change: float) -> dict:
    return {"dataset": "olid", "attack": "ep", "defense": defense, "status": "ok", "victim_key": "v1",
            "code_version": "c1", "asr": asr, "cacc": 80.0, "cacc_change": change, "floor_asr": 35.4,
            "victim_asr": 100.0, "untriggered_asr": 30.8, "defense_seconds": 900.0}


def test_each_later_round_is_named_with_its_evidence_path_and_epoch(tmp_path, capsys):
    run, cells = tmp_path / "run", tmp_path / "work" / "cells" / "olid" / "ep" / "v1"
    run.mkdir()
    cells.mkdir(parents=True)
    rounds = _row("bedkd", 1.7, -0.93)
    setup = {"attacks": ["ep"], "seed": 0, "attack": {"target": 0, "triggers": ["qz"], "style": None}}
    (run / "results.json").write_text(json.dumps({"meta": {"command": "bedkd bench", "setup": setup},
                                                  "rows": [_row("bedkd-guarded", 40.0, 1.51), rounds]}))
    later = [{"unchanged": False, "verdict": {"target": 0, "reasons": ["label check: excess 96 rows"]},
              "data": {"relabelled_rows": 154}, "selected_epoch": 2, "stop_reason": "patience",
              "start": {"val_acc_weighted": 0.791}, "epochs": [{"val_acc_weighted": 0.775}], "seconds": {"total": 405.0}},
             {"unchanged": True, "stop_reason": "no backdoor evidence", "seconds": {"total": 60.0}}]
    (cells / "bedkd.k.json").write_text(json.dumps({"row": rounds, "details": {"report": {"later_rounds": later}}}))
    out = tmp_path / "rounds.md"
    assert later_rounds.main([str(run), "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "**olid ep `qz` t0 s0**" in text and "`guarded` 40.0 (+1.51) ✗" in text and "rounds 1.7 (-0.93)" in text
    assert ("round 2: evidence for label 0 (label check: excess 96 rows); no trigger found, 154 rows relabelled; "
            "epoch 2 kept (patience); class-weighted held-out accuracy, start then each epoch: 0.791 / 0.775; "
            "405.0 s") in text
    assert "round 3: no backdoor evidence (60.0 s)" in text
