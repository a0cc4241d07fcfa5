"""benchmarks/victim_strength.py: the victim-only runs it plans and the table it writes from them."""
from __future__ import annotations

import argparse
import json

import pytest

from conftest import load_benchmark
from test_bench import DATA, needs_data

strength = load_benchmark("victim_strength")


def _args(**kw):
    base = dict(attack="stylebkd", triggers=None, rates=[0.1, 0.2], seeds=[0], targets=[0], datasets=["sst2"])
    return argparse.Namespace(**(base | kw))


def test_plan_gives_a_victim_only_run_per_rate_trigger_target_and_seed():
    runs = dict(strength.plan(_args(triggers=[1], targets=[0, 1])))
    assert sorted(runs) == ["s0-t0-stylebkd-1-r0.1", "s0-t0-stylebkd-1-r0.2", "s0-t1-stylebkd-1-r0.1",
                            "s0-t1-stylebkd-1-r0.2"]
    one = runs["s0-t1-stylebkd-1-r0.2"]
    assert one[one.index("--attack-rate") + 1] == "0.2"
    assert one[one.index("--attack-style") + 1] == strength.TRIGGERS["stylebkd"][1]
    assert one[one.index("--attack-target") + 1] == "1"
    words = dict(strength.plan(_args(attack="badnets", triggers=[2], rates=[0.05])))["s0-t0-badnets-2-r0.05"]
    assert words[words.index("--attack-trigger") + 1:] == strength.TRIGGERS["badnets"][2]


def test_plan_defaults_to_every_trigger_of_the_family():
    assert len(strength.plan(_args(attack="addsent", rates=[0.1]))) == len(strength.TRIGGERS["addsent"])


@pytest.mark.parametrize("bad, message", [(dict(triggers=[7]), "stylebkd has triggers 0-3"),
                                          (dict(rates=[1.5]), "between 0 and 1"),
                                          (dict(rates=[0.0]), "between 0 and 1")])
def test_plan_refuses_an_unknown_trigger_or_a_rate_outside_zero_to_one(bad, message):
    with pytest.raises(SystemExit, match=message):
        strength.plan(_args(**bad))


def _run_folder(root, name, rate, asr, defense="none"):
    row = {"dataset": "sst2", "attack": "stylebkd", "train_rows": 3000, "poisoned_rows": int(3000 * rate),
           "victim_cacc": 80.0, "victim_asr": asr, "floor_asr": 16.0, "clean_model_cacc": 86.5,
           "untriggered_asr": 20.0, "floor_untriggered_asr": 11.0, "victim_train_seconds": 150.0,
           "defense": defense, "status": "ok", "asr": asr, "cacc": 80.0}
    meta = {"command": f"bedkd bench --out {name}", "date": "2026-12-06T00:00:00+00:00", "machine": {},
            "code_version": "test", "units": "percent",
            "setup": {"seed": 0, "attack": {"target": 0, "rate": rate, "style": "lyrics", "triggers": []}}}
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps({"meta": meta, "rows": [row]}))


def test_report_lists_each_victim_by_rate_and_marks_the_strong_ones(tmp_path, monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run_folder(runs, "b", 0.3, 92.5)
    _run_folder(runs, "a", 0.1, 69.4)
    monkeypatch.setattr("sys.argv", ["victim_strength.py", "report"])
    assert strength.report(argparse.Namespace(runs=str(runs), out=str(out), title=None)) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["rate"] for r in rows] == [0.1, 0.3]            # sorted by rate within a victim's case
    table = (out / "results.md").read_text()
    assert "| 0.1 | 300 | 80.0 | 86.5 | -6.5 | 69.4 | 16.0 | 20.0 | 11.0 | no | 150 |" in table
    assert "| 0.3 | 900 | 80.0 | 86.5 | -6.5 | 92.5 | 16.0 | 20.0 | 11.0 | yes | 150 |" in table


def test_report_leaves_out_the_rows_of_defenses(tmp_path, monkeypatch):
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run_folder(runs, "a", 0.1, 69.4, defense="bedkd-guarded")
    monkeypatch.setattr("sys.argv", ["victim_strength.py", "report"])
    strength.report(argparse.Namespace(runs=str(runs), out=str(out), title=None))
    assert json.loads((out / "results.json").read_text())["rows"] == []


@needs_data
def test_a_style_runs_only_on_the_datasets_whose_pack_has_it():
    runs = dict(strength.plan(_args(triggers=[1, 3], rates=[0.2], datasets=["sst2", "olid"], data_dir=str(DATA))))

    def datasets(run):
        return run[run.index("--datasets") + 1:run.index("--attacks")]
    # OLID's poetry is for the dev split only; SST-2's tweets has no test file
    assert datasets(runs["s0-t0-stylebkd-1-r0.2"]) == ["sst2"] and datasets(runs["s0-t0-stylebkd-3-r0.2"]) == ["olid"]
