"""benchmarks/towards_target_screen.py: which recorded `guarded` runs `--scan-label-check-towards-target` could
change: those whose label check finds a label other than the found trigger's target."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _check(found: list[int]):
    """A label check on two labels that finds ``found`` (first test), four suspicious rows, the last two flagged."""
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    evidence = [LabelEvidence(c, 2, 1, 10, 1, 50.0 if c in found else 0.0, 5.0 if c in found else 0.1)
                for c in (0, 1)]
    return SimpleNamespace(evidence=evidence, shift=None, flagged=np.array([False, False, True, True]))


def test_the_screen_marks_a_run_whose_label_check_finds_another_label_and_counts_the_pieces(tmp_path, monkeypatch):
    import towards_target_screen
    from bedkd.data import LabeledTexts
    from bedkd.defenses import ScanConfig
    suspect = LabeledTexts(["a", "b", "one pencil and summer", "plain row"], [0, 0, 1, 1])
    found = {"sos": [0, 1], "badnets": [0]}

    class Rebuilt:
        def __init__(self, data_dir):
            self.data_dir = data_dir

        def check(self, command, dataset, attack):
            return suspect, _check(found[attack]), ScanConfig(label_check=True)

    monkeypatch.setattr(towards_target_screen, "Rebuilt", Rebuilt)
    command = "bedkd bench --out /x --workdir /w --defenses none bedkd-guarded --datasets sst2 --seed 2 --attack-target 0"
    rows = [{"dataset": "sst2", "attack": attack, "defense": "bedkd-guarded", "status": "ok", "asr": 10.0,
             "cacc_change": 0.1, "floor_asr": 9.0, "trigger_found": "pencil orange summer", "target_found": 0}
            for attack in ("sos", "badnets")]
    rows.append({**rows[0], "trigger_found": None})                      # nothing found: not screened
    rows.append({**rows[0], "defense": "none"})
    table = tmp_path / "results.json"
    table.write_text(json.dumps({"meta": {"command": command}, "rows": rows}))
    assert towards_target_screen.main(["--results", str(table), "--out", str(tmp_path / "out")]) == 0
    got = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [(r["attack"], r["found_labels"], r["other_labels"], r["could_act"]) for r in got] == [
        ("sos", [0, 1], [1], True), ("badnets", [0], [], False)]
    assert got[0]["other_flagged"] == 2 and got[0]["pieces_held"] == 1             # "one pencil and summer"
    assert got[0]["seed"] == "2" and got[0]["target"] == "0"                        # from the recorded command
    from bench_runs import towards_target_cannot_act, towards_target_screened
    (tmp_path / "screens" / "a").mkdir(parents=True)
    (tmp_path / "out" / "results.json").rename(tmp_path / "screens" / "a" / "results.json")
    screened = towards_target_screened(tmp_path / "screens")
    sos, badnets = ({**r, "backdoor_found": True, "unexplained_acts": False} for r in rows[:2])
    assert not towards_target_cannot_act(sos, screened, {})                        # label 1 would be relabelled
    assert towards_target_cannot_act(badnets, screened, {})                        # only the target's own label
    assert not towards_target_cannot_act({**badnets, "unexplained_acts": True}, screened, {})   # the rest test acts
    assert not towards_target_cannot_act({**badnets, "asr": 11.0}, screened, {})   # a run not screened: unknown
    assert towards_target_cannot_act({**sos, "trigger_found": None}, screened, {})  # no trigger: nothing to spare
    assert towards_target_cannot_act({**sos, "backdoor_found": False}, screened, {})   # returned unchanged


def test_an_unreadable_table_is_named(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "towards_target_screen.py"), "--results", str(bad),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode == 2 and str(bad) in run.stderr
