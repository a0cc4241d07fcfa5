"""benchmarks/epochs.py: a BeDKD cell's epoch records as a table."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "epochs.py"
spec = importlib.util.spec_from_file_location("epochs_script", SCRIPT)
epochs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(epochs)


def test_table_has_a_row_per_epoch_with_the_proxy_that_chose_it():
    cell = {"row": {"dataset": "sst2", "attack": "stylebkd", "defense": "bedkd", "victim_key": "k", "code_version": "v",
                    "cacc": 82.0, "cacc_change": -3.35, "asr": 27.2, "floor_asr": 28.8},
            "details": {"report": {"selected_epoch": 1, "stop_reason": "patience",
                                   "start": {"val_acc_weighted": 0.8326, "flag_agreement": 1.0},
                                   "epochs": [{"epoch": 1, "val_acc_weighted": 0.809, "val_change_se": 0.027,
                                               "flag_agreement": 0.43, "punish_loss": 0.47}]}}}
    md = epochs.table(cell, "cell.json")
    assert "test CACC 82.00 (change -3.35), ASR 27.20 (floor 28.80); selected epoch 1 (patience)" in md
    assert "| 0 | 0.833 |  |  |  | 1.000 |  |  |" in md
    assert "| 1 | 0.809 | 0.027 |  |  | 0.430 | 0.470 |  |" in md
