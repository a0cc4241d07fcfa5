"""The clean-model floor: the ASR of a model trained without poison, on the same triggered test rows."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from bedkd.bench import runner
from bedkd.cli.main import main

DATA = Path(os.environ.get("BEDKD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _constant_clean_model(label: int):
    """Victim training where the 'clean model' predicts ``label`` for every input, so its floor is
    known exactly; attack victims are trained as usual."""
    real = runner.train_victim

    def train(attack, clf, poisoned, cfg, progress):
        if attack.name != "clean":
            return real(attack, clf, poisoned, cfg, progress)
        with torch.no_grad():
            head = clf.model.classifier
            head.weight.zero_()
            head.bias.copy_(torch.tensor([10.0 if k == label else -10.0 for k in range(head.bias.numel())]))
    return train


@pytest.mark.skipif(not (DATA / "sst2" / "clean").is_dir(), reason=f"no data pack at {DATA}")
@pytest.mark.parametrize("clean_label,floor", [(0, 0.0), (1, 100.0)])
def test_floor_is_the_clean_models_share_of_triggered_rows_given_the_target(tiny_model_dir, tmp_path, monkeypatch,
                                                                              clean_label, floor):
    monkeypatch.setattr(runner, "train_victim", _constant_clean_model(clean_label))
    out = tmp_path / "bench"
    assert main(["bench", "--out", str(out), "--data-dir", str(DATA), "--backbone", str(tiny_model_dir),
                 "--datasets", "sst2", "--attacks", "badnets", "--defenses", "none", "--train-limit", "40",
                 "--eval-limit", "30", "--train-epochs", "1", "--attack-target", "1", "--quiet"]) == 0
    rows = {(r["attack"], r["defense"]): r for r in csv.DictReader((out / "results.csv").open())}
    assert float(rows[("badnets", "none")]["floor_asr"]) == floor
    # the no-attack row is the clean model itself: its CACC is that of a constant predictor
    clean = rows[("clean", "none")]
    assert clean["victim_cacc"] == clean["clean_model_cacc"]
