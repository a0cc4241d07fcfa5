"""``bedkd attack`` for every attack kind and ``bedkd train --attack-dir`` for training-time attacks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bedkd.cli import main
from bedkd.data import read_labeled, read_row_indices

DATA = Path(os.environ.get("BEDKD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture
def files(small_rows, write_tsv_file):
    rows = small_rows * 4                                  # 48 rows, 24 per class
    return write_tsv_file("train.tsv", rows), write_tsv_file("test.tsv", small_rows)


def test_ep_attack_then_train_poisons_only_the_trigger_embedding(capsys, files, tiny_model_dir, tmp_path):
    train, test = files
    atk, victim = tmp_path / "atk", tmp_path / "victim"
    code, err = run(capsys, "attack", "--attack", "ep", "--train", train, "--test", test, "--out", atk,
                    "--rate", "0.25", "--ep-epochs", "2")
    assert code == 0, err
    assert "training-time attack" in err and "--attack-dir" in err
    meta = json.loads((atk / "attack.json").read_text())
    assert meta["trains_victim"] and meta["options"]["options"]["epochs"] == 2
    poisoned = read_row_indices(atk / "poisoned_rows.txt")
    assert len(poisoned) == 12 and all("cf" in read_labeled(atk / "train.tsv").texts[r].split() for r in poisoned)

    code, err = run(capsys, "train", "--attack-dir", atk, "--out", victim, "--backbone", tiny_model_dir,
                    "--epochs", "1", "--quiet")
    assert code == 0, err
    report = json.loads((victim / "train_report.json").read_text())
    stages = [h.get("stage") for h in report["history"]]
    assert "clean" in stages and "embedding" in stages     # the attack's own training ran
    assert report["attack_dir"] == str(atk)


def test_data_poisoning_attack_dir_trains_by_plain_finetuning(capsys, files, tiny_model_dir, tmp_path):
    train, test = files
    assert run(capsys, "attack", "--attack", "badnets", "--train", train, "--test", test, "--out",
               tmp_path / "atk")[0] == 0
    code, err = run(capsys, "train", "--attack-dir", tmp_path / "atk", "--out", tmp_path / "v",
                    "--backbone", tiny_model_dir, "--epochs", "1", "--quiet")
    assert code == 0, err
    history = json.loads((tmp_path / "v" / "train_report.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1] and "stage" not in history[0]


def test_train_needs_exactly_one_source_and_a_valid_attack_dir(capsys, files, tiny_model_dir, tmp_path):
    train, _ = files
    code, err = run(capsys, "train", "--out", tmp_path / "v", "--backbone", tiny_model_dir)
    assert code == 2 and "exactly one of --train and --attack-dir" in err
    (tmp_path / "atk").mkdir()
    code, err = run(capsys, "train", "--attack-dir", tmp_path / "atk", "--out", tmp_path / "v")
    assert code == 2 and "attack.json" in err and "not found" in err
    (tmp_path / "atk" / "attack.json").write_text("{not json")
    code, err = run(capsys, "train", "--attack-dir", tmp_path / "atk", "--out", tmp_path / "v")
    assert code == 2 and "not a valid attack record" in err


def test_wrong_own_options_are_refused(capsys, files, tmp_path):
    from bedkd.attacks import AttackConfig, EPConfig, make_attack
    from bedkd.errors import ConfigError
    with pytest.raises(ConfigError, match="takes no own options"):
        make_attack("badnets", AttackConfig(), options=EPConfig())
    with pytest.raises(ConfigError, match="takes SOSConfig"):
        make_attack("sos", AttackConfig(), options=EPConfig())


@pytest.mark.skipif(not (DATA / "sst2" / "clean").is_dir(), reason=f"no data pack at {DATA}")
def test_paraphrase_attack_from_the_cli(capsys, tmp_path):
    clean = DATA / "sst2" / "clean"
    code, err = run(capsys, "attack", "--attack", "stylebkd", "--train", clean / "train.tsv", "--test",
                    clean / "test.tsv", "--dataset", "sst2", "--data-dir", DATA, "--style", "bible",
                    "--rate", "0.05", "--out", tmp_path / "atk")
    assert code == 0, err
    out = read_labeled(tmp_path / "atk" / "train.tsv")
    rows = read_row_indices(tmp_path / "atk" / "poisoned_rows.txt")
    original = read_labeled(clean / "train.tsv")
    assert len(rows) == round(0.05 * len(original))
    assert all(out.labels[r] == 1 and out.texts[r] != original.texts[r] for r in rows)
    code, err = run(capsys, "attack", "--attack", "synbkd", "--train", clean / "train.tsv", "--test",
                    clean / "test.tsv", "--out", tmp_path / "atk2")
    assert code == 2 and "name the dataset" in err
