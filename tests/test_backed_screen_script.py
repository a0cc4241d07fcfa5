"""benchmarks/backed_screen.py and bench_runs.backed_cannot_act: which recorded runs
`--scan-trigger-flip-backed` could change, from a cell report's verdict (its labels with evidence and
no hit, each one's best candidate against the line), or not settled without one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_bench import DATA, needs_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import backed_screen  # noqa: E402
import bench_runs  # noqa: E402

COMMAND = ("bedkd bench --out /elsewhere --workdir /elsewhere/w --defenses none bedkd-guarded --train-limit 300 "
           "--data-dir /no/such/dir --no-clean-row --datasets sst2 --attacks sos --attack-target 0 --seed 0")


def test_unhit_lists_each_label_without_a_hit_with_its_best_candidate():
    best = {0: {"words": ["a", "b"], "flip_rate": 0.45}, 1: {"words": ["c"], "flip_rate": 0.9}}
    assert backed_screen.unhit(best, [{"target": 1}], [0, 1]) == [{"label": 0, "words": "a b", "flip_rate": 0.45}]
    assert backed_screen.unhit({}, [], [1]) == [{"label": 1, "words": None, "flip_rate": 0.0}]


def test_backed_cannot_act_on_a_run_without_evidence_or_one_the_screen_settles():
    row = {"dataset": "olid", "attack": "sos", "victim_asr": 70.0, "floor_asr": 35.0, "asr": 0.0, "cacc_change": -2.0}
    assert bench_runs.backed_cannot_act({**row, "backdoor_found": False}, {})
    assert not bench_runs.backed_cannot_act({**row, "backdoor_found": True}, {})
    assert bench_runs.backed_cannot_act({**row, "backdoor_found": True}, {bench_runs.run_digits(row): False})
    assert not bench_runs.backed_cannot_act({**row, "backdoor_found": True}, {bench_runs.run_digits(row): True})


def test_each_case_is_screened_on_its_newest_guarded_version():
    def row(defense, trigger="zx", seed=0, **extra):
        return {"dataset": "olid", "attack": "badnets", "defense": defense, "trigger": trigger, "target": 0,
                "seed": seed, **extra}
    cells = [("t.json", row("guarded-v5"), "a"), ("t.json", row("guarded-v10"), "b"),   # one case: v10 is newer
             ("t.json", row("guarded-v10", seed=1), "c"), ("t.json", row("bedkd-guarded", seed=1), "d"),
             ("t.json", row("guarded-v2", trigger="vk"), "e"),                          # a case of its own
             ("b.json", {"dataset": "olid", "attack": "ep", "defense": "bedkd"}, "f"),    # a bench row: kept
             ("b.json", {"dataset": "olid", "attack": "sos", "defense": "bedkd"}, "g")]
    assert [c for _, _, c in backed_screen.newest_per_case(cells)] == ["b", "d", "e", "f", "g"]


def _cell(verdict: dict, asr: float, cacc: float) -> dict:
    return {"row": {"asr": asr, "cacc": cacc}, "details": {"report": {"verdict": verdict}}}


@needs_data
def test_the_screen_reads_a_cell_report_and_leaves_a_run_without_one_unsettled(tmp_path):
    from unexplained_screen import rebuilt_cell
    key = rebuilt_cell(COMMAND, "sst2", "sos", str(DATA), keep_data_dir=True, with_key=True)[3]
    base = {"dataset": "sst2", "attack": "sos", "defense": "bedkd-guarded", "status": "ok", "victim_asr": 90.0,
            "floor_asr": 10.0, "cacc_change": 0.0, "backdoor_found": True, "trigger_found": None}
    rows = [{**base, "asr": 1.0, "cacc": 80.0}, {**base, "asr": 2.0, "cacc": 81.0}, {**base, "asr": 3.0, "cacc": 82.0},
            {**base, "asr": 4.0, "cacc": 83.0, "backdoor_found": False},
            {**base, "asr": 5.0, "cacc": 84.0, "trigger_found": "mn", "target_found": 0}]
    folder = tmp_path / "w" / "cells" / "sst2" / "sos" / key
    folder.mkdir(parents=True)
    search = {"hits": [], "best_per_label": {"0": {"words": ["x", "y"], "flip_rate": 0.45},
                                             "1": {"words": ["z"], "flip_rate": 0.5}}}
    # label 0 has evidence and a candidate at 0.45 >= 0.3: could act; label 1's 0.5 has no evidence
    recorded = {"evidence": [{"log10_p": 99.0}, {"log10_p": 0.0}], "shift": [{"log10_p": 99.0}, {"log10_p": 0.0}]}
    (folder / "bedkd-guarded.json").write_text(json.dumps(_cell({"targets": [0], "trigger_search": search,
                                                                 "dmm_targets": [], "label_check": recorded},
                                                                1.0, 80.0)))
    # the same candidates where label 0's trigger was found: nothing to back
    found = {**search, "hits": [{"target": 0, "words": ["x", "y", "w"], "flip_rate": 0.9}]}
    (folder / "bedkd.abc.json").write_text(json.dumps(_cell({"targets": [0], "trigger_search": found}, 2.0, 81.0)))
    table = tmp_path / "results.json"
    runs = [{"run": f"r{i}", "command": COMMAND.replace("/elsewhere ", f"/elsewhere/{i} ")} for i in range(len(rows))]
    rows = [{**r, "run": f"r{i}"} for i, r in enumerate(rows)]
    table.write_text(json.dumps({"meta": {"command": "python benchmarks/robustness.py run", "runs": runs},
                                 "rows": rows}))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "backed_screen.py"), "--results", str(table),
                          "--workdir", str(tmp_path / "w"), "--data-dir", str(DATA), "--line", "0.3",
                          "--backing-from", "0.4", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    got = {r["asr"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert got[1.0]["source"] == "cell report" and got[1.0]["could_act"] is True
    assert got[1.0]["labels"] == [{"label": 0, "words": "x y", "flip_rate": 0.45}]
    # the option's tests, the label check computed again: no row of this clean draw holds `x y`, and the
    # made-up recorded statistics are not reproduced
    (backing,) = got[1.0]["backing"]
    assert (backing["label"], backing["words"], backing["held"], backing["acts"]) == (0, "x y", 0, False)
    assert backing["reproduced"] is False and "backing" not in got[2.0]
    assert got[2.0]["could_act"] is False and got[2.0]["labels"] == []
    # no cell report, no victim: from the data, the trigger's words are candidates of label 0 (it could act)
    assert got[3.0]["source"] == "data (no victim at hand)" and got[3.0]["could_act"] is None
    assert 0 in [x["label"] for x in got[3.0]["labels"]]
    assert got[4.0]["could_act"] is False and got[4.0]["source"] == "no evidence"
    # a found trigger's label has a hit: only the other label's candidates count, and none settles nothing
    assert 0 not in [x["label"] for x in got[5.0]["labels"]]
    assert (got[5.0]["could_act"] is False) == (got[5.0]["labels"] == [])
    screened = bench_runs.backed_screened(out)
    assert screened[bench_runs.run_digits(rows[1])] is False and screened[bench_runs.run_digits(rows[0])] is True
    assert "could act" in (out / "results.md").read_text()
    # a victim at hand that a bench run on record gave other digits (trained again) settles nothing
    (tmp_path / "w" / "victims" / key).mkdir(parents=True)
    (tmp_path / "w" / "victims" / key / "model.safetensors").write_bytes(b"")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results.json").write_text(json.dumps({"rows": [
        {"victim_key": key, "victim_cacc": 80.0, "victim_asr": 95.0}]}))
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "backed_screen.py"), "--results", str(table),
                          "--workdir", str(tmp_path / "w"), "--victim-rows", str(tmp_path / "bench"), "--data-dir",
                          str(DATA), "--line", "0.3", "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    got = {r["asr"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert got[3.0]["source"] == "data (victim, digits not the row's)" and got[3.0]["could_act"] is None
    assert got[3.0]["victim_digits"] == [80.0, 95.0]
