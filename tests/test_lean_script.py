"""benchmarks/lean.py: its measures on known predictions, and end to end on a tiny model."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BEDKD_DATA_DIR", ROOT.parent / "shared" / "data"))


def _lean():
    spec = importlib.util.spec_from_file_location("lean", ROOT / "benchmarks" / "lean.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_counts_the_rows_of_other_labels_sent_to_the_target():
    labels = np.array([0, 0, 0, 1, 1])
    proba = np.array([[.9, .1], [.8, .2], [.3, .7], [.6, .4], [.2, .8]])   # predictions 0 0 1 0 1
    m = _lean().measure(proba, labels, target=0)
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["balanced"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["to_target"] == pytest.approx(1 / 2) and m["other_rows"] == 2
    assert m["p_target"] == pytest.approx(np.mean([.9, .8, .3, .6, .2])) and m["share"] == pytest.approx(3 / 5)


@pytest.mark.skipif(not (DATA / "olid" / "clean").is_dir(), reason=f"no data pack at {DATA}")
def test_lean_writes_both_models_on_both_splits(tiny_model_dir, tmp_path):
    out = tmp_path / "lean.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lean.py"), "--dataset", "olid", "--data-dir",
                           str(DATA), "--target", "0", "--pair", "tiny", str(tiny_model_dir), str(tiny_model_dir),
                           "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    rows = [r.split("|") for r in out.read_text().splitlines() if r.startswith("| tiny")]
    assert [(r[2].strip(), r[3].strip()) for r in rows] == [("victim", "dev"), ("victim", "test"),
                                                            ("clean model", "dev"), ("clean model", "test")]
    assert rows[0][4:] == rows[2][4:]          # the same model twice: the same digits
