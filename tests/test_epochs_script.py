"""benchmarks/epochs.py: one BeDKD cell's epoch records, with the reset choice and the prior shift."""
from __future__ import annotations

from conftest import load_benchmark

epochs = load_benchmark("epochs")

ROW = {"dataset": "olid", "attack": "ep", "defense": "bedkd", "victim_key": "k", "code_version": "v1", "cacc": 83.1,
       "cacc_change": 3.3, "asr": 8.1, "floor_asr": 9.4}


def _cell(**data_and_report) -> dict:
    data = {"reset_embeddings": ["jt:j", "jt:##t"], **data_and_report.pop("data", {})}
    return {"row": ROW, "details": {"report": {"selected_epoch": 1, "stop_reason": "patience", "data": data,
                                               "start": {"val_acc_weighted": 0.75, "trigger_asr": 1.0},
                                               "epochs": [{"epoch": 1, "val_acc_weighted": 0.77}],
                                               **data_and_report}}}


def test_the_measured_reset_choice_and_the_prior_shift_sit_above_the_epochs():
    choice = [{"words": ["jt"], "chosen": "base", "scores": {
        "keep": {"changed": 0.79, "accuracy": 0.76, "cost": 0.79},
        "base": {"changed": 0.049, "accuracy": 0.777, "cost": 0.049}}}]
    shift = {"offsets": [0.374, -0.374], "val_acc_weighted_before": 0.756, "val_acc_weighted_after": 0.773,
             "applied": True}
    out = epochs.table(_cell(data={"reset_choice": choice}, prior_shift=shift), "cell.json")
    assert "| jt | keep | 0.790 | 0.760 | 0.790 |  |" in out and "| jt | base | 0.049 | 0.777 | 0.049 | yes |" in out
    assert "offsets +0.374, -0.374; class-weighted held-out accuracy 0.756 -> 0.773; applied." in out
    assert out.index("| jt | base") < out.index("| epoch |") and "| 1 | 0.770 |" in out
    plain = epochs.table(_cell(), "cell.json")
    assert "Reset value chosen" not in plain and "prior shift" not in plain and "jt:j, jt:##t" in plain


def test_the_start_as_returned_sits_between_the_start_and_the_first_epoch():
    cell = _cell()
    cell["details"]["report"]["start"]["as_returned"] = {"val_acc_weighted": 0.76, "trigger_asr": 0.1,
                                                          "bias_shift": 0.3}
    out = epochs.table(cell, "cell.json")
    assert out.index("| 0 | 0.750 |") < out.index("| 0 as returned | 0.760 |") < out.index("| 1 | 0.770 |")
    assert "as_returned" not in out


def test_a_missing_or_foreign_file_is_one_line_and_status_2(tmp_path, capsys):
    assert epochs.main([str(tmp_path / "absent.json")]) == 2
    foreign = tmp_path / "results.json"
    foreign.write_text('{"rows": []}')
    assert epochs.main([str(foreign)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("epochs.py: ") for line in err) and "results.json" in err[1]


def test_a_counter_retry_adds_the_first_runs_epochs_below():
    first = {"relabelled_rows": 879, "selected_epoch": 0, "stop_reason": "completed all epochs", "seconds": 612.4,
             "epochs": [{"epoch": 1, "val_acc_weighted": 0.743}, {"epoch": 2, "val_acc_weighted": 0.725}]}
    out = epochs.table(_cell(counter_retry=first), "cell.json")
    assert "879 relabelled rows, selected epoch 0 (completed all epochs), 612 s" in out
    assert out.index("| 1 | 0.770 |") < out.index("First run") < out.index("| 1 | 0.743 |") < out.index("| 2 | 0.725 |")
    assert "First run" not in epochs.table(_cell(), "cell.json")


def test_a_traced_cell_adds_each_records_test_cacc_and_asr():
    cell = _cell()
    report = cell["details"]["report"]
    report["start"]["test"] = {"cacc": 84.17, "asr": 100.0}
    report["epochs"][0]["test"] = {"cacc": 83.1, "asr": 8.1}
    out = epochs.table(cell, "cell.json")
    assert "test CACC | test ASR |" in out and "| 1 | 0.770 |" in out and "| 83.10 | 8.10 |" in out
    assert "| 84.17 | 100.00 |" in out and "| test CACC |" not in epochs.table(_cell(), "cell.json")


def test_each_epochs_proxy_is_paired_row_by_row_with_the_lowest():
    cell = _cell()
    report = cell["details"]["report"]
    report["epochs"] = [{"epoch": 1, "trigger_asr": 6 / 100, "clean_to_target": 0.0, "trigger_row_effects": "+" * 6 + "0" * 94},
                        {"epoch": 2, "trigger_asr": 0.0, "clean_to_target": 0.0, "trigger_row_effects": "0" * 100}]
    out = epochs.table(cell, "cell.json")
    assert "against epoch 2's (the lowest), paired over its 100 held-out trigger rows" in out
    assert "| 1 | 6 | 0 | 0.060 | 0.024 | 2.51 |" in out and "| 2 | 0 | 0 | 0.000 | 0.000 |  |" in out
    assert "paired" not in epochs.table(_cell(), "cell.json")
    # a trigger that keeps rows off its target: clipped, both epochs are zero (the later is the reference);
    # under the cell's signed_proxy the lower one is
    report["epochs"] = [{"epoch": 1, "trigger_asr": 0.0, "clean_to_target": 0.1, "trigger_row_effects": "-" * 10 + "0" * 90},
                        {"epoch": 2, "trigger_asr": 0.05, "clean_to_target": 0.1, "trigger_row_effects": "-" * 5 + "0" * 95}]
    assert "against epoch 2's (the lowest)" in epochs.table(cell, "cell.json")
    report["config"] = {"akd": {"signed_proxy": True}}
    assert "against epoch 1's (the lowest)" in epochs.table(cell, "cell.json")


def test_each_classs_held_out_and_test_accuracy_sit_below_the_epochs():
    cell = _cell()
    report = cell["details"]["report"]
    report["start"].update(val_acc_per_class=[0.9, 0.6], class_shares=[0.664, 0.336],
                           test={"cacc": 84.17, "asr": 100.0, "cacc_per_class": [91.7, 69.6]})
    report["epochs"][0].update(val_acc_per_class=[0.95, 0.45], val_change_se_per_class=[0.01, 0.05],
                               test={"cacc": 78.9, "asr": 0.0, "cacc_per_class": [98.0, 29.6]})
    out = epochs.table(cell, "cell.json")
    assert "shares: 0.664, 0.336" in out and "| epoch | held-out 0 | held-out 1 | test 0 | test 1 |" in out
    assert "| 0 | 0.900 | 0.600 | 91.70 | 69.60 |" in out
    assert "| 1 | 0.950 (0.010) | 0.450 (0.050) | 98.00 | 29.60 |" in out
    assert "held-out 0" not in epochs.table(_cell(), "cell.json")        # records from before: nothing


def test_the_mean_of_the_last_epochs_sits_below_them():
    mean = {"epochs": [1, 2], "kept": True, "val_acc_weighted": 0.772}
    out = epochs.table(_cell(epoch_mean=mean), "cell.json")
    assert out.index("| 1 | 0.770 |") < out.index("| mean of 1, 2 (kept) | 0.772 |")
    out = epochs.table(_cell(epoch_mean={**mean, "kept": False}), "cell.json")
    assert "| mean of 1, 2 (outside the guard) | 0.772 |" in out and "mean of" not in epochs.table(_cell(), "c")
