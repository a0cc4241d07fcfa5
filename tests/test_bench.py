"""``bedkd bench`` on a tiny model: two cells, interruption and resume, outputs, cache keys."""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bedkd.attacks import AttackConfig
from bedkd.attacks.badnets import BadNets
from bedkd.bench import runner
from bedkd.bench.victims import fingerprint, victim_key
from bedkd.cli.bench_cmd import bench_inputs
from bedkd.cli.main import build_parser, main
from bedkd.datasets import load_dataset
from bedkd.evaluation import evaluate
from bedkd.data import LabeledTexts
from bedkd.modeling import TrainConfig

DATA = Path(os.environ.get("BEDKD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "sst2" / "clean").is_dir(), reason=f"no data pack at {DATA}")

TINY = ["--datasets", "sst2", "--attacks", "badnets", "--defenses", "none", "bedkd", "--no-clean-row",
        "--train-limit", "60", "--eval-limit", "40", "--train-epochs", "1", "--train-batch-size", "16",
        "--dmm-flip-per-class", "4", "--dmm-epochs", "1", "--dmm-max-flagged", "10",
        "--akd-trust-per-class", "8", "--akd-val-per-class", "4", "--akd-epochs", "1", "--quiet"]


def bench(out, backbone, *extra):
    return main(["bench", "--out", str(out), "--data-dir", str(DATA), "--backbone", str(backbone), *TINY, *extra])


@needs_data
def test_tiny_bench_resumes_after_interruption_and_writes_all_outputs(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    real_defense, real_victim = runner.run_defense, runner.train_victim
    calls = {"defense": 0, "victim": 0}

    def interrupting_defense(spec, cell):
        if spec.name == "bedkd":
            raise KeyboardInterrupt
        return real_defense(spec, cell)

    def counting_trainer(*args):
        calls["victim"] += 1
        return real_victim(*args)

    monkeypatch.setattr(runner, "train_victim", counting_trainer)
    monkeypatch.setattr(runner, "run_defense", interrupting_defense)
    assert bench(out, tiny_model_dir) == 130              # interrupted in the second cell
    assert not (out / "results.csv").exists()
    assert len(list((out / "work" / "cells").rglob("*.json"))) == 1   # the first cell was saved
    assert calls["victim"] == 2          # the clean model (the floor) and the victim
    import torch
    saved_victims = sorted((out / "work" / "victims").glob("*/victim.json"))
    assert len(saved_victims) == 2
    for saved_victim in saved_victims:                     # each says how it was trained
        trained = json.loads(saved_victim.read_text())["meta"]["trained_on"]
        assert trained["torch_threads"] == torch.get_num_threads() and trained["device"] == "cpu"
        assert trained["code_version"].startswith("0.")

    def counting_defense(spec, cell):
        calls["defense"] += 1
        return real_defense(spec, cell)

    monkeypatch.setattr(runner, "run_defense", counting_defense)
    assert bench(out, tiny_model_dir) == 0
    assert calls["victim"] == 2          # both came from the cache
    assert calls["defense"] == 1         # only the missing cell ran ('none' was cached)
    for ext in ("csv", "json", "md", "png"):
        assert (out / f"results.{ext}").stat().st_size > 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["attack"], r["defense"], r["status"]) for r in rows] == [("badnets", "none", "ok"),
                                                                        ("badnets", "bedkd", "ok")]
    none, defended = rows
    assert none["cacc"] == none["victim_cacc"] and float(none["defense_seconds"]) == 0
    assert float(defended["clean_rows_used"]) == 2 * (4 + 8 + 4)   # reference: DMM rows apart from trust rows
    assert int(defended["poisoned_rows"]) == 6 and int(defended["train_rows"]) == 60
    assert 0 <= float(defended["floor_asr"]) <= 100
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["command"].startswith("bedkd bench --out")
    assert saved["meta"]["setup"]["train_limit"] == 60
    assert "| badnets | bedkd |" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"

    calls["defense"] = 0                 # a third run computes nothing
    assert bench(out, tiny_model_dir) == 0
    assert calls == {"defense": 0, "victim": 2}


@needs_data
def test_rerun_reuses_rows_of_results_json_only_for_the_same_setup(tiny_model_dir, tmp_path, monkeypatch):
    import shutil
    out = tmp_path / "reuse"
    trained = []
    real_victim = runner.train_victim

    def attack_victims(attack, *rest):              # the clean model (the floor) is not counted
        if attack.name != "clean":
            trained.append(attack.name)
        return real_victim(attack, *rest)

    monkeypatch.setattr(runner, "train_victim", attack_victims)
    assert bench(out, tiny_model_dir) == 0
    first = json.loads((out / "results.json").read_text())
    shutil.rmtree(out / "work")          # the cache is gone; the results file remains

    args = [*TINY, "--defenses", "none"]  # a smaller matrix of the same setup, plus one more attack
    args[args.index("badnets") + 1:args.index("badnets") + 1] = ["addsent"]
    assert main(["bench", "--out", str(out), "--data-dir", str(DATA), "--backbone", str(tiny_model_dir),
                 *args]) == 0
    assert trained == ["badnets", "addsent"]             # badnets was not trained again
    second = json.loads((out / "results.json").read_text())
    assert [(r["attack"], r["defense"]) for r in second["rows"]] == [("badnets", "none"), ("addsent", "none")]
    assert second["rows"][0] == first["rows"][0]
    assert second["meta"]["earlier_runs"][0]["date"] == first["meta"]["date"]
    assert "were reused" in (out / "results.md").read_text()

    other = tmp_path / "other"           # a new output directory that takes the rows of the first
    assert main(["bench", "--out", str(other), "--data-dir", str(DATA), "--backbone", str(tiny_model_dir),
                 *args, "--reuse-from", str(out)]) == 0
    assert trained == ["badnets", "addsent"]
    assert json.loads((other / "results.json").read_text())["rows"] == second["rows"]

    assert bench(out, tiny_model_dir, "--seed", "1", "--defenses", "none") == 0      # another setup: no reuse
    assert trained == ["badnets", "addsent", "badnets"]
    assert "earlier_runs" not in json.loads((out / "results.json").read_text())["meta"]


@needs_data
def test_an_interrupted_rerun_keeps_the_reused_rows_of_cells_not_reached(tiny_model_dir, tmp_path, monkeypatch):
    import shutil
    out = tmp_path / "keep"
    args = [*TINY, "--defenses", "none"]
    at = args.index("badnets") + 1
    first = [*args[:at], "addsent", *args[at:]]
    assert main(["bench", "--out", str(out), "--data-dir", str(DATA), "--backbone", str(tiny_model_dir), *first]) == 0
    before = json.loads((out / "results.json").read_text())["rows"]
    shutil.rmtree(out / "work")          # only results.json knows these rows now

    def interrupt(attack, *rest):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train_victim", interrupt)
    second = [*args[:at], "sos", "addsent", *args[at:]]      # sos must be trained: interrupted there
    assert main(["bench", "--out", str(out), "--data-dir", str(DATA), "--backbone", str(tiny_model_dir), *second]) == 130
    after = json.loads((out / "results.json").read_text())["rows"]
    assert sorted((r["attack"], r["defense"]) for r in after) == [("addsent", "none"), ("badnets", "none")]
    assert {r["attack"]: r for r in after} == {r["attack"]: r for r in before}


@needs_data
def test_report_only_computes_nothing_and_marks_missing_cells(tiny_model_dir, tmp_path, monkeypatch):
    def no_training(*args):
        raise AssertionError("report-only must not train")

    monkeypatch.setattr(runner, "train_victim", no_training)
    monkeypatch.setattr(runner, "run_defense", no_training)
    out = tmp_path / "r"
    assert bench(out, tiny_model_dir, "--report-only") == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["defense"], r["status"]) for r in rows] == [("none", runner.NOT_RUN), ("bedkd", runner.NOT_RUN)]
    assert "not run" in (out / "results.md").read_text()


@needs_data
def test_bench_skips_impossible_cells_and_adds_the_clean_row(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_defense", lambda spec, cell: {})
    out = tmp_path / "b"
    args = [a for a in TINY if a != "--no-clean-row"]
    args[args.index("badnets")] = "synbkd"
    args[args.index("sst2")] = "olid"
    command = ["bench", "--out", str(out), "--data-dir", str(DATA), "--backbone", str(tiny_model_dir), *args,
               "--attack-rate", "0.5", "--defenses", "none"]
    assert main(command) == 3                            # a skipped row: exit status 3, results written
    assert (out / "results.csv").is_file()
    assert main([*command, "--allow-skipped"]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["attack"], r["status"][:8]) for r in rows] == [("clean", "ok"), ("synbkd", "skipped:")]
    assert "paraphrase" in rows[1]["status"] or "only" in rows[1]["status"]


@needs_data
def test_bench_runs_each_role_on_the_same_victim(tiny_model_dir, tmp_path, monkeypatch):
    real_retrain = runner.retrainer
    retrained = []

    def counting_retrainer(*args):
        inner = real_retrain(*args)
        return lambda kept: retrained.append(len(kept)) or inner(kept)

    monkeypatch.setattr(runner, "retrainer", counting_retrainer)
    args = [a for a in TINY if a not in ("none", "bedkd")]
    args[args.index("--defenses") + 1:args.index("--defenses") + 1] = ["none", "kd", "cube", "rap"]
    out = tmp_path / "roles"
    assert main(["bench", "--out", str(out), "--data-dir", str(DATA), "--backbone", str(tiny_model_dir), *args,
                 "--kd-epochs", "1", "--kd-trust-per-class", "8", "--kd-val-per-class", "4",
                 "--cube-min-cluster-size", "3", "--rap-epochs", "1"]) == 0
    rows = {r["defense"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"none", "kd", "cube", "rap"} and all(r["status"] == "ok" for r in rows.values())
    assert len({r["victim_cacc"] for r in rows.values()}) == 1          # one cached victim for all
    assert float(rows["kd"]["clean_rows_used"]) == 2 * (8 + 4)
    cube = rows["cube"]
    assert retrained == [60 - int(cube["flagged"])]                     # retrained without the removed rows
    assert cube["flagged_precision"] == "" or 0 <= float(cube["flagged_precision"]) <= 100
    rap = rows["rap"]
    assert 0 <= float(rap["frr"]) <= 100 and float(rap["clean_rows_used"]) == 2 * 370
    assert float(rap["cacc"]) <= float(rap["victim_cacc"]) + 1e-9        # rejected clean inputs count as errors
    assert 0 <= float(rap["detection_rate"]) <= 100 and rows["kd"]["detection_rate"] == ""
    md = (out / "results.md").read_text()
    assert "| FRR / det |" in md and f"| {float(rap['frr']):.1f} / {float(rap['detection_rate']):.1f} |" in md
    setup = json.loads((out / "results.json").read_text())["meta"]["setup"]
    assert setup["defenses"]["rap"]["rap"]["trigger"] == "jj" and setup["defenses"]["kd"]["kd"]["epochs"] == 1


def test_bench_refuses_a_foreign_output_directory(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert main(["bench", "--out", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
    assert "holds no earlier bench run" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_bench_rejects_unknown_defense_and_bad_scale(tmp_path, capsys):
    assert main(["bench", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path), "--defenses", "magic"]) == 2
    assert "unknown defense 'magic'" in capsys.readouterr().err
    assert main(["bench", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path), "--train-limit", "3"]) == 2
    assert "train_limit must be >= 10" in capsys.readouterr().err
    assert main(["bench", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path), "--defenses", "onion"]) == 2
    assert "--onion-lm DIR" in capsys.readouterr().err


def test_victim_key_changes_with_every_input():
    data = LabeledTexts(["a b", "c d"], [0, 1], "x.tsv", [2, 3])
    base = dict(dataset="sst2", attack="badnets", attack_options={"cfg": AttackConfig().to_dict()},
                train_cfg=TrainConfig(), backbone=None, train=data, num_labels=2)
    key = victim_key(**base)
    changes = [("dataset", "olid"), ("attack", "addsent"),
               ("attack_options", {"cfg": AttackConfig(rate=0.2).to_dict()}),
               ("attack_options", {"cfg": AttackConfig(target=0).to_dict()}),
               ("attack_options", {"cfg": AttackConfig(seed=1).to_dict()}),
               ("train_cfg", TrainConfig(epochs=2)), ("train_cfg", TrainConfig(seed=3)), ("backbone", "/other"),
               ("train", LabeledTexts(["a b", "c d"], [0, 0], "x.tsv", [2, 3])),
               ("train", LabeledTexts(["a b", "c e"], [0, 1], "x.tsv", [2, 3])), ("num_labels", 3)]
    keys = {victim_key(**{**base, name: value}) for name, value in changes}
    assert key not in keys and len(keys) == len(changes)
    moved = LabeledTexts(["a b", "c d"], [0, 1], "/elsewhere/x.tsv", [2, 3])
    assert victim_key(**{**base, "train": moved}) == key       # moving the data does not retrain
    assert fingerprint(data) != fingerprint(moved.subset([0]))


def test_a_backbone_folder_is_keyed_by_its_files_not_its_path(tmp_path):
    data = LabeledTexts(["a b", "c d"], [0, 1], "x.tsv", [2, 3])
    base = dict(dataset="sst2", attack="badnets", attack_options={}, train_cfg=TrainConfig(), train=data, num_labels=2)
    for name in ("one", "two"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "sub" / "model.safetensors").write_bytes(b"weights")
    one = victim_key(**base, backbone=str(tmp_path / "one"))
    assert victim_key(**base, backbone=str(tmp_path / "two")) == one       # moved or copied: the same victim
    (tmp_path / "three").mkdir()
    (tmp_path / "three" / "config.json").write_text("{}")
    (tmp_path / "three" / "model.safetensors").write_bytes(b"weights")     # same bytes, another layout
    assert victim_key(**base, backbone=str(tmp_path / "three")) != one
    (tmp_path / "four").mkdir()
    (tmp_path / "four" / "config.json").write_text("{}")
    (tmp_path / "four" / "sub").mkdir()
    (tmp_path / "four" / "sub" / "model.safetensors").write_bytes(b"other weights")
    assert victim_key(**base, backbone=str(tmp_path / "four")) != one
    assert victim_key(**base, backbone=None) != one


@needs_data
def test_agnews_synbkd_is_skipped_not_a_crash(tiny_model_dir, tmp_path):
    args = [a for a in TINY]
    args[args.index("badnets")] = "synbkd"
    args[args.index("sst2")] = "agnews"
    out = tmp_path / "ag"
    command = ["bench", "--out", str(out), "--data-dir", str(DATA), "--backbone", str(tiny_model_dir), *args,
               "--report-only"]
    assert main(command) == 3                            # skipped rows: exit status 3 ...
    assert main([*command, "--allow-skipped"]) == 0      # ... unless they are accepted
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["status"][:8] for r in rows] == ["skipped:", "skipped:"]
    assert "agnews" in rows[0]["status"]


@needs_data
def test_two_backdoors_report_the_second_asr_for_every_role(tiny_model_dir, tmp_path):
    args = [a for a in TINY if a not in ("none", "bedkd")]
    args[args.index("--defenses") + 1:args.index("--defenses") + 1] = ["none", "kd", "cube", "strip"]
    args[args.index("--attacks") + 1] = "multi"
    out = tmp_path / "multi"
    assert main(["bench", "--out", str(out), "--data-dir", str(DATA), "--backbone", str(tiny_model_dir), *args,
                 "--multi-second-target", "0", "--kd-epochs", "1", "--kd-trust-per-class", "8",
                 "--kd-val-per-class", "4", "--cube-min-cluster-size", "3"]) == 0
    rows = {r["defense"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert all(r["status"] == "ok" for r in rows.values())
    victim = float(rows["none"]["second_victim_asr"])
    assert 0 <= victim <= 100 and 0 <= float(rows["none"]["second_floor_asr"]) <= 100
    assert float(rows["none"]["second_asr"]) == victim                    # the victim's own row
    for name in ("kd", "cube", "strip"):
        assert 0 <= float(rows[name]["second_asr"]) <= 100, name
    assert float(rows["strip"]["second_asr"]) <= victim + 1e-9             # a filter can only reject more
    for name in ("none", "kd", "cube"):                                   # models: their rate without a trigger
        assert all(0 <= float(rows[name][k]) <= 100 for k in ("untriggered_asr", "second_untriggered_asr")), name
    assert rows["strip"]["untriggered_asr"] == ""                         # an input filter's is not measured
    for key in ("floor_untriggered_asr", "second_floor_untriggered_asr"):   # the clean model's, on every row
        assert len({r[key] for r in rows.values()}) == 1 and 0 <= float(rows["none"][key]) <= 100
    kd = rows["kd"]
    assert f"| multi | kd | {float(kd['cacc']):.2f} | {float(kd['asr']):.2f} / {float(kd['second_asr']):.2f} |" \
        in (out / "results.md").read_text()

    single = tmp_path / "single"                                          # one backdoor: no second columns
    assert bench(single, tiny_model_dir) == 0
    single_rows = list(csv.DictReader((single / "results.csv").open()))
    assert {r["second_asr"] for r in single_rows} == {r["second_untriggered_asr"] for r in single_rows} == {""}
    assert all(r["floor_untriggered_asr"] != "" for r in single_rows if r["attack"] != "clean")
    assert bench(single, tiny_model_dir) == 0                             # cached rows get it too
    assert list(csv.DictReader((single / "results.csv").open())) == single_rows


@needs_data
def test_a_clean_model_evaluation_saved_before_the_untriggered_asr_is_made_again(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    assert bench(out, tiny_model_dir) == 0
    first = list(csv.DictReader((out / "results.csv").open()))
    for path in (out / "work" / "evals").glob("*.json"):          # as an earlier version saved them
        saved = json.loads(path.read_text())
        saved.pop("untriggered_asr", None)
        path.write_text(json.dumps(saved))
    assert bench(out, tiny_model_dir) == 0                        # every cell cached: only the evaluation runs
    again = list(csv.DictReader((out / "results.csv").open()))
    assert [r["floor_untriggered_asr"] for r in again] == [r["floor_untriggered_asr"] for r in first] != [""] * 2


@needs_data
def test_a_cell_of_the_same_method_and_options_under_another_name_is_reused(tiny_model_dir, tmp_path, monkeypatch):
    fake = {"cacc": 50.0, "asr": 1.0}
    monkeypatch.setattr(runner, "run_defense", lambda spec, cell: fake if spec.role != "none" else {})
    bedkd_flags = {a for a in TINY if a.startswith(("--dmm-", "--akd-"))}
    args = [a for i, a in enumerate(TINY) if a not in bedkd_flags and TINY[i - 1] not in bedkd_flags]
    args = [a for a in args if a not in ("none", "bedkd")]
    work = tmp_path / "work"

    def run(out, *defenses):
        return main(["bench", "--out", str(tmp_path / out), "--workdir", str(work), "--data-dir", str(DATA),
                     "--backbone", str(tiny_model_dir), *args[:args.index("--defenses") + 1], *defenses,
                     *args[args.index("--defenses") + 1:]])

    assert run("a", "none", "bedkd", "--preset", "fast") == 0

    def must_not_run(spec, cell):
        raise AssertionError(f"{spec.name} was computed again")

    monkeypatch.setattr(runner, "run_defense", must_not_run)
    assert run("b", "none", "bedkd-fast") == 0            # `bedkd --preset fast` is `bedkd-fast`
    rows = list(csv.DictReader((tmp_path / "b" / "results.csv").open()))
    assert [(r["defense"], r["cacc"]) for r in rows] == [("none", rows[0]["victim_cacc"]), ("bedkd-fast", "50.0")]
    with pytest.raises(AssertionError, match="bedkd-guarded was computed again"):
        run("c", "none", "bedkd-guarded")                 # other options: a cell of its own


@needs_data
def test_two_option_sets_of_one_defense_on_one_victim_keep_their_own_cells(tiny_model_dir, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "run_defense", lambda spec, cell: calls.append(spec.name) or
                        ({"cacc": 40.0 + len(calls), "asr": 1.0} if spec.role != "none" else {}))
    assert bench(tmp_path / "a", tiny_model_dir, "--workdir", str(tmp_path / "work")) == 0
    assert bench(tmp_path / "b", tiny_model_dir, "--workdir", str(tmp_path / "work"), "--akd-lr", "1e-4") == 0
    cells = sorted(p.name for p in (tmp_path / "work" / "cells").rglob("bedkd*.json"))
    assert len(cells) == 2 and "bedkd.json" in cells                 # the second options: a file of their own
    computed = len(calls)

    def must_not_run(spec, cell):
        raise AssertionError(f"{spec.name} was computed again")
    monkeypatch.setattr(runner, "run_defense", must_not_run)
    for out, extra in (("a2", ()), ("b2", ("--akd-lr", "1e-4"))):   # both still cached, each with its own digits
        assert bench(tmp_path / out, tiny_model_dir, "--workdir", str(tmp_path / "work"), *extra) == 0
    first, second = ([r["cacc"] for r in csv.DictReader((tmp_path / out / "results.csv").open())
                      if r["defense"] == "bedkd"] for out in ("a2", "b2"))
    assert first != second and computed == len(calls)


@needs_data
def test_cells_and_results_written_with_fractions_are_read_in_percent(tiny_model_dir, tmp_path, monkeypatch):
    detection = {"flagged": 10, "flagged_precision": 60.0, "flagged_recall": 30.0, "flagged_recall_all": 30.0,
                 "kept": 4, "kept_precision": 75.0}
    monkeypatch.setattr(runner, "run_defense", lambda spec, cell: {} if spec.role == "none" else
                        {"cacc": 50.0, "asr": 1.0, "detection": dict(detection)})
    work, out = tmp_path / "work", tmp_path / "a"
    args = ["--workdir", str(work), "--defenses", "none", "bedkd-fast"]
    bench(out, tiny_model_dir, *args)
    cell_file = next(work.glob("cells/sst2/badnets/*/bedkd-fast.json"))
    cell = json.loads(cell_file.read_text())
    assert cell["units"] == "percent" and cell["details"]["detection"]["kept_precision"] == 75.0
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["units"] == "percent"

    def fractions(d):
        return {k: (v / 100 if k.endswith(("precision", "recall", "recall_all")) and v is not None else v)
                for k, v in d.items()}

    def must_not_run(spec, cell):
        raise AssertionError(f"{spec.name} was computed again")

    monkeypatch.setattr(runner, "run_defense", must_not_run)
    # a cell of an earlier version: no units, fractions in its row and details
    del cell["units"]
    cell["row"], cell["details"]["detection"] = fractions(cell["row"]), fractions(cell["details"]["detection"])
    cell_file.write_text(json.dumps(cell))
    bench(tmp_path / "b", tiny_model_dir, *args)
    row = next(r for r in json.loads((tmp_path / "b" / "results.json").read_text())["rows"] if r["defense"] != "none")
    assert (row["flagged_precision"], row["flagged_recall"], row["kept_precision"]) == (60.0, 30.0, 75.0)
    # an earlier results.json without units, reused without the workdir
    del saved["meta"]["units"]
    saved["rows"] = [fractions(r) for r in saved["rows"]]
    (out / "results.json").write_text(json.dumps(saved))
    bench(tmp_path / "c", tiny_model_dir, "--defenses", "none", "bedkd-fast", "--reuse-from", str(out))
    row = next(r for r in json.loads((tmp_path / "c" / "results.json").read_text())["rows"] if r["defense"] != "none")
    assert (row["flagged_precision"], row["kept_precision"]) == (60.0, 75.0)


@needs_data
def test_floor_seeds_measure_each_seeds_clean_model_on_the_rows_own_triggered_rows(tiny_model_dir, tmp_path,
                                                                                   monkeypatch):
    out = tmp_path / "run"
    trained = []
    real = runner.train_victim
    monkeypatch.setattr(runner, "train_victim", lambda *a, **k: trained.append(a[0]) or real(*a, **k))
    assert bench(out, tiny_model_dir, "--floor-seeds", "1", "0") == 0      # its own seed 0 is not counted twice
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(trained) == 3                      # clean model, victim, and the clean model of seed 1
    # the seed-1 clean model, measured here on the seed-0 run's test rows and triggered rows
    cfg, setup, _ = bench_inputs(build_parser().parse_args(["bench", "--out", "x", "--data-dir", str(DATA),
                                                            "--backbone", str(tiny_model_dir), *TINY]))
    ds = load_dataset("sst2", DATA)
    plan = runner.DatasetPlan.make(ds, cfg, setup)
    other = runner.DatasetPlan.make(ds, cfg.replace(seed=1), setup)
    model = runner.BenchCache(out / "work").victims.load(other.clean.key)[0]
    floor = evaluate(model, plan.test, plan.attack("badnets", setup).poisoned.test_poison)["asr"]
    for row in rows:
        assert row["floor_models"] == 2
        assert (row["floor_asr_min"], row["floor_asr_max"]) == tuple(sorted([row["floor_asr"], floor]))
    assert "floors of the clean models" in (out / "results.md").read_text()
    trained.clear()
    assert bench(out, tiny_model_dir, "--floor-seeds", "1") == 0           # all cached: nothing trained
    assert trained == [] and json.loads((out / "results.json").read_text())["rows"] == rows
    assert bench(out, tiny_model_dir) == 0                                  # without the option: no range
    assert all("floor_models" not in r for r in json.loads((out / "results.json").read_text())["rows"])
    # the option does not change the setup under which an earlier run's rows are reused
    shutil.rmtree(out / "work" / "cells")
    monkeypatch.setattr(runner, "run_defense", lambda *a: pytest.fail("a reused row was computed again"))
    assert bench(out, tiny_model_dir, "--floor-seeds", "1") == 0 and trained == []
    assert json.loads((out / "results.json").read_text())["rows"] == rows


def test_floor_seeds_refuse_a_repeated_or_negative_seed(tmp_path, capsys):
    for seeds in (["1", "1"], ["-1"]):
        assert main(["bench", "--out", str(tmp_path / "o"), "--floor-seeds", *seeds]) == 2
        assert "floor_seeds" in capsys.readouterr().err


def _held_by_another_process(lock: Path) -> bool:
    probe = ("import fcntl, sys\nf = open(sys.argv[1], 'a')\ntry:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n    sys.exit(1)\n")
    return subprocess.call([sys.executable, "-c", probe, str(lock)]) == 1


@needs_data
def test_a_cell_is_locked_by_its_key_so_other_options_of_the_defense_need_not_wait(tiny_model_dir, tmp_path,
                                                                                   monkeypatch):
    seen = {}

    def defense(spec, cell):
        if spec.role == "none":
            return {}
        folder = next((tmp_path / "work" / "cells").rglob("none.json")).parent
        seen["own"] = [p.name for p in folder.glob("bedkd.*.lock") if _held_by_another_process(p)]
        seen["name"] = _held_by_another_process(folder / "bedkd.lock")
        return {"cacc": 40.0, "asr": 1.0}
    monkeypatch.setattr(runner, "run_defense", defense)
    assert bench(tmp_path / "a", tiny_model_dir, "--workdir", str(tmp_path / "work")) == 0
    assert len(seen["own"]) == 1 and not seen["name"]       # only this cell's key is held while it is computed
    assert bench(tmp_path / "b", tiny_model_dir, "--workdir", str(tmp_path / "work"), "--akd-lr", "1e-4") == 0
    assert len(seen["own"]) == 1 and not seen["name"]


@needs_data
def test_suspect_data_clean_gives_the_defenses_the_rows_before_poisoning(tiny_model_dir, tmp_path, monkeypatch):
    seen = []
    real = runner.Cell

    def recording_cell(*args, **kwargs):
        cell = real(*args, **kwargs)
        seen.append(cell)
        return cell

    monkeypatch.setattr(runner, "Cell", recording_cell)
    args = [a for a in TINY if a not in ("none", "bedkd")]
    args[args.index("--defenses") + 1:args.index("--defenses") + 1] = ["none", "bedkd", "cube"]
    work = tmp_path / "work"
    for name, extra in (("poisoned", []), ("clean", ["--suspect-data", "clean"])):
        assert main(["bench", "--out", str(tmp_path / name), "--workdir", str(work), "--data-dir", str(DATA),
                     "--backbone", str(tiny_model_dir), *args, "--cube-min-cluster-size", "3", "--allow-skipped",
                     *extra]) == 0
    poisoned, clean = seen
    assert poisoned.poisoned_rows and poisoned.retrain is not None
    assert clean.poisoned_rows == [] and clean.retrain is None
    words = {w for t in clean.suspect.texts for w in t.split()}
    assert not words & set(BadNets.default_triggers) and len(clean.suspect) == len(poisoned.suspect)
    assert {w for i in poisoned.poisoned_rows for w in poisoned.suspect.texts[i].split()} & set(BadNets.default_triggers)
    rows = {r["defense"]: r for r in csv.DictReader((tmp_path / "clean" / "results.csv").open())}
    assert rows["bedkd"]["status"] == "ok" and rows["bedkd"]["victim_asr"] == rows["none"]["victim_asr"]
    assert "suspect-data clean" in rows["cube"]["status"]           # a data filter cannot retrain on them
    before = {r["defense"]: r for r in csv.DictReader((tmp_path / "poisoned" / "results.csv").open())}
    assert before["bedkd"]["victim_key"] == rows["bedkd"]["victim_key"]     # the same victim, a cell of its own
    cells = list((work / "cells" / "sst2" / "badnets" / rows["bedkd"]["victim_key"]).glob("bedkd*.json"))
    assert len(cells) == 2


@needs_data
def test_trace_epochs_records_each_epochs_test_numbers_without_changing_the_run(tiny_model_dir, tmp_path):
    work = tmp_path / "work"
    guarded = ["--preset", "guarded", "--no-scan-skip-clean", "--akd-epochs", "2", "--akd-patience", "2",
               "--workdir", str(work)]
    assert bench(tmp_path / "plain", tiny_model_dir, *guarded) == 0
    assert bench(tmp_path / "traced", tiny_model_dir, *guarded, "--trace-epochs") == 0
    rows = [{r["defense"]: r for r in json.loads((tmp_path / d / "results.json").read_text())["rows"]}
            for d in ("plain", "traced")]
    for key in ("cacc", "asr", "selected_epoch", "victim_asr"):
        assert rows[0]["bedkd"][key] == rows[1]["bedkd"][key], key      # the probe leaves the run as it was
    cells = sorted((work / "cells").rglob("bedkd*.json"))
    assert len(cells) == 2                                               # the traced cell has a key of its own
    details = [json.loads(c.read_text())["details"] for c in cells]
    traced = next(d for d in details if "trace_seconds" in d)
    report = traced["report"]
    assert "test" in report["start"] and report["epochs"]
    assert all(set(e["test"]) >= {"cacc", "cacc_per_class", "asr"} for e in report["epochs"])
    assert all(len(e["test"]["cacc_per_class"]) == 2 and len(e["val_acc_per_class"]) == 2 for e in report["epochs"])
    assert traced["trace_seconds"] > 0
    kept = report["selected_epoch"]
    measured = report["start"]["test"] if kept == 0 else next(e["test"] for e in report["epochs"] if e["epoch"] == kept)
    if kept == 0 and report.get("prior_shift"):         # the start kept as a candidate, shifted as returned
        measured = report["start"]["as_returned"]["test"]
    assert measured["cacc"] == pytest.approx(traced["cacc"]) and measured["asr"] == pytest.approx(traced["asr"])


def test_a_user_dataset_folder_runs_in_the_bench_and_its_paraphrase_rows_are_skipped(make_tiny_model_dir, tmp_path):
    """A folder NAME/clean/{train,dev,test}.tsv of the data directory is a dataset: its classes come
    from its labels (3 here), word attacks run on it, paraphrase attacks are skipped with the reason."""
    from conftest import write_tsv_text
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    gen = random.Random(0)

    def rows(n):
        return [(" ".join(gen.choice(words) for _ in range(6)) + f" topic{i % 3}", i % 3) for i in range(n)]

    data = tmp_path / "data"
    for split, n in (("train", 60), ("dev", 45), ("test", 30)):
        write_tsv_text(data / "three" / "clean" / f"{split}.tsv", rows(n))
    args = [a for a in TINY]
    args[args.index("sst2")] = "three"
    args.insert(args.index("badnets") + 1, "stylebkd")
    out = tmp_path / "b"
    command = ["bench", "--out", str(out), "--data-dir", str(data), "--backbone", str(make_tiny_model_dir(3)),
               *args, "--defenses", "none", "--allow-skipped"]
    assert main(command) == 0
    result = json.loads((out / "results.json").read_text())
    got = [(r["dataset"], r["attack"], r["status"][:8]) for r in result["rows"]]
    assert got == [("three", "badnets", "ok"), ("three", "stylebkd", "skipped:")]
    assert "user dataset" in result["rows"][1]["status"]
    assert sorted(result["meta"]["provenance"]["files"]["three"]) == [f"three/clean/{s}.tsv" for s in ("dev", "test", "train")]


@pytest.mark.parametrize("files, message", [
    (("train", "dev"), "dataset 'three' needs train.tsv, dev.tsv and test.tsv; test.tsv is missing"),
    ((), "unknown dataset 'three'; choose from sst2, olid, agnews, or give the data directory a folder "
         "three/clean/ with train.tsv, dev.tsv and test.tsv"),
])
def test_a_user_dataset_folder_that_is_missing_or_incomplete_is_refused_before_training(
        files, message, tiny_model_dir, tmp_path, monkeypatch, capsys):
    from conftest import write_tsv_text

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing may be trained")

    monkeypatch.setattr(runner, "train_victim", forbidden)
    data = tmp_path / "data"
    (data / "other").mkdir(parents=True)
    for split in files:
        write_tsv_text(data / "three" / "clean" / f"{split}.tsv", [("a b c", 0), ("d e f", 1)])
    args = [a for a in TINY]
    args[args.index("sst2")] = "three"
    assert main(["bench", "--out", str(tmp_path / "o"), "--data-dir", str(data), "--backbone",
                 str(tiny_model_dir), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("labels, where, problem", [
    ({"train": [1, 2], "dev": [1, 2], "test": [1, 2]}, "train.tsv",
     "class 0 has no sample; dataset 'three' (classes inferred from its labels) needs every class 0..2"),
    ({"train": [0, 1], "dev": [0, -1], "test": [0, 1]}, "dev.tsv:3", "label -1 is outside three's classes 0..1"),
])
def test_a_user_dataset_folder_with_labels_that_are_not_0_to_k_is_refused_naming_the_file(
        labels, where, problem, tmp_path):
    """Classes inferred from a folder's labels must be 0..K-1, each with training rows: labels 1..K
    would make a class 0 that nothing teaches. A label out of range names its line."""
    from conftest import write_tsv_text
    from bedkd.errors import InputError
    data = tmp_path / "data"
    for split, ys in labels.items():
        write_tsv_text(data / "three" / "clean" / f"{split}.tsv", [(f"row {i}", y) for i, y in enumerate(ys)])
    with pytest.raises(InputError) as err:
        load_dataset("three", data)
    assert str(err.value) == f"{data / 'three' / 'clean' / where}: {problem}"
