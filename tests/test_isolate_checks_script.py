"""benchmarks/isolate_checks.py: an ablation run's isolate check, copied from its cell report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_check_is_copied_from_the_matching_cell_and_a_missing_one_is_named(tmp_path):
    row = {"dataset": "d", "attack": "ep", "defense": "bedkd", "victim_key": "v1", "asr": 9.9, "cacc": 88.0,
           "code_version": "c1"}
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"rows": [{**row, "defense": "none"}, row]}))
    check = {"words": ["jt"], "trigger_proxy_without": 0.2, "trigger_proxy_with": 0.1, "kept": True}
    cell = tmp_path / "w" / "cells" / "d" / "ep" / "v1"
    cell.mkdir(parents=True)
    (cell / "bedkd.k.json").write_text(json.dumps({"row": row, "details": {"report": {
        "data": {"isolate_check": check, "isolated_words": {"jt": 7}}, "start": {"trigger_row_effects": "0+0+"}}}}))
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"rows": [{**row, "asr": 1.0}]}))
    script = str(ROOT / "benchmarks" / "isolate_checks.py")
    done = subprocess.run([sys.executable, script, str(run), str(other), "--workdirs", str(tmp_path / "w")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and f"{other}: no isolate check" in done.stderr
    got = json.loads((run / "isolate_check.json").read_text())
    assert got["isolate_check"] == check and got["isolated_words"] == {"jt": 7} and got["proxy_rows"] == 4
    assert not (other / "isolate_check.json").exists()
