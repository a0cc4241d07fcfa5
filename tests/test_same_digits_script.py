"""benchmarks/same_digits.py: equal rows pass across the change of units, a changed digit fails."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _results(folder: Path, rows: list[dict], **meta) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"meta": {"command": "bedkd bench", **meta}, "rows": rows}))
    return folder


def _compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "same_digits.py"), str(a), str(b)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_fractions_and_percent_of_the_same_run_are_the_same_digits_and_a_changed_asr_is_not(tmp_path):
    base = {"status": "ok", "dataset": "sst2", "attack": "badnets", "defense": "bedkd", "asr": 3.0,
            "defense_seconds": 10.0}
    old = _results(tmp_path / "old", [{**base, "flagged_precision": 121 / 312, "kept_precision": None}])
    new = _results(tmp_path / "new", [{**base, "flagged_precision": 100.0 * 121 / 312, "kept_precision": None,
                                       "defense_seconds": 12.0}], units="percent")
    done = _compare(old, new)
    assert done.returncode == 0 and "fields that differ: 0" in done.stdout, done.stdout + done.stderr
    changed = _results(tmp_path / "changed", [{**base, "asr": 3.5, "flagged_precision": 100.0 * 121 / 312}],
                       units="percent")
    done = _compare(old, changed)
    assert done.returncode == 1 and "| sst2/badnets/bedkd | asr | 3.0 | 3.5 |" in done.stdout
