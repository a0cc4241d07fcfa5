"""benchmarks/label_check.py: the cases it plans, one case on the data pack, the table it writes."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from bedkd.defenses.scanning import ScanConfig
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BEDKD_DATA_DIR", ROOT.parent / "shared" / "data"))
script = load_benchmark("label_check")


def _row(attack, target, seed, log10_p, found, **extra):
    return {"dataset": "sst2", "seed": seed, "attack": attack, "target": target, "variant": "default",
            "status": "ok", "rows": 3000, "poisoned": 300 if target is not None else 0, "clean_accuracy": 0.8,
            "log10_p": log10_p, "excess": [3.0, 150.0], "found": found, **extra}


def test_table_separates_the_null_from_the_poisoned_sets_and_names_the_misses(tmp_path):
    rows = [_row("clean", None, 0, [0.3, 0.5], []), _row("clean", None, 3, [2.5, 0.1], [0]),
            _row("synbkd", 1, 0, [0.2, 5.3], [1], target_log10_p=5.3, other_log10_p=0.2, recall=77.0, precision=41.0),
            _row("stylebkd", 1, 1, [0.2, 1.1], [], target_log10_p=1.1, other_log10_p=0.2, recall=20.0, precision=30.0),
            {"dataset": "sst2", "seed": 0, "attack": "synbkd", "target": 0, "variant": "default",
             "status": "not run: target 1 only"}]
    meta = {"command": "python benchmarks/label_check.py ...", "date": "d", "code_version": "v", "train_limit": 3000}
    md = script.markdown(rows, meta, 2.0)
    assert "2 clean draws; the largest statistic on any label: median 1.50, max 2.50; evidence found on 1: sst2 seed 3" in md
    assert "| sst2 | synbkd | default | 1 | 0 | 300 | 5.3 | 0.2 | yes | 150 | 77 | 41 |" in md
    assert "| sst2 | stylebkd | default | 1 | 1 | 300 | 1.1 | 0.2 | **no** |" in md
    assert "| sst2 | stylebkd | 1 | 0 | t1 s1 default |" in md
    assert "- sst2 seed 0 synbkd target 0 default: not run: target 1 only" in md
    assert "| sst2 | 0 | 0.30 / 0.50 | 3 / 150 | 80.0 |" in md           # rows of before suspect_accuracy
    shifted = script.markdown([_row("clean", None, 0, [0.3, 0.5], [], suspect_accuracy=0.75)], meta, 2.0)
    assert "| sst2 | 0 | 0.30 / 0.50 | 3 / 150 | 80.0 / 75.0 |" in shifted and "Quantile 0.2;" in shifted
    assert "| sst2 | 1 | 0.50 | 0 | 80.0 | 75.0 |" in shifted                  # the per-dataset null summary
    assert "median reference accuracy" not in md                           # not without suspect_accuracy
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({"meta": meta, "rows": rows}))
    argv = sys.argv
    sys.argv = ["label_check.py", "--from-results", str(saved), "--out", str(tmp_path / "again")]
    try:
        assert script.main() == 0
    finally:
        sys.argv = argv
    assert (tmp_path / "again" / "results.md").read_text() == md


def test_cases_cover_every_target_and_variant_then_the_null_seeds(monkeypatch):
    import bedkd.datasets

    class Data:
        name, num_labels = "sst2", 2
    monkeypatch.setattr(bedkd.datasets, "load_dataset", lambda name, data_dir: Data())
    args = argparse.Namespace(datasets=["sst2"], seeds=[0], null_seeds=[5], attacks=["badnets", "stylebkd"],
                              styles=["bible", "lyrics"], targets=None, data_dir=str(DATA), rates=[None, 0.03])
    got = [(c[2], c[3], c[4], c[5]) for c in script.cases(args)]
    assert got[0] == (0, "clean", None, None) and got[-1] == (5, "clean", None, None)
    assert len([g for g in got if g[1] == "badnets"]) == 2 * 2 * len(script.TRIGGERS["badnets"])
    assert {c[6] for c in script.cases(args) if c[3] == "badnets"} == {None, 0.03}
    assert {(g[2], g[3]) for g in got if g[1] == "stylebkd"} == {(t, s) for t in (0, 1) for s in ("bible", "lyrics")}
    assert all(c[6] is None for c in script.cases(args) if c[3] == "clean")
    args.attacks, args.sos_triggers = ["sos"], ["violin forest tea", "bridge winter paper"]
    assert {g[3] if g[3] is None else tuple(g[3]) for g in (c[2:6] for c in script.cases(args)) if g[1] == "sos"} == \
        {("violin", "forest", "tea"), ("bridge", "winter", "paper")}


def test_cases_from_bench_results_take_each_case_once_with_its_own_trigger(monkeypatch, tmp_path):
    import bedkd.datasets

    class Data:
        name, num_labels = "olid", 2
    monkeypatch.setattr(bedkd.datasets, "load_dataset", lambda name, data_dir: Data())
    rows = [{"dataset": "olid", "attack": a, "trigger": t, "target": tg, "seed": s, "defense": d}
            for a, t, tg, s, d in [("badnets", "qv xk wz", 0, 2, "none"), ("badnets", "qv xk wz", 0, 2, "bedkd-guarded"),
                                   ("addsent", "I read this book twice", 0, 1, "none"),
                                   ("stylebkd", "lyrics", 1, 2, "none"), ("synbkd", "default", 1, 0, "none"),
                                   ("clean", "default", 1, 0, "none")]]
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({"meta": {}, "rows": rows}))
    args = argparse.Namespace(cases_from=[str(saved)], data_dir=str(DATA))
    got = [(c[2], c[3], c[4], c[5], c[6]) for c in script.cases(args)]
    assert got == [(2, "badnets", 0, ["qv", "xk", "wz"], None), (1, "addsent", 0, "I read this book twice", None),
                   (2, "stylebkd", 1, "lyrics", None), (0, "synbkd", 1, None, None)]
    bench = tmp_path / "bench.json"                  # bedkd bench's rows keep their case in the run's meta
    bench.write_text(json.dumps({"meta": {}, "rows": [{"dataset": "olid", "attack": "badnets", "defense": "none"}]}))
    from bedkd.errors import ConfigError
    with pytest.raises(ConfigError, match=r"bench.json: row 0 has no target, seed"):
        list(script.cases(argparse.Namespace(cases_from=[str(bench)], data_dir=str(DATA))))


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "sst2").is_dir(), reason="needs the data pack")
def test_one_synbkd_case_on_sst2_finds_the_target():
    from bedkd.datasets import load_dataset, resolve_data_dir
    ds = load_dataset("sst2", resolve_data_dir(str(DATA)))
    row = script.run_case(script.Embedder(), ds, resolve_data_dir(str(DATA)), 0, "synbkd", 1, None, None, 600, ScanConfig())
    assert row["status"] == "ok" and row["poisoned"] == 60
    assert 0.5 < row["suspect_accuracy"] < row["clean_accuracy"] + 0.1
    assert len(row["log10_p"]) == 2 and np.isfinite(row["target_log10_p"])
    assert 0.0 <= row["recall"] <= 100.0 and 0.0 <= row["precision"] <= 100.0


def test_rows_section_shows_whose_rows_the_ratio_picks_and_where_the_pick_holds_fewer_poisoned_rows():
    def both(variant, first, shift):          # (rows, poisoned, estimate) of each test's top rows
        return _row("stylebkd", 1, 0, [0.1, 4.0], [1], variant=variant, shift_found=[1],
                    first_top_rows=first[0], first_top_poisoned=first[1], first_top_estimate=first[2],
                    shift_top_rows=shift[0], shift_top_poisoned=shift[1], shift_top_estimate=shift[2])
    rows = [both("far", (80, 60, 45.0), (190, 170, 155.0)),        # ratio 3.4: the shift test's, rightly
            both("near", (200, 160, 130.0), (200, 100, 140.0)),    # ratio 1.1: the first test's, rightly
            both("wrong", (100, 40, 30.0), (200, 30, 90.0)),       # ratio 3.0: the shift test's, holding fewer
            {**both("first only", (80, 60, 45.0), (190, 170, 155.0)), "shift_found": []}]
    md = "\n".join(script._rows_section(rows, 2.0))
    assert "| sst2 | stylebkd | far | 1 | 0 | 80 | 60 | 45 | 190 | 170 | 155 | 3.44 | shift | yes |" in md
    assert "| sst2 | stylebkd | near | 1 | 0 | 200 | 160 | 130 | 200 | 100 | 140 | 1.08 | first | yes |" in md
    assert "| wrong | 1 | 0 | 100 | 40 | 30 | 200 | 30 | 90 | 3.00 | shift | **no** |" in md
    assert "first only" not in md                                  # the shift test did not find it
    assert "3 sets; at ratio 2 the shift test's rows on 2, with +100 poisoned rows" in md
    assert "1 of those switches hold fewer poisoned rows" in md and "on 0 sets the first test's rows stay" in md
    assert "sst2 stylebkd 1.08-3.44" in md
    stays = "\n".join(script._rows_section(rows, 4.0))
    assert "0 of those switches" in stays and "on 1 sets the first test's rows stay where the shift" in stays
    assert script._rows_section(rows, 4.0)[-1].startswith("3 sets; at ratio 4 the shift test's rows on 0, with +0")


def test_piece_tests_take_the_attacks_trigger_as_found_and_the_table_lists_them():
    from bedkd.data import LabeledTexts
    from bedkd.defenses.scanning.label_check import check_embeddings
    from test_label_check import _task
    clean_x, clean_y, suspect_x, suspect_y = _task(flipped=150)
    check = check_embeddings(clean_x, clean_y, suspect_x, suspect_y, num_labels=2, quantile=0.2, seed=0)
    first = len(suspect_y) - 150
    for pieces, holds in ((150, False), (5, True)):
        texts = [f"row {i}" + (" a pencil" if first <= i < first + pieces else "") for i in range(len(suspect_y))]
        [test] = script.piece_tests(check, LabeledTexts(texts, suspect_y.tolist()), ["pencil", "summer", "orange"],
                                    False, 0, 2, ScanConfig(label_check=True))
        assert test["label"] == 1 and test["held"] == pieces and test["holds"] is holds
    assert script.piece_tests(check, LabeledTexts(texts, suspect_y.tolist()), ["pencil"], False, 1, 2,
                              ScanConfig(label_check=True)) == []          # the check's label is the target's
    row = _row("sos", 0, 0, [0.2, 3.4], [1], target_log10_p=0.2, other_log10_p=3.4, recall=0.0, precision=0.0,
               variant="ladder copper lemon", piece_tests=[test | {"holds": False}])
    md = script.markdown([row], {"command": "c", "date": "d", "code_version": "v", "train_limit": 3000}, 2.0)
    assert "## Labels found beside the target, and the piece test" in md
    assert (f"| sst2 | sos | ladder copper lemon | 0 | 0 | 1 | 5 | {test['rest']['log10_p']:.2f} | "
            f"{test['rest']['excess']:.0f} | no |") in md
