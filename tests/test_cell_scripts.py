"""benchmarks/epochs.py, punish_when_reuse.py and retry_screen.py on hand-made cell records."""
from __future__ import annotations

from conftest import load_benchmark as _load


def _record(epoch, trigger_asr, clean_to_target=0.1, punish_loss=0.5):
    return {"epoch": epoch, "val_acc_weighted": 0.8, "val_change_se": 0.01, "trigger_asr": trigger_asr,
            "clean_to_target": clean_to_target, "punish_loss": punish_loss}


def _report(proxies, punish_rows=33):
    start, *epochs = [_record(i, p + 0.1) for i, p in enumerate(proxies)]
    return {"start": start, "epochs": epochs, "selected_epoch": 2, "stop_reason": "completed all epochs",
            "data": {"punish_rows": punish_rows}}


def test_reuse_needs_no_punish_rows_or_a_proxy_above_the_tolerance_before_the_last_epoch():
    reuse = _load("punish_when_reuse")
    assert reuse.unchanged(_report([0.5, 0.3, 0.0]))[0]             # low only after the last cycle
    same, why = reuse.unchanged(_report([0.5, 0.03, 0.0]))
    assert not same and "cycle 2" in why
    assert reuse.unchanged(_report([0.0, 0.0], punish_rows=0))[0]
    assert reuse.unchanged({"epochs": []})[0]


def test_epochs_table_lists_the_start_and_every_epoch():
    epochs = _load("epochs")
    cell = {"row": {"dataset": "olid", "attack": "badnets", "defense": "bedkd", "victim_key": "abc",
                    "code_version": "v", "cacc": 80.0, "cacc_change": -1.5, "asr": 30.0, "floor_asr": 35.0},
            "details": {"report": _report([0.5, 0.3, 0.0])}}
    text = epochs.table(cell, "cell.json")
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[0] for r in rows] == ["| 0", "| 1", "| 2"]
    assert "change -1.50" in text and "`python benchmarks/epochs.py cell.json`" in text
    assert "reset" not in text
    cell["details"]["report"]["data"] = {"reset_embeddings": ["qv:q", "qv:##v"]}
    assert "Trigger embeddings reset before the cycles: qv:q, qv:##v." in epochs.table(cell, "cell.json")
    assert "relabelled" not in epochs.table(cell, "cell.json")
    cell["details"]["report"]["data"] = {"relabelled_rows": 51, "relabel_left_out": 0, "relabel_spared": 29}
    assert ("Label-check rows relabelled: 51, spared as rows towards a found trigger's target: 29."
            in epochs.table(cell, "cell.json"))
    assert "Target-rate cap" not in epochs.table(cell, "cell.json")
    cell["details"]["report"]["target_rate_cap"] = {
        "start_rate": 0.113, "rate_before": 0.161, "rate_after": 0.113, "rows": 124, "offsets": [-0.4, 0.0],
        "val_acc_weighted_before": 0.882, "val_acc_weighted_after": 0.875, "applied": True,
        "test": {"cacc": 86.5, "asr": 14.0}}
    assert ("held-out rows to the target 0.113 at the start, 0.161 kept, 0.113 capped (124 rows); offsets -0.400, "
            "+0.000; class-weighted held-out accuracy 0.882 -> 0.875; applied; test after the cap: CACC 86.50, ASR "
            "14.00.") in epochs.table(cell, "cell.json")
    cell["details"]["report"]["target_rate_cap_replay"] = {
        "start_rate": 0.073, "rate_before": 0.081, "rate_after": 0.073, "rows": 124, "rows_joined": 1, "rows_left": 0,
        "offsets": [-0.79, 0.0], "val_acc_weighted_before": 0.913, "val_acc_weighted_after": 0.886, "applied": True,
        "passes_margin": False, "paired_z": 2.0, "test": {"cacc": 86.0, "asr": 13.0}}
    assert ("Target-rate cap, replayed (not applied): held-out rows to the target 0.073 at the start, 0.081 kept "
            "(124 rows; +1 -0 against the start); without the margin it would act (offsets -0.790, +0.000; "
            "class-weighted held-out accuracy 0.913 -> 0.886; test with the offsets: CACC 86.00, ASR 13.00); the "
            "excess does not pass the margin of 2.0 standard errors.") in epochs.table(cell, "cell.json")
    cell["details"]["report"]["target_rate_cap"].update(rows_joined=7, rows_left=1, paired_z=2.0)
    assert "0.113 capped (124 rows; +7 -1 against the start, margin 2.0 standard errors); offsets" in \
        epochs.table(cell, "cell.json")


def test_table_has_a_row_per_epoch_with_the_proxy_that_chose_it():
    cell = {"row": {"dataset": "sst2", "attack": "stylebkd", "defense": "bedkd", "victim_key": "k", "code_version": "v",
                    "cacc": 82.0, "cacc_change": -3.35, "asr": 27.2, "floor_asr": 28.8},
            "details": {"report": {"selected_epoch": 1, "stop_reason": "patience",
                                   "start": {"val_acc_weighted": 0.8326, "flag_agreement": 1.0},
                                   "epochs": [{"epoch": 1, "val_acc_weighted": 0.809, "val_change_se": 0.027,
                                               "flag_agreement": 0.43, "punish_loss": 0.47}]}}}
    md = _load("epochs").table(cell, "cell.json")
    assert "test CACC 82.00 (change -3.35), ASR 27.20 (floor 28.80); selected epoch 1 (patience)" in md
    assert "| 0 | 0.833 |  |  |  | 1.000 |  |  |" in md
    assert "| 1 | 0.809 | 0.027 |  |  | 0.430 | 0.470 |  |" in md


def test_a_clean_model_cell_has_no_asr_to_show():
    cell = {"row": {"dataset": "agnews", "attack": "clean", "defense": "bedkd", "victim_key": "k", "code_version": "v",
                    "cacc": 86.84, "cacc_change": -2.12, "asr": None, "floor_asr": None},
            "details": {"report": _report([0.5, 0.3])}}
    md = _load("epochs").table(cell, "cell.json")
    assert "test CACC 86.84 (change -2.12); selected epoch 2" in md and "ASR" not in md


def test_the_retry_screen_marks_only_runs_that_kept_no_epoch_and_relabelled_more_than_the_trust_rows():
    screen = _load("retry_screen")

    def cell(relabelled, chosen):
        report = {**_report([0.5, 0.3]), "selected_epoch": chosen, "config": {"akd": {"trust_per_class": 320}},
                  "data": {} if relabelled is None else {"relabelled_rows": relabelled}}
        return {"row": {"dataset": "olid", "attack": "synbkd", "victim_key": "v", "defense": "bedkd", "asr": 98.0},
                "details": {"report": report}}

    acts = [screen.cell_line(cell(r, e), "c.json").split(" | ")[8] for r, e in
            [(879, 0), (879, 2), (320, 0), (None, 0)]]
    assert acts == ["yes", "no", "no", "no"]


def test_the_screen_names_the_refused_prior_shifts_that_start_could_keep():
    screen = _load("retry_screen")

    def cell(shifts, start_shift=0.05, final=True):
        report = _report([0.5] * (len(shifts) + 1))
        report["start"]["as_returned"] = {"bias_shift": start_shift}
        for e, b in zip(report["epochs"], shifts):
            e["bias_shift"] = b
        report.update(config={"akd": {"trust_per_class": 320}}, prior_shift={"applied": final})
        return {"row": {"dataset": "sst2", "attack": "badnets", "victim_key": "v", "defense": "bedkd", "asr": 10.0},
                "details": {"report": report}}

    def start(c):
        return screen.cell_line(c, "c.json").split(" | ")[9]

    assert start(cell([0.3, 0.6])) == "no"
    assert start(cell([0.0, 0.6, 0.0], final=False)) == "can: epochs 1, 3; final"
    assert start(cell([0.3], start_shift=0.0)) == "can: epoch start"
    unchanged = cell([0.0])
    unchanged["details"]["report"]["unchanged"] = True
    assert start(unchanged) == "no"


def test_the_screen_names_the_runs_whose_kept_epoch_sends_more_held_out_rows_to_the_target():
    screen = _load("retry_screen")

    def cell(start_rate, kept_rate, chosen=2):
        report = _report([0.5, 0.3, 0.1])
        report["start"]["clean_to_target"] = start_rate
        report["epochs"][1]["clean_to_target"] = kept_rate
        report.update(config={"akd": {"trust_per_class": 320}}, selected_epoch=chosen)
        return {"row": {"dataset": "sst2", "attack": "ep", "victim_key": "v", "defense": "bedkd", "asr": 19.0},
                "details": {"report": report}}

    def cap(c):
        return screen.cell_line(c, "c.json").split(" | ")[10]

    assert cap(cell(0.113, 0.161)) == "can: 0.113 -> 0.161"
    assert cap(cell(0.113, 0.113)) == "no" and cap(cell(0.2, 0.15)) == "no"
    assert cap(cell(0.113, 0.161, chosen=0)) == "no"                 # the model before the cycles
    assert cap(cell(None, 0.161)) == "no"                             # no found trigger: no rate to compare
    few = cell(0.073, 0.081)                                          # one row of 124: below the margin's 4
    few["details"]["report"]["epochs"][1]["trigger_row_effects"] = "0" * 124
    assert cap(few) == "no"
    few["details"]["report"]["epochs"][1]["clean_to_target"] = 0.113
    assert cap(few) == "can: 0.073 -> 0.113"                          # five rows: some churn could pass
    # records that hold the rows: only an excess beyond the cap's margin (a sign test, 2 standard errors)
    recorded = cell(0.1, 0.2)
    recorded["details"]["report"]["start"]["clean_to_target_rows"] = "1" * 10 + "0" * 90
    recorded["details"]["report"]["epochs"][1]["clean_to_target_rows"] = "1" * 20 + "0" * 80
    assert cap(recorded) == "can: 0.100 -> 0.200 (rows +10 -0)"
    recorded["details"]["report"]["epochs"][1]["clean_to_target_rows"] = "0" * 8 + "1" * 12 + "0" * 80
    assert cap(recorded) == "no"                                      # +10 -8: churn, not a lean
    replay = {"start_rate": 0.1, "rate_before": 0.2, "rows_joined": 10, "rows_left": 0, "applied": True,
              "passes_margin": True, "test": {"cacc": 86.0, "asr": 13.5}}
    recorded["details"]["report"]["target_rate_cap_replay"] = replay
    assert cap(recorded) == "can: 0.100 -> 0.200 (rows +10 -0; replayed: ASR 13.50, CACC 86.00)"
    replay["passes_margin"] = False
    assert cap(recorded) == "no"
