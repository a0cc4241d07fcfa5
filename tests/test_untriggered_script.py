"""benchmarks/untriggered.py: bench rows with their untriggered ASR, one table."""
from __future__ import annotations

import json

from conftest import load_benchmark

untriggered = load_benchmark("untriggered")


def test_table_pairs_each_backdoors_numbers_and_marks_what_was_not_measured(tmp_path, capsys):
    rows = [{"defense": "none", "cacc": 82.89, "asr": 100.0, "second_asr": 100.0, "floor_asr": 10.34,
             "second_floor_asr": 23.75, "untriggered_asr": None, "code_version": "v1"},
            {"defense": "bedkd-guarded", "cacc": 84.17, "asr": 5.98, "second_asr": 40.0, "floor_asr": 10.34,
             "second_floor_asr": 23.75, "untriggered_asr": 7.27, "second_untriggered_asr": 37.92, "floor_untriggered_asr": 10.5,
             "second_floor_untriggered_asr": 31.2, "code_version": "v2"}]
    (tmp_path / "olid_two").mkdir()
    (tmp_path / "olid_two" / "results.json").write_text(json.dumps({"meta": {}, "rows": rows}))
    assert untriggered.main([str(tmp_path / "olid_two")]) == 0
    out = capsys.readouterr().out
    assert "| olid_two | none | 82.9 | 100.0 / 100.0 | 10.3 / 23.8 | - | - | v1 |" in out
    assert "| olid_two | bedkd-guarded | 84.2 | 6.0 / 40.0 | 10.3 / 23.8 | 7.3 / 37.9 | 10.5 / 31.2 | v2 |" in out


def test_a_folder_without_results_is_named(tmp_path, capsys):
    assert untriggered.main([str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
