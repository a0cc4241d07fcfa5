"""benchmarks/trigger_runs_screen.py: which recorded cells `--scan-trigger-runs` changes, from the data
alone (the groups the trigger search tries), a row's run command found by its run name or variation."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_bench import DATA, needs_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import trigger_runs_screen  # noqa: E402


def test_a_row_finds_its_run_command_by_run_name_or_by_variation_and_dataset():
    meta = {"command": "python benchmarks/security.py run",
            "runs": [{"run": "rate-3", "command": "bedkd bench --datasets sst2 --out a"},
                     {"run": "rate-3", "command": "bedkd bench --datasets olid --out b"},
                     {"run": "s0-t1", "command": "bedkd bench --datasets olid --out c"}]}
    assert trigger_runs_screen.run_command(meta, {"run": "s0-t1", "dataset": "olid"}).endswith("--out c")
    assert trigger_runs_screen.run_command(meta, {"variation": "rate-3", "dataset": "olid"}).endswith("--out b")
    assert trigger_runs_screen.run_command(meta, {"variation": "other", "dataset": "olid"}) == meta["command"]


@needs_data
def test_the_screen_names_the_agnews_addsent_groups_it_inserts_as_runs_and_leaves_badnets_alone(tmp_path):
    command = ("bedkd bench --out /elsewhere --workdir /elsewhere/w --defenses none bedkd-guarded --train-limit 3000 "
               "--data-dir /no/such/dir --no-clean-row --datasets agnews --attacks addsent badnets --seed 0")
    rows = [{"dataset": "agnews", "attack": a, "defense": "bedkd-guarded", "status": "ok", "asr": 1.0,
             "cacc_change": 0.0} for a in ("addsent", "badnets")]
    rows.append({"dataset": "agnews", "attack": "addsent", "defense": "none", "status": "ok"})
    table = tmp_path / "results.json"
    table.write_text(json.dumps({"meta": {"command": command}, "rows": rows}))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trigger_runs_screen.py"), "--results", str(table),
                          "--data-dir", str(DATA), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    got = json.loads((out / "results.json").read_text())["rows"]
    assert [r["attack"] for r in got] == ["addsent", "badnets"]
    assert got[0]["changed"] and all("i watch this 3d movie" in g["runs"] for g in got[0]["changed"])
    assert got[1]["changed"] == [] and "1 where `--scan-trigger-runs` inserts a group otherwise" in (out / "results.md").read_text()
