"""benchmarks/floor_spread.py: the floor of each seed's clean model, loaded from a bench workdir."""
from __future__ import annotations

import json

from conftest import load_benchmark
from test_bench import DATA, TINY, bench, needs_data

floor_spread = load_benchmark("floor_spread")


def summary(table) -> str:
    """The spread table (five columns) of the markdown."""
    return table.read_text().split("|---|---|---|---|---|\n")[-1]


@needs_data
def test_each_seeds_clean_model_is_found_or_trained_and_measured_as_the_bench_does(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    assert bench(run, tiny_model_dir, "--defenses", "none") == 0       # seed 0: trains the clean model
    bench_row = json.loads((run / "results.json").read_text())["rows"][0]
    table = tmp_path / "floors.md"
    matrix = ["--data-dir", str(DATA), "--backbone", str(tiny_model_dir), *TINY]
    argv = ["--workdir", str(tmp_path / "other"), str(run / "work"), "--seeds", "0", "1", "--out", str(table), "--"]
    assert floor_spread.main(argv + matrix) == 0
    rows = json.loads(table.with_suffix(".json").read_text())["rows"]
    assert [(r["seed"], r["workdir"]) for r in rows] == [(0, str(run / "work")), (1, None)]   # seed 1: not cached
    assert rows[0]["floor_asr"] == bench_row["floor_asr"] and "floor_asr" not in rows[1]
    assert "| sst2 | badnets | 1 | " in summary(table)    # one clean model in the spread
    assert floor_spread.main(argv[:-1] + ["--train-missing", "--"] + matrix) == 0
    rows = json.loads(table.with_suffix(".json").read_text())["rows"]
    assert rows[1]["workdir"] == str(tmp_path / "other") and 0 <= rows[1]["floor_asr"] <= 100
    assert "| sst2 | badnets | 2 | " in summary(table)
