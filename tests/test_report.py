"""The bench report's bar (issue 10) and its summary, on hand-made rows."""
from bedkd.bench.report import markdown, meets_bar, summarize


def _row(attack, defense, asr, floor, cacc_change, status="ok", **extra):
    return {"dataset": "d", "attack": attack, "defense": defense, "status": status, "asr": asr,
            "floor_asr": floor, "cacc_change": cacc_change, "victim_asr": 100.0, "asr_reduction": 100.0 - (asr or 0),
            "cacc": 80.0, "flagged": None, "clean_rows_used": 0, "defense_seconds": 1.0, **extra}


def test_bar_uses_five_points_or_floor_plus_two_and_a_one_point_cacc_drop():
    assert meets_bar(_row("badnets", "bedkd", 5.0, 1.0, -1.0))
    assert not meets_bar(_row("badnets", "bedkd", 5.1, 1.0, 0.0))          # over 5 with a low floor
    assert meets_bar(_row("synbkd", "bedkd", 26.0, 24.0, 0.0))             # floor + 2
    assert not meets_bar(_row("synbkd", "bedkd", 26.1, 24.0, 0.0))
    assert not meets_bar(_row("badnets", "bedkd", 0.0, 1.0, -1.01))        # harm
    assert meets_bar(_row("clean", "bedkd", None, None, 0.5))
    assert not meets_bar(_row("clean", "bedkd", None, None, -0.6))
    assert not meets_bar(_row("clean", "bedkd", None, None, 0.6))          # either way
    assert meets_bar(_row("badnets", "none", 100.0, 1.0, 0.0)) is None     # the victim is not judged
    assert meets_bar(_row("badnets", "bedkd", None, None, None, status="failed: x")) is None


def test_summary_and_markdown_list_the_missed_cells():
    rows = [_row("badnets", "bedkd", 1.0, 1.0, 0.0, backdoor_found=True, target_found=1),
            _row("ep", "bedkd", 90.0, 1.0, 0.0, backdoor_found=False),
            _row("clean", "bedkd", None, None, -2.0)]
    s = summarize(rows)["bedkd"]
    assert s["bar_met"] == ["d/badnets"] and s["bar_missed"] == ["d/ep", "d/clean"]
    md = markdown(rows, {})
    assert "1 of 3" in md and "d/ep, d/clean" in md
    assert "backdoor, target 1" in md and "no evidence" in md


def test_the_untriggered_asr_gets_a_column_only_where_a_row_measured_it():
    rows = [_row("badnets", "bedkd", 13.0, 8.0, 0.0, untriggered_asr=14.0, floor_untriggered_asr=12.5),
            _row("badnets", "strip", 9.0, 8.0, 0.0, floor_untriggered_asr=12.5)]
    md = markdown(rows, {})
    assert "| attack | defense | CACC | ASR | floor | untriggered | clean untriggered | ΔCACC |" in md
    assert "| badnets | bedkd | 80.00 | 13.00 | 8.00 | 14.00 | 12.50 | +0.00 |" in md
    assert "| badnets | strip | 80.00 | 9.00 | 8.00 | – | 12.50 | +0.00 |" in md
    assert "untriggered" not in markdown([_row("badnets", "bedkd", 1.0, 1.0, 0.0)], {}).split("## d")[1]
