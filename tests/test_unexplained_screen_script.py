"""benchmarks/unexplained_screen.py: a run whose verdict has no label with both a found trigger and the
label check's first-test evidence is screened from its cell report alone; one without a report is skipped."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

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


class _Check:
    """A label check's first test on six label-1 rows and two label-0 rows (clean flag rate 1/10)."""
    def __init__(self, flagged, label1_log10_p=9.0):
        from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
        self.flagged = np.asarray(flagged, dtype=bool)
        self.clean_source_below, self.other = None, None
        self.evidence = [LabelEvidence(0, 2, 0, 50, 5, -0.2, 0.0),
                         LabelEvidence(1, 6, int(self.flagged[2:].sum()), 50, 5, 4.0, label1_log10_p)]


class _Rebuilt:
    def __init__(self, check):
        self.result = check

    def check(self, command, dataset, attack):
        from bedkd.data import LabeledTexts
        from bedkd.defenses.scanning.scan import ScanConfig
        texts = ["a b", "c d", "cf x", "cf y", "cf z", "p", "q", "r"]
        return LabeledTexts(texts, [0, 0, 1, 1, 1, 1, 1, 1]), self.result, ScanConfig(min_excess=1.0)


def test_a_table_row_without_a_cell_is_settled_only_where_the_rest_stays_under_the_held_rows():
    row = {"run": "s0-t1-badnets-0", "dataset": "sst2", "attack": "badnets", "defense": "bedkd-guarded",
           "victim_asr": 100.0, "floor_asr": 10.0, "asr": 3.0, "cacc_change": 0.5, "trigger_found": "cf",
           "target_found": 1}
    # three label-1 rows hold "cf"; the rest (three rows) has one flagged: excess 1 - 3/10 < 3 held
    held_more = unexplained_screen.row_screen(_Rebuilt(_Check([0, 0, 1, 1, 1, 1, 0, 0])), row, "")
    [label] = held_more["per_label"]
    assert (label["held"], label["rest_rows"], label["rest_flagged"]) == (3, 3, 1)
    assert held_more["settled"] is True and held_more["acts"] is False and held_more["from_row"] is True
    # the rest flagged throughout and the trigger in one row only: the rest's excess (2.5) reaches the held rows
    row_one = {**row, "trigger_found": "x"}
    open_ = unexplained_screen.row_screen(_Rebuilt(_Check([0, 0, 1, 0, 0, 1, 1, 1])), row_one, "")
    assert open_["settled"] is False and open_["acts"] is None
    # first-test evidence on a label the recorded trigger does not target: a hit not on record could
    other = unexplained_screen.row_screen(_Rebuilt(_Check([0, 0, 1, 1, 1, 1, 0, 0])), {**row, "target_found": 0}, "")
    assert other["other_labels"] == [1] and other["settled"] is False
    md = unexplained_screen.markdown([held_more, open_, other], {"command": "c", "date": "d", "code_version": "v",
                                                                 "machine": {"cpu_model": "m", "cpus_usable": 2,
                                                                             "torch": "t"}})
    assert "no (settled)" in md and "not settled" in md and "(2 not settled from their rows)" in md


def test_rows_to_screen_take_each_runs_command_and_leave_out_recorded_and_screened_runs(tmp_path):
    base = {"dataset": "olid", "attack": "ep", "defense": "bedkd-guarded", "victim_asr": 100.0, "asr": 4.0,
            "floor_asr": 8.0, "cacc_change": 0.5,
            "trigger_found": "qz", "target_found": 1, "unexplained_acts": None}
    rows = [{**base, "run": "a"}, {**base, "run": "b", "asr": 5.0}, {**base, "run": "c", "unexplained_acts": False},
            {**base, "run": "d", "trigger_found": None}, {**base, "run": "e", "defense": "none"},
            {**base, "run": "f", "asr": 6.0}]
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"meta": {"command": "report", "runs": [{"run": "a", "command": "bedkd bench a"},
                                                                        {"run": "b", "command": "bedkd bench b"}]},
                                 "rows": rows}))
    done = {unexplained_screen.run_digits({**base, "asr": 5.0})}
    picked = unexplained_screen.rows_to_screen(str(table), done)
    assert [(r["run"], c) for r, c in picked] == [("a", "bedkd bench a")]      # f's command is not on record
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"meta": {"command": "bedkd bench --datasets olid"}, "rows": [base]}))
    assert unexplained_screen.rows_to_screen(str(bench), set()) == [(base, "bedkd bench --datasets olid")]
