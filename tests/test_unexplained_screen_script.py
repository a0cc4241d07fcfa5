"""benchmarks/unexplained_screen.py: a run whose verdict has no label with both a found trigger and the
label check's first-test evidence is screened from its cell report alone; one without a report is skipped."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import unexplained_screen  # noqa: E402

THRESHOLDS = {"label_check_evidence": 2.0, "min_excess": 10.0}


def _evidence(label, log10_p, excess):
    return {"label": label, "suspect_rows": 100, "suspect_flagged": 40, "clean_rows": 50, "clean_flagged": 10,
            "excess": excess, "log10_p": log10_p}


def _verdict(hits, evidence, check_targets):
    return {"thresholds": THRESHOLDS, "dmm_targets": [], "check_targets": check_targets,
            "trigger_search": {"hits": [{"words": w, "phrase": False, "target": t, "flip_rate": 0.9, "rows": 5}
                                        for w, t in hits]},
            "label_check": {"evidence": evidence}}


def test_candidates_are_a_found_triggers_label_with_first_test_evidence():
    ev = [_evidence(0, 0.1, -5.0), _evidence(1, 9.0, 500.0)]
    assert unexplained_screen.candidate_labels(_verdict([(["cf"], 1)], ev, [1])) == [1]
    assert unexplained_screen.candidate_labels(_verdict([(["cf"], 0)], ev, [1])) == []        # trigger elsewhere
    assert unexplained_screen.candidate_labels(_verdict([], ev, [1])) == []                   # no trigger
    weak = [_evidence(0, 0.1, -5.0), _evidence(1, 9.0, 5.0)]                                  # excess under the line
    assert unexplained_screen.candidate_labels(_verdict([(["cf"], 1)], weak, [1])) == []


def test_the_script_screens_without_rebuilding_where_it_cannot_act_and_skips_runs_without_a_cell(tmp_path):
    row = {"dataset": "sst2", "attack": "badnets", "victim_key": "k1", "defense": "bedkd-guarded", "train_rows": 3000,
           "victim_asr": 100.0, "floor_asr": 10.0, "asr": 3.0, "cacc_change": 0.5}
    missing = {**row, "victim_key": "k2"}
    results = tmp_path / "run" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps({"meta": {"command": "bedkd bench --datasets sst2"},
                                   "rows": [row, missing, {**row, "defense": "none"}]}))
    cell = tmp_path / "w" / "cells" / "sst2" / "badnets" / "k1" / "bedkd-guarded.json"
    cell.parent.mkdir(parents=True)
    verdict = _verdict([(["cf"], 1)], [_evidence(0, 0.1, -5.0), _evidence(1, 1.0, 20.0)], [])
    cell.write_text(json.dumps({"row": row, "details": {"report": {"verdict": verdict}}}))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "unexplained_screen.py"), "--results", str(results),
                          "--workdir", str(tmp_path / "w"), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "k2" not in (out / "results.md").read_text() and "no cell report, skipped" in run.stderr
    [screened] = json.loads((out / "results.json").read_text())["rows"]
    assert screened["victim_key"] == "k1" and screened["acts"] is False and screened["labels"] == []
    assert "no (no such label)" in (out / "results.md").read_text()


def test_a_run_that_recorded_its_rest_test_is_read_as_it_is_without_rebuilding():
    row = {"dataset": "agnews", "attack": "stylebkd", "victim_key": "k1", "defense": "bedkd", "train_rows": 6000,
           "victim_asr": 70.0, "floor_asr": 2.0, "asr": 1.5, "cacc_change": 0.4}
    verdict = _verdict([(["hath"], 1)], [_evidence(0, 0.1, -5.0), _evidence(1, 9.0, 500.0)], [1])
    verdict["rest_tests"] = [{"label": 1, "held": 48, "acts": True, "rest": {**_evidence(1, 8.6, 467.0),
                                                                             "suspect_rows": 2102}}]
    screened = unexplained_screen.screen_row(None, row, {"details": {"report": {"verdict": verdict}}}, "unused")
    [label] = screened["per_label"]
    assert screened["acts"] is True and screened["recorded"] is True
    assert (label["held"], label["rest_rows"], label["rest_excess"], label["excess"]) == (48, 2102, 467.0, 500.0)
    verdict["rest_tests"][0]["acts"] = False
    assert unexplained_screen.screen_row(None, row, {"details": {"report": {"verdict": verdict}}}, "")["acts"] is False
