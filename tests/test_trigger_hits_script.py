"""benchmarks/trigger_hits.py: each scan row's hits and rest test from its cell report, a run with other
options (``DEFENSE.<key>.json``) found by its row's ASR and CACC; a row without a report is skipped."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cell(row, hits, rest, prune, misses=()):
    def cands(triples):
        return [{"words": w.split(), "phrase": False, "target": 1, "flip_rate": f, "rows": n} for w, f, n in triples]
    verdict = {"trigger_search": {"hits": cands(hits), "tried": cands([*misses, *hits]), "threshold": 0.6},
               "rest_tests": [{"label": 1, "held": rest[0], "acts": rest[1],
                               "rest": {"excess": rest[2], "log10_p": rest[3]}}] if rest else []}
    scan = {"trigger_prune": True} if prune else {}
    return {"row": row, "details": {"seconds": {"trigger_search": 12.0},
                                    "report": {"verdict": verdict, "config": {"scan": scan}}}}


def test_the_script_reads_hits_and_rest_tests_of_runs_with_any_options(tmp_path):
    base = {"dataset": "agnews", "attack": "sos", "victim_key": "k1", "victim_asr": 94.0, "floor_asr": 1.5,
            "selected_epoch": 3}
    plain = {**base, "defense": "bedkd", "asr": 1.1, "cacc": 89.2, "cacc_change": 0.3}
    pruned = {**base, "defense": "bedkd", "asr": 1.4, "cacc": 89.3, "cacc_change": 0.3}
    gone = {**base, "defense": "bedkd", "victim_key": "k2", "asr": 2.0, "cacc": 89.0, "cacc_change": 0.1}
    folder = tmp_path / "w" / "cells" / "agnews" / "sos" / "k1"
    folder.mkdir(parents=True)
    (folder / "bedkd.json").write_text(json.dumps(_cell(plain, [("iraq a b c", 0.98, 12)], (90, True, 201, 5.0),
                                                        False)))
    (folder / "bedkd.0123abcd.json").write_text(json.dumps(_cell(pruned, [("iraq a b c", 0.98, 12), ("a b c", 0.98, 300)],
                                                                 (300, False, 35, 1.3), True)))
    results = []
    for i, rows in enumerate([[plain, {**plain, "defense": "none"}], [pruned, gone]]):
        results.append(tmp_path / f"run{i}" / "results.json")
        results[-1].parent.mkdir()
        results[-1].write_text(json.dumps({"meta": {"command": "bedkd bench"}, "rows": rows}))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trigger_hits.py"), "--results", *map(str, results),
                          "--workdir", str(tmp_path / "w"), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "no cell report, skipped" in run.stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["asr"], r["trigger_prune"], [h["rows"] for h in r["hits"]], r["rest_tests"][0]["acts"]) for r in rows] \
        == [(1.1, False, [12], True), (1.4, True, [12, 300], False)]
    md = (out / "results.md").read_text()
    assert "| 300 | 300 | 35 | 1.3 | no |" in md and "| 12 | 90 | 201 | 5.0 | **yes** |" in md


def test_the_script_gives_the_strongest_candidate_below_the_line_and_the_margins(tmp_path):
    """A clean row (no ASR) shows its strongest natural candidate; the summary names the weakest hit
    of the attack rows and the strongest candidate of the clean rows."""
    attack = {"dataset": "t", "attack": "sos", "defense": "bedkd-guarded", "victim_key": "a", "victim_asr": 96.0,
              "floor_asr": 6.0, "asr": 1.0, "cacc": 88.0, "cacc_change": -1.1, "selected_epoch": 4}
    clean = {"dataset": "t", "attack": "clean", "defense": "bedkd-guarded", "victim_key": "c", "victim_asr": None,
             "floor_asr": None, "asr": None, "cacc": 97.4, "cacc_change": 0.0, "selected_epoch": None}
    cells = tmp_path / "w" / "cells" / "t"
    for row, hits, misses in ((attack, [("a b c", 0.96, 32), ("a b", 0.81, 300)], [("x", 0.2, 9)]),
                              (clean, [], [("gold olympic medal", 0.54, 10), ("olympic", 0.47, 74)])):
        folder = cells / row["attack"] / row["victim_key"]
        folder.mkdir(parents=True)
        (folder / "bedkd-guarded.json").write_text(json.dumps(_cell(row, hits, None, False, misses)))
    results = tmp_path / "run" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps({"meta": {"command": "bedkd bench"}, "rows": [attack, clean]}))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trigger_hits.py"), "--results", str(results),
                          "--workdir", str(tmp_path / "w"), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["strongest_below_line"]["words"], r["flip_line"]) for r in rows] == [("x", 0.6), ("gold olympic medal", 0.6)]
    md = (out / "results.md").read_text()
    assert "- weakest hit on an attack row: 0.81 (t sos, bedkd-guarded)" in md
    assert "- strongest candidate on a clean row: 0.54 (`gold olympic medal`, t, bedkd-guarded)" in md
    assert "| gold olympic medal (0.54, 10) | 0 | – | – | – | – |" in md and "| – | – | – | +0.00 |" in md
