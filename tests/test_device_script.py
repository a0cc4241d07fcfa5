"""benchmarks/device_full_scale.sh checks its plans before it starts anything (no data unpacked, no process)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_full_scale.sh"


def _run(tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "OUT": str(tmp_path), "T": str(tmp_path / "t"), **env})


def test_a_bad_plan_stops_the_script_before_anything_starts(tmp_path):
    done = _run(tmp_path, DATASETS="sst2", PLAN_sst2="guarded:clean,stylebkd guarded:clean")
    assert done.returncode == 2 and "PLAN_sst2: 'guarded:clean' names no attack" in done.stderr
    done = _run(tmp_path, DATASETS="olid", PLAN="guarded")
    assert done.returncode == 2 and "PLAN_olid: 'guarded' is not preset:attack" in done.stderr
    done = _run(tmp_path, DATASETS="agnews", PLAN_agnews="guarded:stylebkd gaurded:ep")
    assert done.returncode == 2 and "PLAN_agnews: 'gaurded' is not a preset" in done.stderr
    assert not (tmp_path / "t").exists() and list(tmp_path.iterdir()) == []


def test_the_bedkd_plan_runs_bedkd_with_extras_flags(tmp_path):
    """`bedkd:ATTACKS` plans the method with flags (EXTRA), beside the fixed presets: the plan passes its
    check and the script goes on to its temporary folder, which a file blocks here, so nothing runs."""
    (tmp_path / "blocker").write_text("")
    done = _run(tmp_path, DATASETS="agnews", PLAN_agnews="bedkd:stylebkd guarded:ep", T=str(tmp_path / "blocker" / "t"),
                EXTRA="--preset guarded --scan-label-check-unexplained")
    assert done.returncode == 1 and "not a preset" not in done.stderr and "not preset:attack" not in done.stderr
    assert "blocker" in done.stderr                                     # mkdir refused: stopped there


def test_without_out_it_says_what_out_is(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0 and "set OUT to the folder whose files come back" in done.stderr
