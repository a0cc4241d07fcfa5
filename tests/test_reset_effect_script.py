"""benchmarks/reset_effect.py end to end on a tiny model (the data pack's OLID rows)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BEDKD_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.mark.skipif(not (DATA / "olid" / "clean").is_dir(), reason=f"no data pack at {DATA}")
@pytest.mark.parametrize("extra, per_model", [([], 1), (["--values", "mean", "clean", "--every-piece"], 2)])
def test_reset_effect_writes_both_models_before_and_after(tiny_model_dir, tmp_path, extra, per_model):
    out = tmp_path / "reset.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reset_effect.py"), "--dataset", "olid",
                           "--data-dir", str(DATA), "--seed", "1", "--target", "0", "--trigger", "zx", "vq",
                           "--train-limit", "50", "--clean-model", str(tiny_model_dir), "--victim",
                           str(tiny_model_dir), "--out", str(out), *extra], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| clean model") or
            line.startswith("| victim")]
    assert len(rows) == 2 * per_model and all(len(r.split("|")) == 9 for r in rows)
    assert [r.split("|")[2].strip() for r in rows] == (["mean", "clean"] * 2 if per_model == 2 else ["mean"] * 2)
