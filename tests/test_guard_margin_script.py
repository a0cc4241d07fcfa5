"""benchmarks/guard_margin.py: the guard's held-out drop beside the test CACC change, per cached cell."""
from __future__ import annotations

import json
import sys

import pytest
from conftest import load_benchmark

script = load_benchmark("guard_margin")


def _cell(path, drop, se, change, selection="guarded", victim="v1"):
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"config": {"akd": {"selection": selection, "max_cacc_drop": 1.0}}, "data": {"val_rows": 232},
              "start": {"val_acc_weighted": 0.90},
              "epochs": [{"val_acc_weighted": 0.95, "val_change_se": 0.01},
                         {"val_acc_weighted": 0.90 - drop / 100, "val_change_se": se / 100}],
              "selected_epoch": 2}
    path.write_text(json.dumps({"row": {"dataset": "sst2", "attack": "stylebkd", "victim_key": victim,
                                        "cacc_change": change, "asr": 8.0, "code_version": "c"},
                                "details": {"report": report}}))


def test_cells_are_split_by_whether_the_held_out_drop_was_within_the_guards_point(tmp_path):
    work = tmp_path / "work"
    _cell(work / "cells/sst2/stylebkd/v1/bedkd.json", drop=2.4, se=2.4, change=-5.8)
    _cell(work / "cells/sst2/stylebkd/v2/bedkd-guarded.json", drop=0.5, se=1.8, change=0.4, victim="v2")
    _cell(work / "cells/sst2/stylebkd/v3/bedkd.json", drop=3.0, se=1.0, change=-3.0, selection="last", victim="v3")
    (work / "cells/sst2/stylebkd/v3/none.json").write_text(json.dumps({"row": {}}))
    rows = script.cells(work)
    assert [(r["cell"].split("/")[-2], round(r["held_out_drop"], 6), r["guard_se"]) for r in rows] == \
        [("v1", 2.4, 2.0), ("v2", 0.5, 2.0)]              # the cell chosen otherwise and the victim row left out
    md = script.markdown(rows, {"command": "c", "date": "d", "code_version": "v", "workdir": str(work)})
    assert "| within max_cacc_drop | 1 | 1 | 0 | +0.4 |" in md
    assert "| beyond it, within the noise margin | 1 | 1 | 1 | -5.8 |" in md
    assert md.index("v1/bedkd.json") < md.index("v2/bedkd-guarded.json")        # the largest drop first


def test_a_folder_that_is_not_a_workdir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["guard_margin.py", "--workdir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert script.main() == 2
    assert "no cells/ folder" in capsys.readouterr().err and not (tmp_path / "o").exists()


def _replay_cell(path, accs, selected, reset=(), victim="v", asr=3.0, change=-4.0, tests=None):
    """A guarded cell whose records are ``accs`` (start first), the backdoor proxy falling each epoch;
    ``tests``: each record's (CACC, ASR) on the test rows, as --trace-epochs records them."""
    from bedkd.defenses.purifiers.akd import AKDConfig
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = AKDConfig(selection="guarded", max_cacc_drop=1.0, epochs=len(accs) - 1, patience=None)

    def record(i, acc):
        return {"epoch": i, "trust_loss": 0.1, "punish_loss": 0.5, "val_acc": acc, "val_acc_weighted": acc,
                "flag_agreement": 1.0 - 0.1 * i, "trigger_asr": None, "clean_to_target": None,
                "val_change_se": 0.02}
    def traced(i, acc):
        return {**record(i, acc), **({"test": {"cacc": tests[i][0], "asr": tests[i][1]}} if tests else {})}
    report = {"config": {"akd": cfg.to_dict()}, "data": {"val_rows": 232, "reset_embeddings": list(reset)},
              "start": traced(0, accs[0]), "epochs": [traced(i, a) for i, a in enumerate(accs) if i],
              "selected_epoch": selected}
    path.write_text(json.dumps({"row": {"dataset": "sst2", "attack": "badnets", "victim_key": victim,
                                        "cacc_change": change, "asr": asr, "floor_asr": 10.0, "defense": "bedkd", "status": "ok",
                                        "victim_cacc": 90.0, "victim_asr": 100.0, "cacc": 86.0},
                                "details": {"report": report}}))


def test_another_margin_is_replayed_on_each_cells_records(tmp_path):
    work = tmp_path / "work"
    # the last epoch is 3 points down (within 1 + 2 SE of 2 points): kept now; with no margin only epoch 1
    _replay_cell(work / "cells/sst2/badnets/a/bedkd-guarded.json", [0.90, 0.895, 0.87], selected=2)
    # every epoch 3 points down: with no margin the model before the cycles, the victim's own numbers
    _replay_cell(work / "cells/sst2/badnets/b/bedkd-guarded.json", [0.90, 0.87, 0.87], selected=2, victim="b")
    _replay_cell(work / "cells/sst2/badnets/c/bedkd.json", [0.90, 0.87, 0.87], selected=2, reset=["cf"], victim="c")
    # within a point throughout: the same epoch and numbers
    _replay_cell(work / "cells/sst2/badnets/d/bedkd.json", [0.90, 0.90, 0.895], selected=2, change=0.5, victim="d")
    items = {i["cell"].split("/")[3]: i for i in script.replay(work, ["guard_se=0", "guard_se=2"])}
    assert all(i["own_replay"] == i["selected_epoch"] for i in items.values())
    assert {k: i["rules"]["guard_se=0"]["outcome"] for k, i in items.items()} == \
        {"a": "other epoch", "b": "victim", "c": "reset only", "d": "same"}
    assert {i["rules"]["guard_se=2"]["outcome"] for i in items.values()} == {"same"}
    assert items["b"]["rules"]["guard_se=0"]["asr"] == 100.0 and items["b"]["rules"]["guard_se=0"]["meets_bar"] is False
    assert items["d"]["rules"]["guard_se=0"]["meets_bar"] is True and items["a"]["meets_bar"] is False
    md = script.markdown([], {"command": "c", "date": "d", "code_version": "v", "workdir": str(work),
                              "replay": list(items.values()), "replay_rules": ["guard_se=0"]})
    assert "gave its recorded epoch on 4 of 4 cells" in md
    assert "| preset cells | the model before the cycles, no embedding reset (the victim's numbers) | 1 | 0 | 0 | 1 | 0 |" \
        in md


def test_a_traced_cell_gives_another_epochs_test_numbers(tmp_path):
    work = tmp_path / "work"
    tests = [(90.0, 100.0), (89.5, 4.0), (86.0, 3.0)]
    _replay_cell(work / "cells/sst2/badnets/a/bedkd-guarded.0123abcd.json", [0.90, 0.895, 0.87], selected=2,
                 tests=tests)
    _replay_cell(work / "cells/sst2/badnets/b/bedkd-guarded.json", [0.90, 0.87, 0.87], selected=2, victim="b",
                 reset=["cf"], tests=tests)
    items = {i["cell"].split("/")[3]: i for i in script.replay(work, ["guard_se=0"])}
    assert items["a"]["preset_cell"]                                        # a traced cell's own key
    a = items["a"]["rules"]["guard_se=0"]
    assert (a["outcome"], a["epoch"], a["asr"], a["cacc_change"], a["meets_bar"]) == ("traced", 1, 4.0, -0.5, True)
    b = items["b"]["rules"]["guard_se=0"]           # the model before the cycles, its embeddings reset: the start's
    assert (b["outcome"], b["epoch"], b["asr"], b["meets_bar"]) == ("traced", 0, 100.0, False)
    assert items["a"]["passing_epochs"] == [1] and items["b"]["passing_epochs"] == [1]   # epoch 2: 4 points down
    md = script.markdown([], {"command": "c", "date": "d", "code_version": "v", "workdir": str(work),
                              "replay": list(items.values()), "replay_rules": ["guard_se=0"]})
    assert "Traced cells (`--trace-epochs`): 2; the kept epoch meets the bar on 0; some epoch" in md


@pytest.mark.parametrize("rule, error", [("guard_se=-1", "guard_se"), ("guard_sd=0", "did you mean 'guard_se'"),
                                         ("guard_se", "not name=value"), ("guard_se=x", "not a number")])
def test_a_malformed_replay_rule_is_refused(tmp_path, capsys, monkeypatch, rule, error):
    (tmp_path / "cells").mkdir()
    monkeypatch.setattr(sys, "argv", ["guard_margin.py", "--workdir", str(tmp_path), "--out", str(tmp_path / "o"),
                                      "--replay", rule])
    assert script.main() == 2
    err = capsys.readouterr().err
    assert f"--replay {rule}" in err and error in err and not (tmp_path / "o").exists()


def test_a_capped_margin_is_replayed(tmp_path):
    work = tmp_path / "work"
    _replay_cell(work / "cells/sst2/badnets/a/bedkd-guarded.json", [0.90, 0.895, 0.87], selected=2)
    item = script.replay(work, ["guard_margin_cap=1", "guard_margin_cap=2.5,guard_se=2"])[0]
    assert item["rules"]["guard_margin_cap=1"]["epoch"] == 1          # 3 points down: more than 1 + 1
    assert item["rules"]["guard_margin_cap=2.5,guard_se=2"]["outcome"] == "same"


def test_cells_are_counted_by_bands_of_held_out_drop():
    rows = [{"held_out_drop": d, "cacc_change": c, "victim_key": v}
            for d, c, v in ((-0.5, 1.0, "a"), (0.0, 0.2, "a"), (0.5, -1.2, "b"), (1.0, 0.0, "b"), (1.3, 0.4, "c"),
                            (3.9, -4.7, "d"), (5.0, -6.0, "e"))]
    got = [(low, high, [r["held_out_drop"] for r in sel]) for low, high, sel in script.drop_bands(rows)]
    assert got == [(None, 0.0, [-0.5, 0.0]), (0.0, 1.0, [0.5, 1.0]), (1.0, 2.0, [1.3]), (3.0, 4.0, [3.9]),
                   (4.0, None, [5.0])]
    md = script.markdown([dict(r, cell="c", dataset="d", attack="a", held_out_rows=1, held_out_se=0.1,
                                        selected_epoch=1, asr=None, max_cacc_drop=1.0) for r in rows],
                         {"command": "c", "date": "d", "code_version": "v", "workdir": "w"})
    assert "| (0, 1] | 2 | 1 | 1 | -0.6 | -1.2 |" in md and "| > 4 | 1 | 1 | 1 | -6.0 | -6.0 |" in md


def _main(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["guard_margin.py", *map(str, argv)])
    return script.main()


def test_records_replay_the_cells_when_the_workdir_is_gone(tmp_path, monkeypatch):
    work = tmp_path / "work"
    _replay_cell(work / "cells/sst2/badnets/a/bedkd-guarded.json", [0.90, 0.895, 0.87], selected=2)
    _replay_cell(work / "cells/sst2/badnets/b/bedkd.json", [0.90, 0.87, 0.87], selected=0, victim="b")
    assert _main(monkeypatch, "--workdir", work, "--out", tmp_path / "first", "--replay", "guard_se=0") == 0
    first = json.loads((tmp_path / "first/results.json").read_text())
    import shutil
    shutil.rmtree(work)
    assert _main(monkeypatch, "--records", tmp_path / "first/records.json", "--out", tmp_path / "again",
                 "--replay", "guard_se=0") == 0
    again = json.loads((tmp_path / "again/results.json").read_text())
    assert again["rows"] == first["rows"] and len(again["rows"]) == 1           # epoch 0 chose nothing: no row
    assert again["replay"] == first["replay"] and len(again["replay"]) == 2
    assert again["replay"][0]["preset_cell"] and again["replay"][0]["rules"]["guard_se=0"]["outcome"] == "other epoch"
    assert "the records of" in (tmp_path / "again/results.md").read_text()


def test_a_cell_in_both_the_workdir_and_the_records_counts_once(tmp_path, monkeypatch):
    work = tmp_path / "work"
    _replay_cell(work / "cells/sst2/badnets/a/bedkd-guarded.json", [0.90, 0.895, 0.87], selected=2)
    saved = json.loads((work / "cells/sst2/badnets/a/bedkd-guarded.json").read_text())
    (work / "cells/sst2/badnets/a/bedkd-guarded.json").write_text(json.dumps({**saved, "key": "k1"}))
    assert _main(monkeypatch, "--workdir", work, "--out", tmp_path / "first") == 0
    _replay_cell(work / "cells/sst2/badnets/c/bedkd-guarded.json", [0.90, 0.90, 0.895], selected=2, victim="c")
    assert _main(monkeypatch, "--workdir", work, "--records", tmp_path / "first/records.json",
                 "--out", tmp_path / "both") == 0
    rows = json.loads((tmp_path / "both/results.json").read_text())["rows"]
    assert sorted(r["victim_key"] for r in rows) == ["c", "v"]


@pytest.mark.parametrize("content", ["not json", '{"rows": []}', '{"cells": [{"cell": "x"}]}'])
def test_a_file_that_is_not_records_is_refused_naming_it(tmp_path, capsys, monkeypatch, content):
    bad = tmp_path / "records.json"
    bad.write_text(content)
    assert _main(monkeypatch, "--records", bad, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a guard_margin records.json" in err and not (tmp_path / "o").exists()


def test_neither_a_workdir_nor_records_is_refused(tmp_path, capsys, monkeypatch):
    assert _main(monkeypatch, "--out", tmp_path / "o") == 2
    assert "--workdir, --records" in capsys.readouterr().err


def test_the_start_as_a_candidate_is_replayed_where_the_run_recorded_it(tmp_path, monkeypatch):
    from bedkd.defenses.purifiers.akd import AKDConfig
    cfg = AKDConfig(selection="guarded", max_cacc_drop=1.0, epochs=3, patience=None)

    def record(i, acc, trigger):
        return {"epoch": i, "trust_loss": 0.1, "punish_loss": 0.5, "val_acc": acc, "val_acc_weighted": acc,
                "flag_agreement": 0.5, "trigger_asr": trigger, "clean_to_target": 0.1, "val_change_se": 0.01}
    start = {**record(0, 0.90, 0.1), "as_returned": record(0, 0.91, 0.1)}    # a reset already took the trigger out
    report = {"config": {"akd": cfg.to_dict()}, "data": {"val_rows": 232, "reset_embeddings": ["cf"]},
              "start": start, "epochs": [record(1, 0.895, 0.1), record(2, 0.90, 0.12), record(3, 0.89, 0.1)],
              "selected_epoch": 2}
    path = tmp_path / "work/cells/sst2/badnets/v/bedkd-guarded.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"row": {"dataset": "sst2", "attack": "badnets", "victim_key": "v", "cacc_change": 0.1,
                                        "asr": 9.0, "floor_asr": 10.0, "defense": "bedkd-guarded", "status": "ok",
                                        "victim_cacc": 90.0, "victim_asr": 100.0, "cacc": 90.1},
                                "details": {"report": report}}))
    assert _main(monkeypatch, "--workdir", tmp_path / "work", "--out", tmp_path / "o",
                 "--replay", "start_candidate=true") == 0
    item = json.loads((tmp_path / "o/results.json").read_text())["replay"][0]
    assert item["own_replay"] == 2 and item["rules"]["start_candidate=true"]["epoch"] == 0
    assert item["rules"]["start_candidate=true"]["outcome"] == "reset only"       # its test numbers need a rerun
    del start["as_returned"]                      # a run from before the start was recorded: not known
    path.write_text(json.dumps({**json.loads(path.read_text()), "details": {"report": report}}))
    assert script.replay(tmp_path / "work", ["start_candidate=true"])[0]["rules"]["start_candidate=true"]["outcome"] \
        == "undetermined"


def test_a_traced_rerun_stands_for_its_untraced_twin(tmp_path):
    work = tmp_path / "work"
    _replay_cell(work / "cells/sst2/badnets/a/bedkd-guarded.json", [0.90, 0.895, 0.87], selected=2)
    _replay_cell(work / "cells/sst2/badnets/a/bedkd-guarded.0123abcd.json", [0.90, 0.895, 0.87], selected=2,
                 tests=[(90.0, 100.0), (89.5, 4.0), (86.0, 3.0)])
    _replay_cell(work / "cells/sst2/badnets/a/bedkd.json", [0.90, 0.895, 0.87], selected=2)     # other options
    cells = [c for c, _, _ in script.guarded_cells(work)]
    assert cells == ["cells/sst2/badnets/a/bedkd-guarded.0123abcd.json", "cells/sst2/badnets/a/bedkd.json"]


def test_a_counter_retried_cell_is_replayed_on_the_run_the_rule_would_have_kept(tmp_path):
    work = tmp_path / "work"
    tests = [(90.0, 100.0), (89.5, 4.0), (89.0, 3.0)]
    path = work / "cells/sst2/badnets/a/bedkd.json"
    _replay_cell(path, [0.90, 0.895, 0.89], selected=2, tests=tests)
    saved = json.loads(path.read_text())
    report = saved["details"]["report"]
    # the first run: every epoch 10 points down, none kept, so the counter cap's retry ran
    first = [{**r, "val_acc": 0.80, "val_acc_weighted": 0.80, "test": {"cacc": 80.0, "asr": 1.0}}
             for r in report["epochs"]]
    report["counter_retry"] = {"relabelled_rows": 700, "selected_epoch": 0, "epochs": first}
    report["config"]["scan"] = {"label_check_counter_retry": True}
    report["data"]["relabelled_rows"] = 300
    path.write_text(json.dumps(saved))
    # a cell that was not retried: a rule that keeps nothing of it would have retried
    other = work / "cells/sst2/badnets/b/bedkd.json"
    _replay_cell(other, [0.90, 0.895, 0.89], selected=2, victim="b", tests=tests)
    saved = json.loads(other.read_text())
    saved["details"]["report"]["config"]["scan"] = {"label_check_counter_retry": True}
    saved["details"]["report"]["data"]["relabelled_rows"] = 300
    other.write_text(json.dumps(saved))
    items = {i["cell"].split("/")[3]: i for i in script.replay(work, ["max_cacc_drop=20", "max_cacc_drop=0,guard_se=0"])}
    assert items["a"]["own_replay"] == 2 and items["b"]["own_replay"] == 2
    loose = items["a"]["rules"]["max_cacc_drop=20"]                # the first run's epoch 2 is within 20 points
    assert (loose["outcome"], loose["epoch"], loose["cacc_change"], loose["asr"]) == ("traced", 2, -10.0, 1.0)
    strict = items["a"]["rules"]["max_cacc_drop=0,guard_se=0"]     # nothing in either run: the model before them
    assert (strict["outcome"], strict["epoch"], strict["cacc_change"]) == ("victim", 0, 0.0)
    assert items["b"]["rules"]["max_cacc_drop=20"]["outcome"] == "same"
    assert items["b"]["rules"]["max_cacc_drop=0,guard_se=0"]["outcome"] == "undetermined"
