"""benchmarks/dmm_draws.py: the tables it writes from saved scores (no model is run here)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "dmm_draws.py"
dmm_draws = load_benchmark("dmm_draws")


def _saved(poison_scores: list[float], seed: int = 0) -> dict:
    """400 training rows (label 1's first 100 poisoned), a pool of 300 clean rows; one run per
    entry of ``poison_scores``, the poisoned rows scoring that in it, clean rows 0.15-0.45."""
    g = np.random.default_rng(seed)
    labels = np.repeat([0, 1], 200)
    poisoned = np.zeros(400, dtype=bool)
    poisoned[200:300] = True
    pool_labels = np.repeat([0, 1], 150)
    d = {"labels": labels, "pool_labels": pool_labels, "poisoned": poisoned, "s_pred": labels.copy(),
         "p_pred": pool_labels.copy(), "names": np.asarray([f"draw {i}" for i in range(len(poison_scores))]),
         "threshold": np.asarray(0.1), "num_labels": np.asarray(2)}
    for i, score in enumerate(poison_scores):
        s = g.uniform(0.15, 0.45, 400)
        s[poisoned] = score
        d[f"s_scores_{i}"], d[f"p_scores_{i}"] = s, g.uniform(0.15, 0.45, 300)
        flip = np.concatenate([np.arange(i * 20, i * 20 + 20), np.arange(150 + i * 20, 150 + i * 20 + 20)])
        d[f"flip_{i}"], d[f"heldout_{i}"] = flip, np.setdiff1d(np.arange(300), flip)
    return d


def _row(lines: list[str], name: str) -> list[str]:
    return [c.strip() for c in next(line for line in lines if line.startswith(f"| {name} ")).strip("|").split("|")]


def test_the_fixed_threshold_misses_survivors_that_the_calibrated_line_finds():
    """Poisoned rows at 0.12 are below every clean score but above DMM's 0.1: the fixed threshold
    flags none of them, the line at the clean rows' 5 % quantile flags them all, on label 1 only."""
    lines = dmm_draws.table(_saved([0.12, 0.02]))
    first, second = _row(lines, "draw 0"), _row(lines, "draw 1")
    assert first[1:4] == ["0", "-", "0"]                    # fixed: nothing flagged
    assert first[7] != "0" and first[9] == "100"           # calibrated: every poisoned row
    assert float(first[10].split(" / ")[0]) < 3 and float(first[10].split(" / ")[1]) > 8 and first[11] == "1"
    assert second[3] == "100" and float(second[4].split(" / ")[1]) > 8
    assert _row(lines, "pooled 2 (mean score)")[3] == "100"   # the mean of 0.12 and 0.02 is below 0.1


def test_summary_gives_each_victims_ranges(tmp_path):
    paths = []
    for name, scores in (("poisoned_victim", [0.12, 0.02]), ("clean_model", [0.3, 0.3])):
        d = _saved(scores)
        if name == "clean_model":
            d["poisoned"][:] = False
        paths.append(tmp_path / f"{name}.npz")
        np.savez(paths[-1], **d)
    out = tmp_path / "summary.md"
    done = subprocess.run([sys.executable, str(SCRIPT), "--summary", *map(str, paths), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    victim, clean = _row(lines, "poisoned_victim"), _row(lines, "clean_model")
    assert victim[1:6] == ["2", "100", "0-100", "100-100", victim[5]] and victim[6] == "1 of 2"
    assert victim[7].startswith("1.000") and victim[8] == "100"   # the run with the strongest test finds all
    assert clean[2] == "0" and clean[3] == "-" and clean[6] == "0 of 2"


def test_without_bench_arguments_it_says_so(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "x.md")], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 2 and "bench arguments after --" in done.stderr and not (tmp_path / "x.md").exists()
