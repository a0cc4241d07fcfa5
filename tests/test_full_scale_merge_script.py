"""benchmarks/full_scale_merge.py: the newest row wins; an older row is carried only where the options
differ in nothing but one it records it could not have been altered by, and only from the same victim."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RETRY_ON = {"bedkd-guarded": {"scan": {"label_check_counter_retry": True, "evidence": 8.0}}, "none": {},
            "bedkd-reference": {}}
RETRY_OFF = {"bedkd-guarded": {"scan": {"label_check_counter_retry": False, "evidence": 8.0}}, "none": {},
             "bedkd-reference": {}}
VICTIM = {"train_rows": 100, "poisoned_rows": 10, "poison_test_rows": 50, "victim_cacc": 90.0, "victim_asr": 100.0,
          "floor_asr": 8.0, "clean_model_cacc": 91.0}


def _row(attack, defense, **kw):
    return {"status": "ok", "dataset": "sst2", "attack": attack, "defense": defense, "victim_key": f"k-{attack}",
            **VICTIM, "asr": 100.0 if defense == "none" else 3.0, "cacc_change": 0.0, **kw}


def _table(folder: Path, defenses: dict, rows: list[dict], code: str) -> Path:
    folder.mkdir(parents=True)
    meta = {"command": "bedkd bench", "date": "2026-12-04", "code_version": code, "units": "percent",
            "setup": {"attacks": ["badnets", "addsent", "sos", "ep"], "defenses": defenses}}
    (folder / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    return folder / "results.json"


def _merge(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "full_scale_merge.py"), *map(str, paths)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_older_rows_are_carried_only_where_the_changed_option_could_not_have_altered_them(tmp_path):
    new = _table(tmp_path / "new", RETRY_ON, [_row("badnets", "none"), _row("badnets", "bedkd-guarded", asr=2.0),
                                             _row("ep", "none")], "v2")
    old = _table(tmp_path / "old", RETRY_OFF, [
        _row("badnets", "bedkd-guarded", asr=50.0, selected_epoch=2),            # newer row exists: not used
        _row("addsent", "bedkd-guarded", selected_epoch=2, backdoor_found=True),  # kept an epoch: carried
        _row("sos", "bedkd-guarded", selected_epoch=0, backdoor_found=True, asr=100.0),  # the retry would act
        _row("ep", "bedkd-guarded", selected_epoch=3, victim_key="other", victim_asr=99.0),  # other victim
        _row("badnets", "bedkd-reference", victim_key="path-keyed", asr=1.0),    # same victim's digits: taken
    ], "v1")
    done = _merge(new, old)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| sst2 | badnets | 100.0 | 8.0 | 2.0 (+0.00) ✓ | 1.0 (+0.00) ✓ |" in out
    assert "| sst2 | addsent | - | - | 3.0 (+0.00) ✓ ‡ |" in out
    assert "sst2/sos/bedkd-guarded of" in out and "does not record that this cannot have altered it" in out
    assert "sst2/ep/bedkd-guarded of" in out and "its outcomes differ" in out
    assert "| sst2 | ep | 100.0 | 8.0 | not run |" in out
    assert "| bedkd-guarded | 2 | 2 | 1 |" in out


def test_a_row_whose_options_differ_otherwise_is_not_taken_and_a_missing_file_is_named(tmp_path):
    other = {"bedkd-guarded": {"scan": {"label_check_counter_retry": True, "evidence": 4.0}}}
    new = _table(tmp_path / "new", RETRY_ON, [_row("badnets", "none")], "v2")
    old = _table(tmp_path / "old", other, [_row("badnets", "bedkd-guarded", selected_epoch=2)], "v1")
    done = _merge(new, old)
    assert done.returncode == 0 and "options differ in scan.evidence" in done.stdout
    assert "| sst2 | badnets | 100.0 | 8.0 | not run |" in done.stdout
    done = _merge(new, tmp_path / "nowhere.json")
    assert done.returncode == 2 and "nowhere.json: not found" in done.stderr


def test_a_row_made_without_the_rest_test_is_carried_where_it_records_that_the_test_does_not_act(tmp_path):
    both_on = {"bedkd-guarded": {"scan": {"label_check_counter_retry": True, "label_check_unexplained": True}}}
    retry_only = {"bedkd-guarded": {"scan": {"label_check_counter_retry": True}}}
    neither = {"bedkd-guarded": {"scan": {}}}
    new = _table(tmp_path / "new", both_on, [_row("badnets", "none")], "v3")
    mid = _table(tmp_path / "mid", retry_only, [
        _row("addsent", "bedkd-guarded", backdoor_found=True, trigger_found="cf", unexplained_acts=False),  # carried
        _row("sos", "bedkd-guarded", backdoor_found=True, trigger_found="cf", unexplained_acts=True),  # it acts
        _row("ep", "bedkd-guarded", backdoor_found=True, trigger_found="cf"),     # not on record, not screened
    ], "v2")
    old = _table(tmp_path / "old", neither, [
        _row("badnets", "bedkd-guarded", backdoor_found=True, trigger_found=None, selected_epoch=2),  # both: carried
    ], "v1")
    done = _merge(new, mid, old)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| sst2 | addsent | - | - | 3.0 (+0.00) ✓ ‡ |" in out and "| sst2 | badnets | 100.0 | 8.0 | 3.0 (+0.00) ✓ ‡ |" in out
    assert "sst2/sos/bedkd-guarded of" in out and "sst2/ep/bedkd-guarded of" in out
