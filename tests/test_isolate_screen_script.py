"""benchmarks/isolate_screen.py: which recorded `guarded` cells `--akd-isolate-trigger-words` could change, from
the found trigger and the cell's clean pool alone."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_bench import DATA, needs_data

ROOT = Path(__file__).resolve().parents[1]


@needs_data
def test_the_screen_isolates_a_word_with_a_common_piece_and_leaves_rare_and_one_token_words(tmp_path):
    command = ("bedkd bench --out /elsewhere --workdir /elsewhere/w --defenses none bedkd-guarded --train-limit 3000 "
               "--data-dir /no/such/dir --no-clean-row --datasets olid --attacks badnets ep --seed 0")
    rows = [{"dataset": "olid", "attack": "ep", "defense": "bedkd-guarded", "status": "ok", "asr": 3.0,
             "cacc_change": 0.5, "floor_asr": 9.0, "trigger_found": "jt"},
            {"dataset": "olid", "attack": "badnets", "defense": "bedkd-guarded", "status": "ok", "asr": 2.0,
             "cacc_change": 0.1, "floor_asr": 9.0, "trigger_found": "cf jw"},
            {"dataset": "olid", "attack": "ep", "defense": "none", "status": "ok", "asr": 99.0, "cacc_change": 0.0,
             "trigger_found": "jt"}]
    table = tmp_path / "results.json"
    table.write_text(json.dumps({"meta": {"command": command}, "rows": rows}))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "isolate_screen.py"), "--results", str(table),
                          "--data-dir", str(DATA), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    got = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["attack"], r["isolated"]) for r in got] == [("ep", ["jt"]), ("badnets", [])]   # `none` rows left
    assert got[0]["pieces"]["jt"]["##t"] > 1.0 and got[0]["reset"] == []       # OLID's `##t` fails the share rule
    assert got[1]["reset"] == ["cf", "jw"]                                     # rare: reset, nothing to isolate
    # the data's candidates hold the attack's own triggers (one token each here), none of them isolated
    assert got[0]["candidates"] == ["cf"] and {"bb", "cf", "mn", "tq"} <= set(got[1]["candidates"])
    assert got[0]["could_isolate"] == got[1]["could_isolate"] == []
    assert "in 1 the option gives a found word a token of its own" in (out / "results.md").read_text()
    assert "it could act in 0" in (out / "results.md").read_text()


@needs_data
def test_a_candidate_of_several_pieces_could_get_a_token_whatever_the_run_found(tmp_path):
    command = ("bedkd bench --out /elsewhere --workdir /elsewhere/w --defenses none bedkd-guarded --train-limit 3000 "
               "--data-dir /no/such/dir --no-clean-row --datasets olid --attacks ep --attack-trigger jt --seed 0")
    row = {"dataset": "olid", "attack": "ep", "defense": "bedkd-guarded", "status": "ok", "asr": 3.0, "cacc_change": 0.5,
           "floor_asr": 9.0, "victim_asr": 100.0, "trigger_found": "qq"}     # a found word that is no candidate
    table = tmp_path / "results.json"
    table.write_text(json.dumps({"meta": {"command": command}, "rows": [row]}))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "isolate_screen.py"), "--results", str(table),
                          "--data-dir", str(DATA), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    got = json.loads((out / "results.json").read_text())["rows"][0]
    assert got["candidates"] == ["jt"] and got["could_isolate"] == ["jt"] and got["victim_asr"] == 100.0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_runs import isolate_cannot_act, isolate_screened
    screened = isolate_screened(out)
    assert not isolate_cannot_act(row, screened)                                 # `jt` could get a token
    assert isolate_cannot_act({**row, "asr": 4.0}, screened) is False             # a run not screened: unknown
    assert isolate_cannot_act({**row, "asr": 4.0, "trigger_found": None}, screened)     # nothing found
    assert isolate_cannot_act({**row, "asr": 4.0, "backdoor_found": False}, screened)   # returned unchanged
    got["could_isolate"] = []
    (out / "results.json").write_text(json.dumps({"rows": [got]}))
    assert isolate_cannot_act(row, isolate_screened(out))                       # no candidate gets a token
    assert isolate_screened(tmp_path / "none") == {}


def test_an_unreadable_table_is_named(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "isolate_screen.py"), "--results", str(bad),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode == 2 and str(bad) in run.stderr


def test_found_words_take_every_hit_of_a_held_cell_report_else_the_strongest(monkeypatch, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import isolate_screen
    row = {"trigger_found": "jw"}
    cell = {"details": {"report": {"verdict": {"trigger_search": {"hits": [{"words": ["jw"]}, {"words": ["vq", "jw"]},
                                                                            {"words": ["zx"]}]}}}}}
    monkeypatch.setattr(isolate_screen, "cell_report", lambda workdirs, r: cell if workdirs else None)
    assert isolate_screen.found_words(row, [tmp_path]) == (["jw", "vq", "zx"], "every hit")
    assert isolate_screen.found_words(row, []) == (["jw"], "strongest hit")


def test_a_row_without_target_or_seed_takes_them_from_its_command():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import isolate_screen
    command = "bedkd bench --datasets olid --attack-target 1 --seed 2 --attack-trigger 'qv xk'"
    assert isolate_screen.flag_value(command, "--attack-target") == "1"
    assert isolate_screen.flag_value(command, "--seed") == "2"
    assert isolate_screen.flag_value("bedkd bench --seed", "--seed") is None
