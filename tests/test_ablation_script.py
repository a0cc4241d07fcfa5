"""benchmarks/ablation.py: an opt-in change's runs beside the security table's cells of the same victim."""
from __future__ import annotations

import json

from conftest import load_benchmark

ablation = load_benchmark("ablation")

VICTIM = {"dataset": "olid", "attack": "badnets", "victim_cacc": 83.1199, "victim_asr": 100.0, "victim_key": "abc"}


def _row(defense, asr, change, **extra):
    return {**VICTIM, "defense": defense, "status": "ok", "asr": asr, "cacc": 83.0 + change, "cacc_change": change,
            "floor_asr": 30.83, "floor_asr_min": 30.83, "floor_asr_max": 36.25, "code_version": "v9", **extra}


def test_a_run_sits_beside_the_security_cells_of_its_victim_with_its_change_and_poison_rows(tmp_path, capsys):
    security = tmp_path / "security.json"
    security.write_text(json.dumps({"rows": [
        {**_row("bedkd-guarded", 89.58, 1.63), "variation": "target-0"},
        {**_row("bedkd-reference", 9.17, -6.8), "variation": "target-0"},
        {**_row("bedkd-guarded", 4.0, 0.1), "variation": "rate-5", "victim_asr": 99.7}]}))
    run = tmp_path / "olid_t0_poison"
    run.mkdir()
    mine = _row("bedkd", 20.0, -0.4, untriggered_asr=18.5, floor_untriggered_asr=31.25)
    (run / "results.json").write_text(json.dumps({
        "meta": {"command": "bedkd bench --out X --workdir W --defenses none bedkd --preset guarded "
                            "--akd-repair-poison --akd-synth-rows 256 --datasets olid --attack-target 0 --seed 2"},
        "rows": [_row("none", 100.0, 0.0), mine]}))
    cells = tmp_path / "work" / "cells" / "olid" / "badnets" / "abc"
    cells.mkdir(parents=True)
    (cells / "bedkd.k1.json").write_text(json.dumps({"row": {**mine, "asr": 55.0}, "details": {"report": {}}}))
    (cells / "bedkd.k2.json").write_text(json.dumps({"row": mine, "details": {"report": {
        "selected_epoch": 4, "data": {"poison_repair": {"rows": 301, "other_share": 0.62, "min_share": 0.5,
                                                        "used": True}}}}}))
    assert ablation.main([str(run), "--workdir", str(tmp_path / "elsewhere"), str(tmp_path / "work"),
                          "--security", str(security), "--title", "T"]) == 0
    out = capsys.readouterr().out
    assert ("| olid target-0 | `--akd-repair-poison --akd-synth-rows 256` | 100.0 | 30.8 (30.8-36.2) | "
            "89.6 (+1.6) ✗ | 9.2 (-6.8) ✗ | 20.0 (-0.4) | 18.5 [31.2] | 4 | "
            "301 rows, 62.0 % in another label: used | `olid_t0_poison/` |") in out


def test_two_backdoors_read_first_and_second(tmp_path, capsys):
    two = dict(second_asr=40.0, second_floor_asr=23.75, untriggered_asr=7.3, second_untriggered_asr=37.9,
               floor_untriggered_asr=10.5, second_floor_untriggered_asr=31.2)
    run = tmp_path / "two"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "meta": {"command": "bedkd bench --out X --preset guarded --akd-repair-poison --attacks multi --multi-first "
                            "badnets --multi-second addsent --multi-second-trigger 'my uncle'"},
        "rows": [{**_row("none", 100.0, 0.0), "second_asr": 100.0}, _row("bedkd", 6.0, 1.3, **two)]}))
    (tmp_path / "s.json").write_text(json.dumps({"rows": []}))
    assert ablation.main([str(run), "--workdir", str(tmp_path), "--security", str(tmp_path / "s.json"),
                          "--title", "T"]) == 0
    out = capsys.readouterr().out
    assert ("| olid (not in the security table) | `--akd-repair-poison` | 100.0 / 100.0 | 30.8 / 23.8 (30.8-36.2) | "
            "- | - | 6.0 / 40.0 (+1.3) ✗ | 7.3 / 37.9 [10.5 / 31.2] | - | - | `two/` |") in out


def test_a_folder_without_results_is_named(tmp_path, capsys):
    (tmp_path / "s.json").write_text("{}")
    assert ablation.main([str(tmp_path), "--workdir", str(tmp_path), "--security", str(tmp_path / "s.json"),
                          "--title", "T"]) == 2
    assert str(tmp_path / "results.json") in capsys.readouterr().err


def test_a_run_with_guarded_beside_the_change_gives_the_guarded_column_and_robustness_cases_are_named(tmp_path,
                                                                                                    capsys):
    robustness = tmp_path / "robustness.json"
    robustness.write_text(json.dumps({"rows": [
        {**_row("bedkd-guarded", 34.2, -1.05), "trigger": "zx vq jw", "target": 0, "seed": 1}]}))
    run = tmp_path / "olid_t0_s1"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "meta": {"command": "bedkd bench --out X --defenses none bedkd-guarded bedkd --preset guarded "
                            "--akd-reset-value clean --datasets olid --seed 1"},
        "rows": [_row("none", 100.0, 0.0), _row("bedkd-guarded", 34.17, -1.05), _row("bedkd", 31.0, -0.2)]}))
    assert ablation.main([str(run), "--workdir", str(tmp_path), "--security", str(tmp_path / "none.json"),
                          str(robustness), "--title", "T"]) == 2       # a missing table is named
    (tmp_path / "none.json").write_text(json.dumps({"rows": []}))
    assert ablation.main([str(run), "--workdir", str(tmp_path), "--security", str(tmp_path / "none.json"),
                          str(robustness), "--title", "T"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| olid")]
    assert lines == ["| olid badnets `zx vq jw` t0 s1 | `--akd-reset-value clean` | 100.0 | 30.8 (30.8-36.2) | "
                     "34.2 (-1.1) ✗ | - | 31.0 (-0.2) | - [-] | - | - | `olid_t0_s1/` |"]


def test_victims_that_share_their_digits_are_told_apart_by_attack_and_floor(tmp_path, capsys):
    robustness = tmp_path / "robustness.json"
    robustness.write_text(json.dumps({"rows": [
        {**_row("bedkd-guarded", 34.2, -1.05), "trigger": "zx vq jw", "target": 0, "seed": 1},
        {**_row("bedkd-guarded", 8.2, 0.9), "attack": "sos", "trigger": "garden", "target": 1, "seed": 0},
        {**_row("bedkd-guarded", 2.4, 2.4), "trigger": "qz", "target": 1, "seed": 0, "floor_asr": 8.2}]}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "meta": {"command": "bedkd bench --out X --defenses none bedkd --preset guarded --akd-clean-prior-shift"},
        "rows": [_row("none", 100.0, 0.0), _row("bedkd", 39.2, 0.3)]}))
    assert ablation.main([str(run), "--workdir", str(tmp_path), "--security", str(robustness), "--title", "T"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| olid")]
    assert len(lines) == 1 and lines[0].startswith("| olid badnets `zx vq jw` t0 s1 |") and "34.2 (-1.1) ✗" in lines[0]


def test_the_intro_can_come_from_a_file(tmp_path, capsys):
    (tmp_path / "s.json").write_text(json.dumps({"rows": []}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"meta": {"command": "bedkd bench --out X --akd-clean-prior-shift"},
                                                  "rows": [_row("none", 100.0, 0.0), _row("bedkd", 9.0, 0.3)]}))
    args = [str(run), "--workdir", str(tmp_path), "--security", str(tmp_path / "s.json"), "--title", "T",
            "--intro-file", str(tmp_path / "intro.md")]
    assert ablation.main(args) == 2 and "intro.md" in capsys.readouterr().err
    (tmp_path / "intro.md").write_text("Words about it.\n\nMore words.\n")
    assert ablation.main(args) == 0
    out = capsys.readouterr().out
    assert "\n\nWords about it.\n\nMore words.\n\n| victim |" in out and "More words." not in out.splitlines()[2]


def test_a_victim_in_no_table_is_named_from_its_setup_and_the_row_gives_the_epoch(tmp_path, capsys):
    run = tmp_path / "sst2_sos"
    run.mkdir()
    setup = {"attacks": ["sos"], "seed": 2, "attack": {"target": 0, "triggers": ["window", "river", "coffee"]}}
    (run / "results.json").write_text(json.dumps({
        "meta": {"command": "bedkd bench --out X --defenses none bedkd --preset guarded --akd-start-candidate",
                 "setup": setup},
        "rows": [_row("none", 100.0, 0.0), _row("bedkd", 17.7, 0.5, selected_epoch=5)]}))
    (tmp_path / "s.json").write_text(json.dumps({"rows": []}))
    assert ablation.main([str(run), "--workdir", str(tmp_path / "gone"), "--security", str(tmp_path / "s.json"),
                          "--title", "T"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| olid"))
    assert line.startswith("| olid sos `window river coffee` t0 s2 (victim not in the tables) |")
    assert line.endswith("| 5 | - | `sst2_sos/` |")


def test_the_change_is_the_options_a_run_adds_not_its_setup_or_trace():
    import ablation
    command = ("bedkd bench --out o --workdir w --defenses none bedkd --preset guarded --akd-signed-proxy --trace-epochs "
               "--train-limit 3000 --datasets olid --attack-trigger qz")
    assert ablation.change(command) == "--akd-signed-proxy"


def test_a_run_of_two_datasets_finds_each_rows_victim_and_names_a_clean_model_by_its_seed(tmp_path, capsys):
    sst2 = {"dataset": "sst2", "victim_cacc": 86.5, "floor_asr": 15.29}
    robustness = tmp_path / "robustness.json"
    robustness.write_text(json.dumps({"rows": [
        {**_row("bedkd-guarded", 46.25, 2.2), "trigger": "zx vq jw", "target": 0, "seed": 2},
        {**_row("bedkd-guarded", 9.1, 1.3), **sst2, "trigger": "zx vq jw", "target": 0, "seed": 2},
        {"dataset": "olid", "attack": "clean", "victim_cacc": 83.7, "victim_asr": None, "defense": "none",
         "trigger": "default", "target": 1, "seed": 1}]}))
    run = tmp_path / "s2-t0-badnets"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({
        "meta": {"command": "bedkd bench --out X --defenses none bedkd --preset guarded --akd-tie-break target-rate "
                            "--datasets sst2 olid --seed 2"},
        "rows": [{**_row("none", 100.0, 0.0), **sst2}, {**_row("bedkd", 3.7, -0.4), **sst2},
                 _row("none", 100.0, 0.0), _row("bedkd", 31.7, 1.7)]}))
    clean = tmp_path / "s2-clean"
    clean.mkdir()
    olid_clean = {"dataset": "olid", "attack": "clean", "victim_cacc": 83.7, "victim_asr": None, "status": "ok",
                  "asr": None, "cacc": 83.7, "cacc_change": 0.0, "floor_asr": None}
    (clean / "results.json").write_text(json.dumps({
        "meta": {"command": "bedkd bench --out X --defenses none bedkd --preset guarded --akd-tie-break target-rate",
                 "setup": {"seed": 2}},
        "rows": [{**olid_clean, "defense": "none"}, {**olid_clean, "defense": "bedkd"}]}))
    assert ablation.main([str(run), str(clean), "--workdir", str(tmp_path), "--security", str(robustness),
                          "--title", "T"]) == 0
    out = capsys.readouterr().out
    assert "| sst2 badnets `zx vq jw` t0 s2 | `--akd-tie-break target-rate` | 100.0 | 15.3 (30.8-36.2) | " \
           "9.1 (+1.3) |" in out
    assert "| olid badnets `zx vq jw` t0 s2 | `--akd-tie-break target-rate` | 100.0 | 30.8 (30.8-36.2) | " \
           "46.2 (+2.2) ✗ |" in out
    assert "| olid clean s2 |" in out


def test_victims_of_two_cases_with_the_same_digits_and_floor_are_told_apart_by_the_runs_setup(tmp_path, capsys):
    ep = {"dataset": "sst2", "attack": "ep", "victim_cacc": 86.27, "floor_asr": 12.98, "floor_asr_min": None,
          "floor_asr_max": None}
    robustness = tmp_path / "robustness.json"
    robustness.write_text(json.dumps({"rows": [
        {**_row("bedkd-guarded", 19.0, 0.4), **ep, "trigger": "qz", "target": 0, "seed": 0},
        {**_row("bedkd-guarded", 14.7, 1.5), **ep, "trigger": "jt", "target": 0, "seed": 2}]}))
    run = tmp_path / "s2-t0-ep"
    run.mkdir()
    setup = {"attacks": ["ep"], "seed": 2, "attack": {"target": 0, "triggers": ["jt"]}}
    rows = [{**_row("none", 100.0, 0.0), **ep}, {**_row("bedkd", 10.3, 0.7), **ep}]
    (run / "results.json").write_text(json.dumps({
        "meta": {"command": "bedkd bench --out X --defenses none bedkd --akd-tie-break target-rate", "setup": setup},
        "rows": rows}))
    unnamed = tmp_path / "unnamed"
    unnamed.mkdir()
    (unnamed / "results.json").write_text(json.dumps({
        "meta": {"command": "bedkd bench --out X --defenses none bedkd --akd-tie-break target-rate"}, "rows": rows}))
    assert ablation.main([str(run), str(unnamed), "--workdir", str(tmp_path), "--security", str(robustness),
                          "--title", "T"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| sst2")]
    assert lines[0].startswith("| sst2 ep `jt` t0 s2 |") and "| 14.7 (+1.5) |" in lines[0]
    assert "19.0" not in lines[0]
    assert "(not in the security table)" in lines[1] and "19.0" not in lines[1] and "14.7" not in lines[1]
