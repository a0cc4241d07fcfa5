"""benchmarks/guard_margin.py: the guard's held-out drop beside the test CACC change, per cached cell."""
from __future__ import annotations

import json
import sys

from conftest import load_benchmark

script = load_benchmark("guard_margin")


def _cell(path, drop, se, change, selection="guarded", victim="v1"):
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"config": {"akd": {"selection": selection, "max_cacc_drop": 1.0}}, "data": {"val_rows": 232},
              "start": {"val_acc_weighted": 0.90},
              "epochs": [{"val_acc_weighted": 0.95, "val_change_se": 0.01},
                         {"val_acc_weighted": 0.90 - drop / 100, "val_change_se": se / 100}],
              "selected_epoch": 2}
    path.write_text(json.dumps({"row": {"dataset": "sst2", "attack": "stylebkd", "victim_key": victim,
                                        "cacc_change": change, "asr": 8.0, "code_version": "c"},
                                "details": {"report": report}}))


def test_cells_are_split_by_whether_the_held_out_drop_was_within_the_guards_point(tmp_path):
    work = tmp_path / "work"
    _cell(work / "cells/sst2/stylebkd/v1/bedkd.json", drop=2.4, se=2.4, change=-5.8)
    _cell(work / "cells/sst2/stylebkd/v2/bedkd-guarded.json", drop=0.5, se=1.8, change=0.4, victim="v2")
    _cell(work / "cells/sst2/stylebkd/v3/bedkd.json", drop=3.0, se=1.0, change=-3.0, selection="last", victim="v3")
    (work / "cells/sst2/stylebkd/v3/none.json").write_text(json.dumps({"row": {}}))
    rows = script.cells(work)
    assert [(r["cell"].split("/")[-2], round(r["held_out_drop"], 6), r["guard_se"]) for r in rows] == \
        [("v1", 2.4, 2.0), ("v2", 0.5, 2.0)]              # the cell chosen otherwise and the victim row left out
    md = script.markdown(rows, {"command": "c", "date": "d", "code_version": "v", "workdir": str(work)})
    assert "| within max_cacc_drop | 1 | 1 | 0 | +0.4 |" in md
    assert "| beyond it, within the noise margin | 1 | 1 | 1 | -5.8 |" in md
    assert md.index("v1/bedkd.json") < md.index("v2/bedkd-guarded.json")        # the largest drop first


def test_a_folder_that_is_not_a_workdir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["guard_margin.py", "--workdir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert script.main() == 2
    assert "no cells/ folder" in capsys.readouterr().err and not (tmp_path / "o").exists()
