"""benchmarks/security.py: the runs it plans and the table it writes from their results."""
from __future__ import annotations

import argparse
import json

import pytest

from conftest import load_benchmark

security = load_benchmark("security")


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


BINARY_OK = [v for v in security.VARIATIONS if v not in ("target-2", "target-3")]


def test_plan_varies_one_thing_on_one_backdoor():
    runs = dict(security.plan(argparse.Namespace(datasets=["sst2", "olid"], variations=BINARY_OK)))
    assert list(runs) == BINARY_OK
    for name, args in runs.items():
        trigger = args[args.index("--attack-trigger") + 1:args.index("--attack-target")]
        assert trigger == security.TRIGGER, name
        assert _value(args, "--seed") == "2"
        assert _value(args, "--attack-target") == ("0" if name == "target-0" else "1"), name
        assert args.count("--attack-target") == 1
        assert args[args.index("--datasets") + 1:args.index("--datasets") + 3] == ["sst2", "olid"]
    assert _value(runs["rate-0.5"], "--attack-rate") == "0.005" and "--attack-rate" not in runs["rate-10"]
    assert _value(runs["clean-label"], "--attack-label-mode") == "clean"
    assert _value(runs["two-backdoors"], "--attacks") == "multi"
    assert _value(runs["two-backdoors"], "--multi-second-target") == "0"
    assert _value(runs["decoy"], "--attacks") == "decoy" and _value(runs["decoy"], "--attack-rate") == "0.03"


def test_every_target_label_of_a_four_class_dataset_has_a_run():
    runs = dict(security.plan(argparse.Namespace(datasets=["agnews"], variations=["rate-10", *security.TARGETS])))
    assert sorted(_value(args, "--attack-target") for args in runs.values()) == ["0", "1", "2", "3"]
    for args in runs.values():
        assert _value(args, "--attacks") == "badnets" and "--attack-rate" not in args


def test_by_default_a_binary_dataset_gets_every_variation_but_the_targets_it_lacks():
    runs = dict(security.plan(argparse.Namespace(datasets=["sst2", "olid"], variations=None)))
    assert list(runs) == BINARY_OK
    assert list(dict(security.plan(argparse.Namespace(datasets=["agnews"], variations=None)))) == \
        list(security.VARIATIONS)


def test_a_target_beyond_a_binary_dataset_is_refused_before_any_run():
    with pytest.raises(SystemExit, match="target-2 needs a dataset of more than two classes; olid has two"):
        security.plan(argparse.Namespace(datasets=["agnews", "olid"], variations=["rate-3", "target-2"]))


def test_plan_arguments_are_accepted_by_the_bench():
    from bedkd.cli.main import build_parser
    parser = build_parser()
    for _, args in [*security.plan(argparse.Namespace(datasets=["sst2"], variations=BINARY_OK)),
                    *security.plan(argparse.Namespace(datasets=["agnews"], variations=list(security.TARGETS)))]:
        parser.parse_args(["bench", "--out", "x", "--defenses", "none", *security.DEFENSES, *args])


def _row(defense, asr, change, **extra):
    return {"status": "ok", "dataset": "sst2", "attack": "badnets", "defense": defense, "victim_cacc": 85.0,
            "victim_asr": 100.0, "floor_asr": 10.0, "cacc": 85.0 + change, "asr": asr, "cacc_change": change,
            "poisoned_rows": 30, **extra}


def test_report_marks_the_defenses_that_break(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    for name, rows in {"rate-1": [_row("none", 100.0, 0.0), _row("bedkd-guarded", 4.0, -0.2, backdoor_found=True,
                                                                   target_found=1, trigger_found="wz",
                                                                   flagged_precision=0.5, flagged_recall=0.9),
                                  _row("bki", 60.0, -0.1)],
                       "decoy": [_row("none", 100.0, 0.0), _row("bedkd-guarded", 50.0, 0.0, backdoor_found=False),
                                 _row("cube", 5.0, -3.0)]}.items():
        (runs / name).mkdir(parents=True)
        meta = {"command": "bedkd bench ...", "date": "2026-11-29", "machine": {}, "code_version": "x",
                "setup": {"seed": 2}}
        (runs / name / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    assert security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[])) == 0
    md = (out / "results.md").read_text()
    assert "| 4.0 (-0.2) | 60.0 (-0.1) ✗ | - | → 1 ('wz') | 50 / 90, - |" in md   # fractions: no "units" in meta
    assert "| 50.0 (+0.0) ✗ | - | 5.0 (-3.0) ✗ | no evidence | - |" in md
    assert md.index("| 1 %") < md.index("| adaptive")                  # variations in their own order
    assert "**bedkd-guarded**: misses the bar on 1 of 2 cells: sst2 decoy" in md
    assert "**bki**: misses the bar on 1 of 1 cells: sst2 rate-1" in md
    assert len(json.loads((out / "results.json").read_text())["rows"]) == 6


def test_two_backdoors_miss_the_bar_while_the_second_stays(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    (runs / "two-backdoors").mkdir(parents=True)
    two = {"second_victim_asr": 99.0, "second_floor_asr": 20.0}
    rows = [_row("none", 100.0, 0.0, second_asr=99.0, **two),
            _row("bedkd-guarded", 4.0, 0.0, second_asr=80.0, untriggered_asr=9.5, second_untriggered_asr=19.0, **two),
            _row("cube", 4.0, 0.0, second_asr=21.0, **two)]
    meta = {"command": "x", "date": "d", "machine": {}, "code_version": "x", "setup": {"seed": 2}}
    (runs / "two-backdoors" / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| 100.0 / 99.0 | 10.0 / 20.0 | 4.0 / 80.0 (+0.0) ✗ | 4.0 / 21.0 (+0.0) |" in md
    assert "- **bedkd-guarded**: misses the bar on 1 of 1 cells: sst2 two-backdoors (untriggered ASR 9.5 / 19.0)" in md

    clean = {"floor_untriggered_asr": 12.0, "second_floor_untriggered_asr": 31.0}    # the clean model's own
    for r in rows[1:]:                 # the victim's row, as an earlier run kept it, lacks it
        r.update(clean)
    (runs / "two-backdoors" / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| 100.0 / 99.0 | 10.0 / 20.0 [12.0 / 31.0] | 4.0 / 80.0 (+0.0) ✗ |" in md
    assert ("sst2 two-backdoors (untriggered ASR 9.5 / 19.0; the clean model's 12.0 / 31.0)") in md


def test_a_backdoor_that_did_not_take_is_named_weak_and_still_judged(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    (runs / "rate-1").mkdir(parents=True)
    rows = [_row("none", 16.0, 0.0, victim_asr=16.0), _row("bedkd-guarded", 16.0, 0.0, victim_asr=16.0)]
    meta = {"command": "x", "date": "d", "machine": {}, "code_version": "x", "setup": {"seed": 2}}
    (runs / "rate-1" / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| 1 % (weak backdoor: victim ASR < 90) | 30 | 85.0 | 16.0 | 10.0 | 16.0 (+0.0) ✗ |" in md
    assert "weak backdoor" not in md.split("## Where")[0].split("| 1 %")[0]


def test_detection_metrics_of_a_run_in_percent_are_taken_as_they_are(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    (runs / "rate-3").mkdir(parents=True)
    rows = [_row("none", 100.0, 0.0), _row("bedkd-guarded", 4.0, 0.0, backdoor_found=False, flagged_precision=50.0,
                                           flagged_recall=90.0)]
    meta = {"command": "x", "date": "d", "machine": {}, "code_version": "x", "setup": {"seed": 2}, "units": "percent"}
    (runs / "rate-3" / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    assert "| no evidence | 50 / 90, - |" in (out / "results.md").read_text()


def test_report_keeps_the_runs_of_an_earlier_table_that_the_runs_folder_lacks(tmp_path):
    runs, out, new = tmp_path / "runs", tmp_path / "out", tmp_path / "new"
    for name, asr in (("decoy", 7.0), ("rate-3", 3.0)):
        (runs / name).mkdir(parents=True)
        meta = {"command": f"bedkd bench {name}", "date": "d", "machine": {}, "code_version": "x",
                "setup": {"seed": 2}, "units": "percent"}
        (runs / name / "results.json").write_text(json.dumps({"meta": meta, "rows": [_row("none", 100.0, 0.0),
                                                                                      _row("bki", asr, 0.0)]}))
    security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    (runs / "decoy" / "results.json").unlink()                 # the earlier runs folder is partly gone
    (runs / "rate-3" / "results.json").write_text((runs / "rate-3" / "results.json").read_text().replace("3.0", "4.0"))
    security.report(argparse.Namespace(runs=str(runs), out=str(new), keep=[str(out / "results.json")]))
    table = json.loads((new / "results.json").read_text())
    assert sorted(r["run"] for r in table["meta"]["runs"]) == ["decoy", "rate-3"]
    bki = {r["variation"]: r["asr"] for r in table["rows"] if r["defense"] == "bki"}
    assert bki == {"decoy": 7.0, "rate-3": 4.0}          # the runs folder's own run wins over the earlier table's


def _write_run(runs, name, date, rows):
    (runs / name).mkdir(parents=True, exist_ok=True)
    meta = {"command": f"bedkd bench {name} {date}", "date": date, "machine": {}, "code_version": "x",
            "setup": {"seed": 2}, "units": "percent"}
    (runs / name / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))


def test_a_partial_rerun_keeps_the_earlier_cells_it_did_not_cover(tmp_path):
    runs, out, new = tmp_path / "runs", tmp_path / "out", tmp_path / "new"
    olid = {"dataset": "olid"}
    _write_run(runs, "decoy", "d1", [_row("none", 100.0, 0.0), _row("bki", 50.0, 0.0),
                                     _row("none", 100.0, 0.0, **olid), _row("bki", 60.0, 0.0, **olid)])
    security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    # one dataset again, one more defense, the same victim
    _write_run(runs, "decoy", "d2", [_row("none", 100.0, 0.0), _row("bedkd-reference", 3.0, -0.5)])
    security.report(argparse.Namespace(runs=str(runs), out=str(new), keep=[str(out / "results.json")]))
    table = json.loads((new / "results.json").read_text())
    cells = {(r["dataset"], r["defense"]): r["asr"] for r in table["rows"]}
    assert cells == {("sst2", "none"): 100.0, ("sst2", "bedkd-reference"): 3.0, ("sst2", "bki"): 50.0,
                     ("olid", "none"): 100.0, ("olid", "bki"): 60.0}
    assert sorted(r["date"] for r in table["meta"]["runs"]) == ["d1", "d2"]
    md = (new / "results.md").read_text()
    assert "| 3.0 (-0.5) | 50.0 (+0.0) ✗ |" in md
    # kept once more: each row still names the run that measured it
    again = tmp_path / "again"
    security.report(argparse.Namespace(runs=str(runs), out=str(again), keep=[str(new / "results.json")]))
    assert json.loads((again / "results.json").read_text())["rows"] == table["rows"]
    assert sorted(r["date"] for r in json.loads((again / "results.json").read_text())["meta"]["runs"]) == ["d1", "d2"]


def test_earlier_cells_of_another_victim_are_not_mixed_in(tmp_path):
    runs, out, new = tmp_path / "runs", tmp_path / "out", tmp_path / "new"
    _write_run(runs, "rate-5", "d1", [_row("none", 100.0, 0.0), _row("bki", 50.0, 0.0)])
    security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    _write_run(runs, "rate-5", "d2", [_row("none", 100.0, 0.0, victim_asr=97.0),
                                      _row("cube", 9.0, 0.0, victim_asr=97.0)])
    security.report(argparse.Namespace(runs=str(runs), out=str(new), keep=[str(out / "results.json")]))
    table = json.loads((new / "results.json").read_text())
    assert sorted(r["defense"] for r in table["rows"]) == ["cube", "none"]
    assert [r["date"] for r in table["meta"]["runs"]] == ["d2"]


def test_each_presets_dmm_flags_get_their_own_column(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _write_run(runs, "clean-label", "d1", [
        _row("none", 100.0, 0.0),
        _row("bedkd-reference", 0.0, 0.8, flagged_precision=76.6, flagged_recall=61.6, kept_precision=84.8),
        _row("bedkd-guarded", 4.2, 1.2, backdoor_found=True, target_found=1, trigger_found="qv",
             flagged_precision=2.6, flagged_recall=0.3)])
    security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| guarded found | reference P/R, punished | guarded P/R, punished |" in md
    assert "| → 1 ('qv') | 77 / 62, 85 | 3 / 0, - |" in md


def test_floors_of_several_clean_models_show_their_range_and_mark_the_verdicts_that_turn_on_them(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    (runs / "target-0").mkdir(parents=True)
    spread = {"floor_models": 3, "floor_asr_min": 9.0, "floor_asr_max": 14.0}
    rows = [_row("none", 100.0, 0.0, **spread), _row("bedkd-guarded", 13.0, 0.0, **spread),
            _row("bki", 10.0, 0.0, **spread), _row("cube", 30.0, 0.0)]     # a row of a run without them
    meta = {"command": "x", "date": "d", "machine": {}, "code_version": "x", "setup": {"seed": 2}}
    (runs / "target-0" / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| 10.0 (9.0-14.0) | 13.0 (+0.0) ✗* | 10.0 (+0.0) | 30.0 (+0.0) ✗ |" in md
    assert "misses the bar on 1 of 1 cells: sst2 target-0; the verdict turns on the clean model's seed on 1: " \
           "sst2 target-0 (misses with its own)" in md
    assert "**cube**: misses the bar on 1 of 1 cells: sst2 target-0\n" in md

    kept = out / "earlier.json"                   # the same victim's cube row, kept from an earlier table
    (out / "results.json").rename(kept)
    rows[3]["asr"] = 13.0
    (runs / "target-0" / "results.json").write_text(json.dumps({"meta": meta, "rows": rows[:3]}))
    earlier = json.loads(kept.read_text())
    earlier["rows"] = [{**r, "asr": 13.0, "floor_models": None, "floor_asr_min": None, "floor_asr_max": None}
                       for r in earlier["rows"] if r["defense"] == "cube"]
    kept.write_text(json.dumps(earlier))
    security.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[str(kept)]))
    md = (out / "results.md").read_text()
    assert "| 13.0 (+0.0) ✗* | 10.0 (+0.0) | 13.0 (+0.0) ✗* |" in md     # the victim's range, shared
