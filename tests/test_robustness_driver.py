"""benchmarks/robustness.py: the runs it plans and the table it writes from their results."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bedkd.attacks import ATTACKS
from bedkd.defenses.purifiers.bedkd import PRESETS

from conftest import load_benchmark
from test_bench import DATA, needs_data

robustness = load_benchmark("robustness")


def test_plan_can_start_at_a_later_trigger():
    args = argparse.Namespace(seeds=[2], targets=[1], attacks=["badnets", "synbkd"], triggers=1, first_trigger=1,
                              datasets=["sst2"])
    runs = dict(robustness.plan(args))
    assert sorted(runs) == ["s2-clean", "s2-t1-badnets-1"]      # SynBkd has one template only
    badnets = runs["s2-t1-badnets-1"]
    assert badnets[badnets.index("--attack-trigger") + 1:] == robustness.TRIGGERS["badnets"][1]


def test_plan_gives_every_seed_target_and_new_trigger_and_a_clean_run_per_seed():
    args = argparse.Namespace(seeds=[0, 1], targets=[0, 1], attacks=["badnets", "stylebkd", "synbkd"], triggers=2,
                              first_trigger=0, datasets=["sst2"])
    runs = dict(robustness.plan(args))
    assert len(runs) == 2 * ((2 + 2) + (2 + 2 + 1) + 1)           # SynBkd on SST-2: the pack's target 1 only
    assert "s0-t0-synbkd-0" not in runs
    badnets = runs["s1-t0-badnets-1"]
    assert badnets[badnets.index("--attack-trigger") + 1:] == robustness.TRIGGERS["badnets"][1]
    assert badnets[badnets.index("--attack-target") + 1] == "0" and badnets[badnets.index("--seed") + 1] == "1"
    style = runs["s0-t1-stylebkd-0"]
    assert style[style.index("--attack-style") + 1] == robustness.TRIGGERS["stylebkd"][0]
    assert "--attack-trigger" not in runs["s0-t1-synbkd-0"]
    assert runs["s0-clean"][runs["s0-clean"].index("--attacks") + 1] == "clean"
    for family, triggers in robustness.TRIGGERS.items():       # none is an attack's own default
        own = ATTACKS[family].default_style if family == "stylebkd" else getattr(ATTACKS[family], "default_triggers", ())
        own_words = {own} if isinstance(own, str) else {w.lower() for t in own for w in t.split()}
        for trigger in triggers:
            words = {trigger} if isinstance(trigger, str) else {w.lower() for t in trigger or [] for w in t.split()}
            if family == "addsent":          # sentences may share function words, never the sentence
                words, own_words = {" ".join(trigger).lower()}, {t.lower() for t in own}
            assert not words & own_words, (family, trigger)


def test_pairs_design_gives_each_target_every_trigger_and_every_seed_once():
    args = argparse.Namespace(seeds=[0, 1, 2], targets=[0, 1], attacks=["badnets", "synbkd"], triggers=3,
                              first_trigger=0, datasets=["sst2", "olid"], design="pairs")
    cells = robustness.cells(args)
    badnets = [c for c in cells if c[2] == "badnets"]
    assert len(badnets) == 6
    for target in (0, 1):
        mine = [c for c in badnets if c[1] == target]
        assert sorted(c[0] for c in mine) == [0, 1, 2] and sorted(c[3] for c in mine) == [0, 1, 2]
    # the cells the committed table was first built from are among them
    assert {(1, 0, 0), (2, 1, 1), (0, 0, 2)} <= {(c[0], c[1], c[3]) for c in badnets}
    assert sorted((c[0], c[1]) for c in cells if c[2] == "synbkd") == [(0, 1), (1, 1), (2, 1)]
    names = [name for name, _ in robustness.plan(args)]
    assert names[-3:] == ["s0-clean", "s1-clean", "s2-clean"]


def test_run_skips_the_runs_a_table_already_has(tmp_path, monkeypatch):
    table = tmp_path / "results.json"
    table.write_text(json.dumps({"meta": {}, "rows": [
        {"run": "s1-t0-badnets-0", "dataset": d, "defense": "bedkd-guarded", "status": "ok", **_case(1, 0)}
        for d in ("sst2", "olid")
    ] + [{"run": "s0-t1-badnets-0", "dataset": "sst2", "defense": "bedkd-guarded", "status": "ok", **_case(0, 1)}]}))
    planned = []
    monkeypatch.setattr(robustness, "run_plan", lambda runs, args: planned.extend(runs) or 0)
    args = argparse.Namespace(seeds=[0, 1, 2], targets=[0, 1], attacks=["badnets"], triggers=1, first_trigger=0,
                              datasets=["sst2", "olid"], design="pairs", defenses=["bedkd-guarded"],
                              skip_measured=str(table))
    assert robustness.run(args) == 0
    # s1-t0-badnets-0 is in the table for both datasets; s0-t1-badnets-0 for one only, so it runs
    assert [name for name, _ in planned] == ["s0-t1-badnets-0", "s0-clean", "s1-clean"]


@needs_data
def test_a_style_runs_only_where_the_pack_has_it_and_counts_as_measured_there(tmp_path, monkeypatch):
    # the pack has OLID's poetry paraphrases for the dev split only
    # (and SST-2's tweets without a test file): each dataset gets three of the four new styles
    args = argparse.Namespace(seeds=[0], targets=[0], attacks=["stylebkd"], triggers=None, first_trigger=0,
                              datasets=["sst2", "olid"], data_dir=str(DATA))
    runs = dict(robustness.plan(args))

    def datasets(run):
        return run[run.index("--datasets") + 1:run.index("--attacks")]
    assert [datasets(runs[f"s0-t0-stylebkd-{i}"]) for i in range(4)] == [["sst2", "olid"], ["sst2"],
                                                                           ["sst2", "olid"], ["olid"]]
    table = tmp_path / "results.json"
    table.write_text(json.dumps({"meta": {}, "rows": [
        {"dataset": "sst2", "defense": "bedkd-guarded", "status": "ok", **_case(0, 0, "poetry", "stylebkd")}]}))
    planned = []
    monkeypatch.setattr(robustness, "run_plan", lambda runs, args: planned.extend(runs) or 0)
    assert robustness.run(argparse.Namespace(**vars(args), design="grid", defenses=["bedkd-guarded"],
                                             skip_measured=str(table))) == 0
    assert [name for name, _ in planned] == ["s0-t0-stylebkd-0", "s0-t0-stylebkd-2", "s0-t0-stylebkd-3", "s0-clean"]


def _case(seed, target, trigger="zx vq jw", attack="badnets"):
    return {"seed": seed, "target": target, "trigger": trigger, "attack": attack}


def test_skip_measured_matches_the_case_not_the_run_name(tmp_path, monkeypatch):
    # collated tables carry renamed runs (``...-olid``); a clean model is matched on its seed
    table = tmp_path / "results.json"
    table.write_text(json.dumps({"meta": {}, "rows": [
        {"run": "x@s1-t0-badnets-0-olid", "dataset": "olid", "defense": "x", "status": "ok", **_case(1, 0)},
        {"run": "x@s0-t1-badnets-0", "dataset": "olid", "defense": "x", "status": "ok", **_case(0, 1, "qv xk wz")},
        {"run": "x@s1-clean-olid", "dataset": "olid", "defense": "x", "status": "ok", **_case(1, 1, "default", "clean")}]}))
    planned = []
    monkeypatch.setattr(robustness, "run_plan", lambda runs, args: planned.extend(runs) or 0)
    args = argparse.Namespace(seeds=[0, 1, 2], targets=[0, 1], attacks=["badnets"], triggers=1, first_trigger=0,
                              datasets=["olid"], design="pairs", ablation="x", skip_measured=str(table))
    assert robustness.run(args) == 0
    # s0-t1-badnets-0 has another trigger in the table, so it still runs
    assert [name for name, _ in planned] == ["s0-t1-badnets-0", "s0-clean"]


GUARDED_NOW = {part: cfg.to_dict() for part, cfg in zip(("dmm", "akd", "scan"), PRESETS["guarded"])}
OTHER = {**GUARDED_NOW, "akd": {**GUARDED_NOW["akd"], "guard_margin_cap": 2.0}}   # an ablation's options


def _run(path: Path, target: int, rows: list[dict], options: dict | None = None, seed: int = 0):
    """A run folder as ``bedkd bench`` writes it; BeDKD's rows ran with ``options`` (default: the
    ``guarded`` preset as it is now)."""
    path.mkdir(parents=True)
    options = GUARDED_NOW if options is None else options
    meta = {"command": "bedkd bench ...", "date": "2026-11-28", "machine": {}, "code_version": "x",
            "setup": {"seed": seed, "attack": {"target": target, "triggers": ["zx", "vq", "jw"], "style": None},
                      "defenses": {"none": {}, "bedkd-guarded": options, "bedkd": options}}}
    (path / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))


def _row(defense, asr, change, **extra):
    return {"status": "ok", "dataset": "sst2", "attack": "badnets", "defense": defense, "victim_cacc": 85.0,
            "victim_asr": 100.0, "floor_asr": 10.0, "cacc": 85.0 + change, "asr": asr, "cacc_change": change, **extra}


def test_report_marks_the_cells_that_miss_the_bar(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 11.0, -0.5,
                                                                        backdoor_found=True, target_found=0,
                                                                        unexplained_acts=False)])
    _run(runs / "s0-t1-badnets-0", 1, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 12.5, 0.0,
                                                                        backdoor_found=False),
                                       {"status": "failed: x", "dataset": "sst2", "attack": "badnets",
                                        "defense": "bedkd-reference"}])
    assert robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[])) == 0
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["rows"]) == 4 and len(saved["meta"]["runs"]) == 2
    # whether --scan-label-check-unexplained could have changed a row is kept (None where not recorded)
    assert sorted(str(r["unexplained_acts"]) for r in saved["rows"] if r["defense"] == "bedkd-guarded") == \
        ["False", "None"]
    md = (out / "results.md").read_text()
    assert "| bedkd-guarded | 2 | 1 |" in md                    # 12.5 > floor + 2 = 12: missed
    assert "| 11.0 (-0.5) | backdoor → 0 |" in md and "| 12.5 (+0.0) ✗ | no evidence |" in md
    assert "bedkd-reference" not in md                          # no finished row of it
    assert "| sst2 | badnets | 2 | 2 of 6 | 0 | 0 1 | 1 of 2 |" in md   # coverage: 3 triggers x 2 targets allowed
    assert "| sst2 | synbkd | 0 | 0 of 1 | - | - | 0 of 0 |" in md      # a family not run is listed: the pack's target only


def test_report_puts_other_defenses_of_the_runs_after_the_presets(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 11.0, -0.5)])
    _run(runs / "s0-t0-badnets-0-bedkd", 0, [_row("none", 100.0, 0.0), _row("bedkd", 3.0, -0.2)], OTHER)
    _run(runs / "excess@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 40.0, -0.1)], OTHER)
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| bedkd-guarded ASR (ΔCACC) | excess ASR (ΔCACC) | bedkd ASR (ΔCACC) |" in md    # runs in name order
    assert "| 11.0 (-0.5) | 40.0 (-0.1) ✗ | 3.0 (-0.2) |" in md and "| none |" not in md


def test_rerun_repeats_each_runs_command_into_the_new_folder(tmp_path, monkeypatch):
    import bench_runs
    old = tmp_path / "old"
    _run(old / "s1-t0-badnets-0", 0, [])
    saved = json.loads((old / "s1-t0-badnets-0" / "results.json").read_text())
    saved["meta"]["command"] = "bedkd bench --out /x/old/s1-t0-badnets-0 --workdir /w --attack-trigger 'a b' --seed 1"
    (old / "s1-t0-badnets-0" / "results.json").write_text(json.dumps(saved))
    calls = []
    monkeypatch.setattr(bench_runs.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert bench_runs.rerun(argparse.Namespace(source=str(old), runs=str(tmp_path / "new"))) == 0
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "bedkd", "bench"]
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "new" / "s1-t0-badnets-0")
    assert cmd[cmd.index("--attack-trigger") + 1] == "a b" and cmd[-2:] == ["--seed", "1"]
    calls.clear()                                       # the same cells, with the floors of more clean models
    assert bench_runs.rerun(argparse.Namespace(source=str(old), runs=str(tmp_path / "new"), floor_seeds=[0, 1])) == 0
    assert calls[0][-5:] == ["--seed", "1", "--floor-seeds", "0", "1"]
    _run(old / "broken", 1, [])                                          # not a bench command: a clear stop
    with pytest.raises(SystemExit, match="broken"):
        bench_runs.rerun(argparse.Namespace(source=str(old), runs=str(tmp_path / "new")))


def test_report_keeps_an_earlier_tables_cells_when_its_runs_are_gone(tmp_path):
    runs, out, new = tmp_path / "runs", tmp_path / "out", tmp_path / "new"
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 11.0, -0.5)])
    _run(runs / "s0-t1-badnets-0", 1, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 4.0, 0.0)])
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    for name in ("s0-t0-badnets-0", "s0-t1-badnets-0"):            # the runs folder is gone ...
        (runs / name / "results.json").unlink()
        (runs / name).rmdir()
    # ... and a new run adds `reference` to one case, on the same victim
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-reference", 0.5, -3.0)])
    robustness.report(argparse.Namespace(runs=str(runs), out=str(new), keep=[str(out / "results.json")]))
    md = (new / "results.md").read_text()
    assert "| 0.5 (-3.0) ✗ | 11.0 (-0.5) |" in md and "| - | 4.0 (+0.0) |" in md
    assert "| bedkd-reference | 1 | 0 |" in md and "| bedkd-guarded | 2 | 2 |" in md
    assert len(json.loads((new / "results.json").read_text())["rows"]) == 5


def test_summary_gives_the_cost_against_training_the_victim(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    for i, seconds in enumerate((100.0, 300.0, 200.0)):
        _run(runs / f"s{i}-t0-badnets-0", 0, [_row("none", 100.0, 0.0),
                                              _row("bedkd-guarded", 4.0, 0.0, defense_seconds=seconds,
                                                   victim_train_seconds=100.0)])
    _run(runs / "s9-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-reference", 4.0, 0.0)])
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| bedkd-guarded | 3 | 3 | 0 | 4.0 | 0.0 | 2.0 (1.0-3.0) |" in md
    assert "| bedkd-reference | 1 | 1 | 0 | 4.0 | 0.0 | - |" in md   # no timings recorded
    assert "Cost by stage" not in md                                 # no run recorded the stages


def test_the_cost_by_stage_splits_the_defenses_seconds(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    for i, (dmm, akd) in enumerate(((50.0, 100.0), (70.0, 0.0), (60.0, 200.0))):
        _run(runs / f"s{i}-t0-badnets-0", 0, [_row("none", 100.0, 0.0),
                                              _row("bedkd-guarded", 4.0, 0.0, defense_seconds=dmm + 20 + akd + 10,
                                                   victim_train_seconds=100.0, dmm_seconds=dmm, scan_seconds=20.0,
                                                   akd_seconds=akd)])
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| bedkd-guarded | 3 | 0.6 (0.5-0.7) | 0.2 (0.2-0.2) | 1.0 (0.0-2.0) | 0.1 (0.1-0.1) | 1.8 (1.0-2.9) |" in md


def test_report_gives_the_floor_range_and_counts_the_verdicts_that_turn_on_it(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    spread = {"floor_models": 3, "floor_asr_min": 9.0, "floor_asr_max": 14.0}
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0, **spread),
                                       _row("bedkd-guarded", 13.0, 0.0, backdoor_found=True, target_found=0, **spread)])
    _run(runs / "s0-t1-badnets-0", 1, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 13.0, 0.0)])
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| bedkd-guarded | 2 | 0 | 1 |" in md
    assert "| 100.0 | 10.0 (9.0-14.0) | 13.0 (+0.0) ✗* | backdoor → 0 |" in md
    assert "| 100.0 | 10.0 | 13.0 (+0.0) ✗ | no evidence |" in md


def test_a_cells_floor_range_shows_when_only_a_later_row_of_its_victim_has_it(tmp_path):
    # a newer run retrains a victim without --floor-seeds; an older defense row of it keeps the range
    runs, out = tmp_path / "runs", tmp_path / "out"
    spread = {"floor_models": 3, "floor_asr_min": 9.0, "floor_asr_max": 14.0}
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0),
                                       _row("bedkd-guarded", 4.0, 0.0, backdoor_found=True, target_found=0, **spread)])
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    assert "| 100.0 | 10.0 (9.0-14.0) | 4.0 (+0.0) | backdoor → 0 |" in (out / "results.md").read_text()


def test_a_row_without_the_floor_range_is_marked_by_its_victims_range_and_no_other(tmp_path):
    # the victim's range came with an older run; a newer run of the same victim measured one floor
    runs, out = tmp_path / "runs", tmp_path / "out"
    spread = {"floor_models": 3, "floor_asr_min": 9.0, "floor_asr_max": 14.0}
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0, **spread)])
    _run(runs / "s0-t0-badnets-1", 0, [_row("bedkd-guarded", 13.0, 0.0)])
    _run(runs / "s0-t1-badnets-0", 1, [_row("none", 100.0, 0.0, **spread)])
    other = {"victim_asr": 99.0}                                        # another victim of that case
    _run(runs / "s0-t1-badnets-1", 1, [_row("none", 99.0, 0.0, **other), _row("bedkd-guarded", 13.0, 0.0, **other)])
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| bedkd-guarded | 2 | 0 | 1 |" in md                       # one verdict turns on the floor
    assert "| 10.0 (9.0-14.0) | 13.0 (+0.0) ✗* |" in md
    assert "| 13.0 (+0.0) ✗ |" in md
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted(r["floor_asr_max"] is None for r in rows if r["defense"] == "bedkd-guarded") == [False, True]


def _ablation_args(tmp_path, **extra):
    base = dict(seeds=[0, 1, 2], targets=[1], attacks=["badnets"], triggers=1, first_trigger=0, datasets=["sst2"],
                design="pairs", defenses=["bedkd-guarded"], skip_measured=None, runs=str(tmp_path), workdir="w",
                train_limit=3000, reuse_any_version=False, data_dir=None, floor_seeds=None, ablation="measured-cp",
                bench_options=["--preset", "guarded", "--akd-reset-value", "measured"])
    return argparse.Namespace(**{**base, **extra})


def test_an_ablation_runs_bedkd_with_its_options_into_label_folders(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(robustness.bench_runs, "_call_each", lambda commands: called.extend(commands) or 0)
    args = _ablation_args(tmp_path)
    robustness.bench_runs.check_ablation(args)
    assert robustness.run(args) == 0
    name, cmd = called[0]
    assert name == "s0-t1-badnets-0"
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "measured-cp@s0-t1-badnets-0")
    defenses = cmd[cmd.index("--defenses") + 1:]
    assert defenses[:6] == ["none", "bedkd", "--preset", "guarded", "--akd-reset-value", "measured"]
    assert "bedkd-guarded" not in cmd


def test_trace_epochs_reaches_every_bench_call_of_a_plan_and_only_when_asked(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(robustness.bench_runs, "_call_each", lambda commands: called.extend(commands) or 0)
    plain = _ablation_args(tmp_path, ablation=None, bench_options=[], seeds=[0], targets=[0, 1])
    assert robustness.run(plain) == 0 and len(called) == 3               # both targets and the clean model
    assert all("--trace-epochs" not in cmd for _, cmd in called)
    called.clear()
    assert robustness.run(_ablation_args(tmp_path, ablation=None, bench_options=[], seeds=[0], targets=[0, 1],
                                         trace_epochs=True)) == 0
    assert len(called) == 3 and all(cmd.count("--trace-epochs") == 1 for _, cmd in called)
    assert all(cmd[cmd.index("--defenses") + 1:cmd.index("--defenses") + 3] == ["none", "bedkd-guarded"]
               for _, cmd in called)


def test_a_run_folder_holding_another_datasets_rows_stops_the_call_before_any_run(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(robustness.bench_runs, "_call_each", lambda commands: called.extend(commands) or 0)
    folder = tmp_path / "measured-cp@s0-t1-badnets-0"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"meta": {"setup": {"datasets": ["olid"]}}, "rows": []}))
    with pytest.raises(SystemExit, match=r"datasets olid\).*another --runs"):
        robustness.run(_ablation_args(tmp_path))
    assert called == [] and (folder / "results.json").is_file()
    (folder / "results.json").write_text(json.dumps({"meta": {"setup": {"datasets": ["sst2"]}}, "rows": []}))
    assert robustness.run(_ablation_args(tmp_path)) == 0 and called      # the same dataset: a resume


def test_an_ablation_skips_the_runs_a_table_has_under_its_label(tmp_path, monkeypatch):
    table = tmp_path / "results.json"
    table.write_text(json.dumps({"meta": {}, "rows": [
        {"run": "measured-cp@s0-t1-badnets-0", "dataset": "sst2", "defense": "measured-cp", "status": "ok",
         **_case(0, 1)},
        {"run": "s2-t1-badnets-1", "dataset": "sst2", "defense": "bedkd-guarded", "status": "ok",
         **_case(2, 1, "qv xk wz")}]}))
    planned = []
    monkeypatch.setattr(robustness, "run_plan", lambda runs, args: planned.extend(runs) or 0)
    robustness.run(_ablation_args(tmp_path, skip_measured=str(table), targets=[1, 0], triggers=2))
    # the ablation's own row skips s0-t1-badnets-0; the guarded row of s2-t1-badnets-1 does not count for it
    assert [n for n, _ in planned if "clean" not in n] == ["s1-t0-badnets-0", "s2-t1-badnets-1", "s2-t0-badnets-1"]


@pytest.mark.parametrize("options, label, says", [
    (["--preset", "guarded"], None, "need --ablation"),
    ([], "x", "give the bench options"),
    (["--preset", "guarded"], "a/b", "a label is"),
    (["--datasets", "sst2"], "x", "set by the plan"),
])
def test_an_ablation_is_refused_with_the_reason(tmp_path, options, label, says):
    with pytest.raises(SystemExit, match=says):
        robustness.bench_runs.check_ablation(_ablation_args(tmp_path, ablation=label, bench_options=options))


def test_an_ablation_with_an_option_bench_does_not_know_stops_before_any_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        robustness.bench_runs.check_ablation(_ablation_args(tmp_path, bench_options=["--akd-reset-valu", "base"]))
    assert stop.value.code == 2 and "--akd-reset-valu" in capsys.readouterr().err


def test_report_sets_each_other_defense_beside_guarded_on_the_cases_both_measured(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 8.0, -4.0)])
    _run(runs / "cap@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 9.0, -0.5)], OTHER)
    _run(runs / "s0-t1-badnets-0", 1, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 3.0, 0.2)])
    _run(runs / "cap@s0-t1-badnets-0", 1, [_row("none", 100.0, 0.0), _row("bedkd", 30.0, 0.0)], OTHER)
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| cap | 2 | 1 | 1 | 0 | 0 | 1 | 0 |" in md
    assert "- `cap`, a miss turned into a pass: sst2 badnets `zx vq jw` t0 s0: 8.0 (-4.0) ✗ → 9.0 (-0.5) (floor 10.0)" in md
    assert "- `cap`, a pass turned into a miss: sst2 badnets `zx vq jw` t1 s0: 3.0 (+0.2) → 30.0 (+0.0) ✗ (floor 10.0)" in md


def test_report_lists_every_case_of_reference_beside_guarded_even_where_both_agree(tmp_path):
    # item 5 compares against `reference` on every case, not only where the verdict changes
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 20.0, 0.5),
                                       _row("bedkd-reference", 30.0, 0.4)])
    _run(runs / "cap@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 25.0, 0.5)], OTHER)
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "- `bedkd-reference`, both miss: sst2 badnets `zx vq jw` t0 s0: 20.0 (+0.5) ✗ → 30.0 (+0.4) ✗" in md
    assert "- `cap`, both miss" not in md


def test_report_has_no_beside_section_without_a_guarded_cell_to_pair(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run(runs / "cap@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 9.0, -0.5)], OTHER)
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    assert "## Beside" not in (out / "results.md").read_text()


def test_report_splits_each_asr_miss_into_a_lean_and_what_the_trigger_adds(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    lean = dict(untriggered_asr=14.0, floor_untriggered_asr=8.0)        # trigger adds 2 beside the clean model's 2
    kept = dict(untriggered_asr=9.0, floor_untriggered_asr=8.0)         # trigger adds 21 beside 2
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 16.0, 0.0, **lean)])
    _run(runs / "s0-t1-badnets-0", 1, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 30.0, 0.0, **kept)])
    _run(runs / "s1-t1-badnets-0", 1, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 3.0, 0.0, **kept),
                                       _row("bedkd-reference", 40.0, 0.0)])
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    section = md.split("## Where the ASR misses come from")[1].split("The lean towards")[0]
    assert "| bedkd-guarded | sst2 | badnets | zx vq jw | 0 | 0 | 16.0 | 14.0 | 2.0 | 10.0 | 8.0 | 2.0 | a lean |" in section
    assert "| bedkd-guarded | sst2 | badnets | zx vq jw | 1 | 0 | 30.0 | 9.0 | 21.0 | 10.0 | 8.0 | 2.0 | the trigger |" \
        in section
    assert "| 40.0 | - | - | 10.0 | - | - | - |" in section        # nothing recorded to split it by
    assert " 3.0 |" not in section and section.count("| bedkd-") == 3   # a passing cell is not listed


def test_report_puts_each_clean_accuracy_miss_beside_the_clean_model_of_its_seed(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    clean = {"status": "ok", "dataset": "sst2", "attack": "clean", "defense": "none", "cacc": 84.0,
             "cacc_change": 0.0, "asr": None, "victim_asr": None, "floor_asr": None}
    _run(runs / "s0-clean", 0, [clean])
    # the victim is 1.5 points over the clean model; losing 1.2 of them ends 0.3 over it
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0, victim_cacc=85.5, cacc=85.5),
                                       _row("bedkd-guarded", 3.0, -1.2, victim_cacc=85.5, cacc=84.3)])
    # a real harm: 2.5 points under the clean model
    _run(runs / "s0-t1-badnets-0", 1, [_row("none", 100.0, 0.0, victim_cacc=84.5, cacc=84.5),
                                       _row("bedkd-guarded", 3.0, -3.0, victim_cacc=84.5, cacc=81.5)])
    # no clean model of seed 1: listed without the comparison; a pass within a point is not listed
    _run(runs / "s1-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 3.0, -1.5),
                                       _row("bedkd-reference", 3.0, -0.9)], seed=1)
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    section = (out / "results.md").read_text().split("## Where the clean-accuracy misses come from")[1] \
        .split("## Every cell")[0]
    assert "| bedkd-guarded | 3 | 2 | 1 | +1.00 (+0.50 to +1.50) |" in section
    assert "| bedkd-guarded | sst2 | badnets | zx vq jw | 0 | 0 | 85.50 | 84.30 | -1.20 | 84.00 | +0.30 |" in section
    assert "| bedkd-guarded | sst2 | badnets | zx vq jw | 1 | 0 | 84.50 | 81.50 | -3.00 | 84.00 | -2.50 |" in section
    assert "| bedkd-guarded | sst2 | badnets | zx vq jw | 0 | 1 | 85.00 | 83.50 | -1.50 | - | - |" in section
    assert "bedkd-reference" not in section


def _earlier(label: str) -> dict:
    """``guarded`` as the version ``label`` recorded its options."""
    return {part: {**o, "seed": 0} for part, o in robustness.GUARDED_VERSIONS[label].items()}


def test_columns_follow_the_options_a_run_recorded(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    before = {**GUARDED_NOW, "akd": {k: v for k, v in GUARDED_NOW["akd"].items()
                                     if k not in ("guard_margin_cap", "clean_prior_shift", "guard_prior_shift")}}
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 20.0, -3.0)], before)
    _run(runs / "fdr-over-dmm@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 7.9, 0.1)])
    _run(runs / "unlatest@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 7.902, 0.1)],
         _earlier("guarded-v12"))
    _run(runs / "unbacked@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 7.905, 0.1)],
         _earlier("guarded-v11"))
    _run(runs / "unsigned@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 7.91, 0.1)],
         _earlier("guarded-v10"))
    _run(runs / "no-piece@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 7.92, 0.1)],
         _earlier("guarded-v9"))
    _run(runs / "no-spare@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 7.95, 0.1)],
         _earlier("guarded-v8"))
    _run(runs / "no-tokens@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 8.0, 0.1)],
         _earlier("guarded-v7"))
    _run(runs / "no-rest@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 8.1, 0.1)],
         _earlier("guarded-v6"))
    _run(runs / "no-retry@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 8.2, 0.1)],
         _earlier("guarded-v5"))
    _run(runs / "shift-test@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 8.5, 0.1)],
         _earlier("guarded-v4"))
    _run(runs / "lc-relabel@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 9.0, 0.2)],
         _earlier("guarded-v3"))
    _run(runs / "shift-guard@s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 12.0, 0.4)],
         _earlier("guarded-v2"))
    _run(runs / "v1@s1-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd", 21.0, -2.0)], _earlier("guarded-v1"),
         seed=1)
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    saved = json.loads((out / "results.json").read_text())
    assert sorted((r["defense"], r["seed"], r["asr"]) for r in saved["rows"] if r["defense"] != "none") == [
        ("bedkd-guarded", 0, 7.9), ("guarded-v1", 0, 20.0), ("guarded-v1", 1, 21.0), ("guarded-v10", 0, 7.91),
        ("guarded-v11", 0, 7.905), ("guarded-v12", 0, 7.902), ("guarded-v2", 0, 12.0), ("guarded-v3", 0, 9.0), ("guarded-v4", 0, 8.5), ("guarded-v5", 0, 8.2),
        ("guarded-v6", 0, 8.1), ("guarded-v7", 0, 8.0), ("guarded-v8", 0, 7.95), ("guarded-v9", 0, 7.92)]
    assert saved["meta"]["columns_by_options"] and saved["meta"]["table_version"] == robustness.TABLE_VERSION
    md = (out / "results.md").read_text()
    assert "| bedkd-guarded | 1 | 0 | 0 | 1 | 0 | 0 | 0 |" in md.split("## Beside `guarded-v12`")[1]
    assert ("| 7.9 (+0.1) | 7.9 (+0.1) | 7.9 (+0.1) | 7.9 (+0.1) | 7.9 (+0.1) | 8.0 (+0.1) | 8.0 (+0.1) | 8.1 (+0.1) | 8.2 (+0.1) | 8.5 (+0.1) | 9.0 (+0.2) | 12.0 (+0.4) | "
            "20.0 (-3.0) ✗ |") in md
    assert "‡" not in md                   # the case has a `bedkd-guarded` cell of its own: nothing carried


def test_an_earlier_tables_rows_are_relabelled_before_they_are_kept(tmp_path):
    """Version 1 (before ``columns_by_options``): its `bedkd-guarded` rows ran without the shift guard,
    and its `shift-guard` ablation is `guarded-v2`; version 2: its `bedkd-guarded` is `guarded-v2` and
    its `lc-relabel` ablation `guarded-v3`; version 3: its `bedkd-guarded` is `guarded-v3` and its
    `shift-test` ablation `guarded-v4`; version 4: its `bedkd-guarded` is `guarded-v4` and its
    `fdr-over-dmm` ablation `guarded` as it is now. A new `bedkd-guarded` cell does not replace an
    earlier version's cell of the same case."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    tables = {1: ([("bedkd-guarded", 20.0, -3.0), ("shift-guard", 9.0, 0.2)], {}),
              2: ([("bedkd-guarded", 10.0, 0.1), ("lc-relabel", 7.0, 0.3)], {"columns_by_options": True}),
              3: ([("bedkd-guarded", 6.0, 0.1), ("shift-test", 5.0, 0.3)], {"columns_by_options": True,
                                                                          "table_version": 3}),
              4: ([("bedkd-guarded", 4.5, 0.1), ("fdr-over-dmm", 4.0, 0.3)], {"columns_by_options": True,
                                                                            "table_version": 4})}
    keep = []
    for version, (cells, meta) in tables.items():
        rows = [{**_row(d, asr, ch), "run": f"{d}@s0-t0-badnets-0", "seed": 0, "target": 0, "trigger": "zx vq jw",
                 "run_date": "d"} for d, asr, ch in cells]
        path = tmp_path / f"v{version}.json"
        path.write_text(json.dumps({"meta": {**meta, "runs": [{"run": r["run"], "date": "d"} for r in rows]},
                                    "rows": rows}))
        keep.append(str(path))
    _run(runs / "s1-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 8.0, 0.1)], seed=1)
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=keep))
    saved = json.loads((out / "results.json").read_text())
    mine = sorted((r["defense"], r["asr"]) for r in saved["rows"] if r["seed"] == 0)
    # the first table kept gives the cell: version 2's `lc-relabel` is `guarded-v3`, as version 3's `bedkd-guarded`
    # and version 5's `bedkd-guarded` (version 4's `fdr-over-dmm`) is `guarded-v5`, before the counter retry
    assert mine == [("guarded-v1", 20.0), ("guarded-v2", 9.0), ("guarded-v3", 7.0), ("guarded-v4", 5.0),
                    ("guarded-v5", 4.0)]
    kept_again = tmp_path / "v3.json"
    kept_again.write_text((out / "results.json").read_text())
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[str(kept_again)]))
    again = json.loads((out / "results.json").read_text())
    assert sorted((r["defense"], r["asr"]) for r in again["rows"]) == sorted((r["defense"], r["asr"])
                                                                          for r in saved["rows"])


@pytest.fixture
def backed_settled(monkeypatch):
    """The rows a test carries from before `guarded-v11` as if the backed-trigger screen settled each one (its
    own test: test_a_row_from_before_backed_triggers_is_carried_only_where_the_screen_settles_it), and from
    before `guarded-v12` as if the latest-epoch replay kept each one's epoch (its own test:
    test_a_row_from_before_the_latest_epoch_rule_is_carried_only_where_it_cannot_change_the_kept_epoch)."""
    monkeypatch.setitem(robustness.CARRIES_OVER, "guarded-v11", lambda row: True)
    monkeypatch.setitem(robustness.CARRIES_OVER, "guarded-v12", lambda row: True)


def _carried_by_replay(tmp_path, monkeypatch, version: str, rule: str, screen, attr: str, cases: list[dict],
                       outcomes: dict[int, str]) -> list[tuple]:
    """(seed, column, carried_from) of each row of ``version`` (one run per case, seed = its index) once a
    committed replay of ``rule`` (``outcomes``: seed -> outcome) is the screen ``robustness.<attr>`` reads."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    for seed, extra in enumerate(cases):
        _run(runs / f"s{seed}-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 8.0 + seed, 0.1,
                                                                                  **extra)],
             _earlier(version), seed=seed)
    replay = tmp_path / "replay"
    replay.mkdir()
    (replay / "results.json").write_text(json.dumps({"replay": [
        {**_row("bedkd-guarded", 8.0 + seed, 0.1), "rules": {rule: {"outcome": outcome}}}
        for seed, outcome in outcomes.items()]}))
    monkeypatch.setattr(robustness, attr, screen(replay))
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    saved = json.loads((out / "results.json").read_text())
    return sorted((r["seed"], r["defense"], r.get("carried_from")) for r in saved["rows"] if r["defense"] != "none")


def test_a_row_from_before_the_latest_epoch_rule_is_carried_only_where_it_cannot_change_the_kept_epoch(tmp_path,
                                                                                                      monkeypatch):
    """`guarded-v12` kept, without a found trigger, the epoch of least flag agreement. A row of it counts as
    `bedkd-guarded` where no backdoor or a trigger was found, no epoch passed the guard, or the committed
    replay keeps its epoch."""
    none = dict(backdoor_found=True, trigger_found=None)
    cases = [dict(backdoor_found=False, selected_epoch=None),                # 0: no evidence: carried
             dict(backdoor_found=True, trigger_found="cf", selected_epoch=2),   # 1: a found trigger: carried
             dict(none, selected_epoch=0),                                   # 2: no epoch within the guard: carried
             dict(none, selected_epoch=3),                                   # 3: the replay keeps epoch 3: carried
             dict(none, selected_epoch=1),                                   # 4: the replay keeps another epoch
             dict(none, selected_epoch=2)]                                   # 5: not replayed: unknown
    got = _carried_by_replay(tmp_path, monkeypatch, "guarded-v12", "untriggered_latest=true",
                             robustness.bench_runs.latest_screened, "LATEST_SCREENED", cases,
                             {3: "same", 4: "undetermined"})
    assert got == [(0, "bedkd-guarded", "guarded-v12"), (1, "bedkd-guarded", "guarded-v12"),
                   (2, "bedkd-guarded", "guarded-v12"), (3, "bedkd-guarded", "guarded-v12"), (4, "guarded-v12", None),
                   (5, "guarded-v12", None)]
    assert robustness.bench_runs.latest_screened(tmp_path / "none") == {}


def test_a_row_from_before_backed_triggers_is_carried_only_where_the_screen_settles_it(tmp_path, monkeypatch):
    """`guarded-v11` had no backed flip line. A row of it counts as `bedkd-guarded` where it found no backdoor
    or the committed screen settles that no label without a hit has a candidate at the line."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    cases = [dict(backdoor_found=False),                              # 0: no evidence: carried
             dict(backdoor_found=True, trigger_found="cf"),           # 1: screened, cannot act: carried
             dict(backdoor_found=True, trigger_found=None),           # 2: screened, could act
             dict(backdoor_found=True, trigger_found="cf")]           # 3: not screened
    for seed, extra in enumerate(cases):
        _run(runs / f"s{seed}-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 8.0 + seed, 0.1,
                                                                                  **extra)],
             _earlier("guarded-v11"), seed=seed)
    screen = tmp_path / "screen"
    screen.mkdir()
    (screen / "results.json").write_text(json.dumps({"rows": [
        {**_row("bedkd-guarded", 8.0 + seed, 0.1), "could_act": could} for seed, could in ((1, False), (2, True))]}))
    monkeypatch.setattr(robustness, "BACKED_SCREENED", robustness.bench_runs.backed_screened(screen))
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    saved = json.loads((out / "results.json").read_text())
    got = sorted((r["seed"], r["defense"], r.get("carried_from")) for r in saved["rows"] if r["defense"] != "none")
    assert got == [(0, "bedkd-guarded", "guarded-v11"), (1, "bedkd-guarded", "guarded-v11"), (2, "guarded-v11", None),
                   (3, "guarded-v11", None)]
    assert robustness.bench_runs.backed_screened(tmp_path / "none") == {}


def test_a_row_from_before_the_signed_proxy_is_carried_only_where_it_cannot_change_the_kept_epoch(tmp_path,
                                                                                                  monkeypatch,
                                                                                                  backed_settled):
    """`guarded-v10` ranked epochs by the proxy clipped at zero. A row of it counts as `bedkd-guarded`
    where no trigger was found, no epoch passed the guard, or the committed replay keeps its epoch."""
    found = dict(backdoor_found=True, trigger_found="cf", unexplained_acts=False)
    cases = [dict(found, selected_epoch=3),                          # 0: the replay keeps epoch 3: carried
             dict(found, selected_epoch=4),                          # 1: the replay keeps another epoch
             dict(found, selected_epoch=5),                          # 2: not replayed: unknown
             dict(found, selected_epoch=0),                          # 3: no epoch passed the guard: carried
             dict(backdoor_found=True, trigger_found=None, selected_epoch=2)]   # 4: no trigger: carried
    got = _carried_by_replay(tmp_path, monkeypatch, "guarded-v10", "signed_proxy=true",
                             robustness.bench_runs.signed_proxy_screened, "SIGNED_SCREENED", cases,
                             {0: "same", 1: "other epoch"})
    assert got == [(0, "bedkd-guarded", "guarded-v10"), (1, "guarded-v10", None), (2, "guarded-v10", None),
                   (3, "bedkd-guarded", "guarded-v10"), (4, "bedkd-guarded", "guarded-v10")]
    assert robustness.bench_runs.signed_proxy_screened(tmp_path / "none") == {}


def test_rows_no_change_since_can_alter_are_carried_into_guarded_and_marked(tmp_path, monkeypatch, backed_settled):
    """The counter retry (since `guarded-v5`) acts only after a run that found a backdoor and kept no
    epoch; the rest test (since `guarded-v6`) only on a found trigger's label where it reaches its
    line; the trigger-word tokens (since `guarded-v7`) only where a candidate word could get one. A row counts as `bedkd-guarded` (marked) where every change since its version cannot act, as
    the row records or a screen shows; sparing rows relabelled towards a found trigger's target (since
    `guarded-v8`) only where the label check finds another label or the rest test acts. Otherwise a row
    stays where it was measured; a table kept again carries the same rows once."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    cases = [("guarded-v5", dict(backdoor_found=True, selected_epoch=3)),                       # 0: carried
             ("guarded-v5", dict(backdoor_found=True, selected_epoch=0)),                       # 1: retry could act
             ("guarded-v5", dict(backdoor_found=False, selected_epoch=0, trigger_found=None)),  # 2: carried
             ("guarded-v5", dict(backdoor_found=True, selected_epoch=3, trigger_found="cf")),   # 3: rest test unknown
             ("guarded-v6", dict(backdoor_found=True, trigger_found="cf", unexplained_acts=False)),  # 4: carried
             ("guarded-v6", dict(backdoor_found=True, trigger_found="cf", unexplained_acts=True)),   # 5: it acts
             ("guarded-v6", dict(backdoor_found=True, trigger_found="cf", floor_asr=11.0)),     # 6: screened below
             ("guarded-v7", dict(backdoor_found=True, trigger_found="jt", unexplained_acts=False)),  # 7: tokens screened
             ("guarded-v7", dict(backdoor_found=True, trigger_found="jt")),                     # 8: tokens could act
             ("guarded-v6", dict(backdoor_found=True, trigger_found="cf", unexplained_acts=False)),   # 9: as 8
             ("guarded-v8", dict(backdoor_found=True, trigger_found="cf", unexplained_acts=False)),   # 10: screened
             ("guarded-v8", dict(backdoor_found=True, trigger_found="cf", unexplained_acts=True)),    # 11: rest acts
             ("guarded-v8", dict(backdoor_found=True, trigger_found="cf", unexplained_acts=False))]   # 12: could act
    for seed, (version, extra) in enumerate(cases):
        _run(runs / f"s{seed}-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 8.0 + seed, 0.1,
                                                                                  **extra)],
             _earlier(version), seed=seed)
    row6 = {**_row("bedkd-guarded", 14.0, 0.1), "floor_asr": 11.0}
    monkeypatch.setattr(robustness, "SCREENED", {robustness.bench_runs.run_digits(row6): False})   # settled
    no_tokens = [_row("bedkd-guarded", 12.0, 0.1), row6, _row("bedkd-guarded", 15.0, 0.1)]          # rows 4, 6, 7
    monkeypatch.setattr(robustness, "ISOLATE_SCREENED", {robustness.bench_runs.run_digits(r): False for r in no_tokens})
    no_other_label = no_tokens + [_row("bedkd-guarded", 18.0 + d, 0.1) for d in (0, 1)]             # rows 10, 11
    monkeypatch.setattr(robustness, "TOWARDS_SCREENED",
                        {robustness.bench_runs.run_digits(r): False for r in no_other_label}
                        | {robustness.bench_runs.run_digits(_row("bedkd-guarded", 20.0, 0.1)): True})      # row 12
    monkeypatch.setattr(robustness, "SIGNED_SCREENED",            # the signed proxy keeps their epochs
                        {robustness.bench_runs.run_digits(_row("bedkd-guarded", 8.0 + seed, 0.1, **extra)): False
                         for seed, (_, extra) in enumerate(cases)} | {robustness.bench_runs.run_digits(row6): False})
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    saved = json.loads((out / "results.json").read_text())
    got = sorted((r["seed"], r["defense"], r.get("carried_from")) for r in saved["rows"] if r["defense"] != "none")
    assert got == [(0, "bedkd-guarded", "guarded-v5"), (1, "guarded-v5", None), (2, "bedkd-guarded", "guarded-v5"),
                   (3, "guarded-v5", None), (4, "bedkd-guarded", "guarded-v6"), (5, "guarded-v6", None),
                   (6, "bedkd-guarded", "guarded-v6"), (7, "bedkd-guarded", "guarded-v7"), (8, "guarded-v7", None),
                   (9, "guarded-v6", None), (10, "bedkd-guarded", "guarded-v8"), (11, "guarded-v8", None),
                   (12, "guarded-v8", None)]
    md = (out / "results.md").read_text()
    assert ("measured as an earlier version (6 of 6: `guarded-v8` 1, `guarded-v7` 1, `guarded-v6` 2, `guarded-v5` 2)"
            in md)
    assert "| 8.0 (+0.1)‡ | - | - |" in md and "| - | - | 9.0 (+0.1) |" in md
    kept = tmp_path / "kept.json"
    kept.write_text((out / "results.json").read_text())
    robustness.report(argparse.Namespace(runs=str(tmp_path / "none"), out=str(out), keep=[str(kept)]))
    again = json.loads((out / "results.json").read_text())
    assert sorted((r["seed"], r["defense"], r.get("carried_from")) for r in again["rows"]
                  if r["defense"] != "none") == got


def test_a_screen_settles_a_run_only_where_every_screen_of_it_says_the_option_does_not_act(tmp_path):
    row = _row("bedkd-guarded", 4.0, 0.2, backdoor_found=True, trigger_found="cf")
    for name, acts in (("a", False), ("b", None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"rows": [{**row, "acts": acts}]}))
    other = {**row, "asr": 5.0}
    (tmp_path / "a" / "results.json").write_text(json.dumps({"rows": [{**row, "acts": False},
                                                                      {**other, "acts": False}]}))
    screened = robustness.bench_runs.unexplained_screened(tmp_path)
    assert robustness.bench_runs.unexplained_cannot_act(other, screened)
    assert not robustness.bench_runs.unexplained_cannot_act(row, screened)        # screen b did not settle it
    assert not robustness.bench_runs.unexplained_cannot_act({**row, "asr": 6.0}, screened)   # never screened
    assert robustness.bench_runs.unexplained_cannot_act({**row, "asr": 6.0, "unexplained_acts": False}, screened)


def test_report_gives_the_lean_towards_the_target_of_victims_and_defended_models(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    for seed, (victim, after) in enumerate([(14.0, 12.0), (18.0, 9.0)]):
        _run(runs / f"s{seed}-t0-badnets-0", 0, [_row("none", 100.0, 0.0, untriggered_asr=victim),
                                                 _row("bedkd-guarded", 30.0, 0.0, untriggered_asr=after,
                                                      floor_untriggered_asr=10.0)], seed=seed)
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    assert "| sst2 | 0 | bedkd-guarded | 2 | +6.0 (+4.0 to +8.0) | +0.5 (-1.0 to +2.0) |" in md


def test_an_ablation_with_a_versions_options_skips_that_versions_rows(tmp_path, monkeypatch):
    # the report puts such an ablation's rows in the version's column, so the table's rows there count
    table = tmp_path / "results.json"
    table.write_text(json.dumps({"meta": {}, "rows": [
        {"run": "s0-t1-badnets-0", "dataset": "sst2", "defense": "bedkd-guarded", "status": "ok", **_case(0, 1)},
        {"run": "s1-t0-badnets-0", "dataset": "sst2", "defense": "guarded-v3", "status": "ok", **_case(1, 0)}]}))
    planned = []
    monkeypatch.setattr(robustness, "run_plan", lambda runs, args: planned.extend(runs) or 0)
    now = dict(ablation="again", bench_options=["--preset", "guarded"], skip_measured=str(table), targets=[1, 0])
    robustness.run(_ablation_args(tmp_path, **now))
    assert [n for n, _ in planned if "clean" not in n] == ["s1-t0-badnets-0"]
    planned.clear()
    v3 = ["--preset", "guarded", "--no-scan-label-check-shift", "--scan-label-check-shift-fdr", "0",
          "--no-scan-label-check-over-dmm", "--no-scan-label-check-counter-retry", "--no-scan-label-check-unexplained",
          "--no-akd-isolate-trigger-words", "--akd-isolate-keep", "always", "--scan-label-check-towards-target", "all",
          "--no-akd-signed-proxy", "--scan-trigger-flip-backed", "0", "--no-akd-untriggered-latest"]
    robustness.run(_ablation_args(tmp_path, **{**now, "bench_options": v3}))
    assert [n for n, _ in planned if "clean" not in n] == ["s0-t1-badnets-0"]
    planned.clear()
    robustness.run(_ablation_args(tmp_path, **{**now, "bench_options": [*v3, "--akd-guard-margin-cap", "2"]}))
    assert [n for n, _ in planned if "clean" not in n] == ["s0-t1-badnets-0", "s1-t0-badnets-0"]


def test_one_row_of_a_case_is_carried_when_two_runs_of_a_version_measured_it():
    row = {"dataset": "sst2", "attack": "badnets", "trigger": "zx vq jw", "target": 0, "seed": 0,
           "defense": "guarded-v6", "backdoor_found": False, "asr": 3.0}
    rows = robustness.carried_over([row, {**row, "asr": 3.5}])
    assert [(r["defense"], r.get("carried_from")) for r in rows] == [("bedkd-guarded", "guarded-v6"),
                                                                     ("guarded-v6", None)]


def test_report_lays_guardeds_cells_out_as_the_issues_grid(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 11.0, -0.5)])
    _run(runs / "s2-t1-badnets-0", 1, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 12.5, 0.0)], seed=2)
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    md = (out / "results.md").read_text()
    grid = md.split("## The grid")[1].split("\n## ")[0]
    assert "**sst2**: 1 of 2 cells meet the bar." in grid
    assert "| attack | trigger | t0 s0 | t0 s1 | t0 s2 | t1 s0 | t1 s1 | t1 s2 |" in grid
    assert "| badnets | zx vq jw | 11.0 ✓ | - | - | - | - | 12.5 ✗ |" in grid
    assert "| badnets | qv xk wz | - | - | - | - | - | - |" in grid        # a new trigger not run yet
    assert "| synbkd | default | n/a | n/a | n/a | - | - | - |" in grid     # binary: the pack's target only


@needs_data
def test_grid_marks_a_style_the_pack_lacks_for_a_dataset_not_applicable(tmp_path, monkeypatch):
    monkeypatch.setenv("BEDKD_DATA_DIR", str(DATA))
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 100.0, 0.0, dataset="olid"),
                                       _row("bedkd-guarded", 11.0, -0.5, dataset="olid")])
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    grid = (out / "results.md").read_text().split("## The grid")[1].split("\n## ")[0]
    assert "| stylebkd | poetry | n/a | n/a | n/a | n/a | n/a | n/a |" in grid     # OLID's poetry: dev split only
    assert "| stylebkd | lyrics | - | - | - | - | - | - |" in grid
    assert "| stylebkd | tweets | - | - | - | - | - | - |" in grid
    coverage = (out / "results.md").read_text().split("## Coverage")[1]
    assert "| olid | stylebkd | 0 | 0 of 6 |" in coverage          # three styles x two targets


def test_grid_marks_a_cell_whose_victim_is_under_ninety_percent_asr(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    weak = dict(victim_asr=87.9)
    _run(runs / "s0-t0-badnets-0", 0, [_row("none", 87.9, 0.0, **weak), _row("bedkd-guarded", 11.0, -0.5, **weak)])
    _run(runs / "s1-t0-badnets-0", 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 9.0, 0.0)], seed=1)
    robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[]))
    grid = (out / "results.md").read_text().split("## The grid")[1].split("\n## ")[0]
    assert "**sst2**: 2 of 2 cells meet the bar (1 of them on a victim under 90 % ASR, °)." in grid
    assert "| badnets | zx vq jw | 11.0 ✓° | 9.0 ✓ | - |" in grid


def test_a_style_is_left_out_where_the_pack_has_no_styles_and_kept_where_there_is_no_pack(tmp_path):
    (tmp_path / "sst2" / "clean").mkdir(parents=True)
    pack = argparse.Namespace(datasets=["sst2"], data_dir=str(tmp_path))
    assert robustness.run_datasets(pack, "stylebkd", "poetry") == []
    nowhere = argparse.Namespace(datasets=["sst2"], data_dir=str(tmp_path / "nowhere"))
    assert robustness.run_datasets(nowhere, "stylebkd", "poetry") == ["sst2"]
    assert robustness.run_datasets(pack, "badnets", ["zx"]) == ["sst2"]


def test_a_poison_rate_goes_to_every_attack_run_and_counts_in_what_is_measured(tmp_path, monkeypatch):
    args = argparse.Namespace(seeds=[0], targets=[1], attacks=["badnets"], triggers=1, first_trigger=0,
                              datasets=["sst2"], design="grid", defenses=["bedkd-guarded"], attack_rate=0.2)
    runs = dict(robustness.plan(args))
    attack = runs["s0-t1-badnets-0"]
    assert attack[attack.index("--attack-rate") + 1] == "0.2" and "--attack-rate" not in runs["s0-clean"]
    table = tmp_path / "results.json"
    measured = {"dataset": "sst2", "defense": "bedkd-guarded", "status": "ok", **_case(0, 1)}
    planned = []
    monkeypatch.setattr(robustness, "run_plan", lambda runs, args: planned.extend(runs) or 0)
    # the committed table's rows record no rate: theirs is bench's default, so they are not this plan's cells
    table.write_text(json.dumps({"meta": {}, "rows": [measured]}))
    robustness.run(argparse.Namespace(**vars(args), skip_measured=str(table)))
    assert [name for name, _ in planned] == ["s0-t1-badnets-0", "s0-clean"]
    planned.clear()
    table.write_text(json.dumps({"meta": {}, "rows": [measured | {"rate": 0.2}]}))
    robustness.run(argparse.Namespace(**vars(args), skip_measured=str(table)))
    assert [name for name, _ in planned] == ["s0-clean"]
    assert "--attack-rate" not in dict(robustness.plan(argparse.Namespace(**{**vars(args), "attack_rate": None})))[
        "s0-t1-badnets-0"]


def _rated(path: Path, rate):
    _run(path, 0, [_row("none", 100.0, 0.0), _row("bedkd-guarded", 3.0, 0.0)])
    saved = json.loads((path / "results.json").read_text())
    saved["meta"]["setup"]["attack"]["rate"] = rate
    (path / "results.json").write_text(json.dumps(saved))


def test_report_says_a_tables_poison_rate_and_refuses_to_mix_rates(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _rated(runs / "s0-t0-badnets-0", 0.2)
    assert robustness.report(argparse.Namespace(runs=str(runs), out=str(out), keep=[])) == 0
    assert json.loads((out / "results.json").read_text())["meta"]["rate"] == 0.2
    md = (out / "results.md").read_text()
    assert "poisoned at rate 0.2 (`--attack-rate`), not the 0.1" in md
    # coverage has a column per guarded version with cells here only
    assert "| `bedkd-guarded` meets the bar |" in md and "guarded-v9" not in md
    assert "| sst2 | badnets | 1 | 1 of 6 | 0 | 0 | 1 of 1 |" in md
    _rated(runs / "s1-t0-badnets-0", 0.1)
    with pytest.raises(SystemExit, match="rates 0.1, 0.2; a table holds one rate"):
        robustness.report(argparse.Namespace(runs=str(runs), out=str(tmp_path / "out2"), keep=[]))
    default = tmp_path / "default"
    _rated(default / "s0-t0-badnets-0", 0.1)
    robustness.report(argparse.Namespace(runs=str(default), out=str(out), keep=[]))
    assert "rate" not in json.loads((out / "results.json").read_text())["meta"]
    assert "`--attack-rate`" not in (out / "results.md").read_text()
