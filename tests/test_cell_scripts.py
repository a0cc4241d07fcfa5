"""benchmarks/epochs.py and benchmarks/punish_when_reuse.py on a hand-made cell record."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(epoch, trigger_asr, clean_to_target=0.1, punish_loss=0.5):
    return {"epoch": epoch, "val_acc_weighted": 0.8, "val_change_se": 0.01, "trigger_asr": trigger_asr,
            "clean_to_target": clean_to_target, "punish_loss": punish_loss}


def _report(proxies, punish_rows=33):
    start, *epochs = [_record(i, p + 0.1) for i, p in enumerate(proxies)]
    return {"start": start, "epochs": epochs, "selected_epoch": 2, "stop_reason": "completed all epochs",
            "data": {"punish_rows": punish_rows}}


def test_reuse_needs_no_punish_rows_or_a_proxy_above_the_tolerance_before_the_last_epoch():
    reuse = _load("punish_when_reuse")
    assert reuse.unchanged(_report([0.5, 0.3, 0.0]))[0]             # low only after the last cycle
    same, why = reuse.unchanged(_report([0.5, 0.03, 0.0]))
    assert not same and "cycle 2" in why
    assert reuse.unchanged(_report([0.0, 0.0], punish_rows=0))[0]
    assert reuse.unchanged({"epochs": []})[0]


def test_epochs_table_lists_the_start_and_every_epoch():
    epochs = _load("epochs")
    cell = {"row": {"dataset": "olid", "attack": "badnets", "defense": "bedkd", "victim_key": "abc",
                    "code_version": "v", "cacc": 80.0, "cacc_change": -1.5, "asr": 30.0, "floor_asr": 35.0},
            "details": {"report": _report([0.5, 0.3, 0.0])}}
    text = epochs.table(cell, "cell.json")
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[0] for r in rows] == ["| 0", "| 1", "| 2"]
    assert "change -1.50" in text and "`python benchmarks/epochs.py cell.json`" in text
