"""The bench report's bar (issue 10) and its summary, on hand-made rows."""
from bedkd.bench.report import bar_over_floors, markdown, meets_bar, summarize


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


def test_the_bar_over_several_floors_says_where_the_verdict_turns_on_the_clean_model():
    def spread(asr, low, high, cacc_change=0.0, **extra):
        return _row("badnets", "bedkd", asr, low, cacc_change, floor_models=3, floor_asr_min=low,
                    floor_asr_max=high, **extra)
    assert bar_over_floors(spread(9.0, 8.0, 12.0)) == "yes"          # under 8 + 2 already
    assert bar_over_floors(spread(11.0, 8.0, 12.0)) == "depends"     # over 8 + 2, under 12 + 2
    assert bar_over_floors(spread(14.5, 8.0, 12.0)) == "no"
    assert bar_over_floors(spread(9.0, 8.0, 12.0, cacc_change=-1.5)) == "no"     # harm, whatever the floor
    assert bar_over_floors(spread(4.0, 1.0, 6.0)) == "yes"            # the 5-point minimum
    two = spread(3.0, 1.0, 2.0, second_asr=11.0, second_floor_asr=9.0, second_floor_asr_min=8.0,
                 second_floor_asr_max=10.0)
    assert bar_over_floors(two) == "depends"                          # the second backdoor decides
    assert bar_over_floors(_row("badnets", "bedkd", 9.0, 8.0, 0.0)) is None       # one clean model only
    assert bar_over_floors(spread(100.0, 8.0, 12.0) | {"defense": "none"}) is None
    rows = [spread(11.0, 8.0, 12.0), spread(1.0, 8.0, 12.0) | {"attack": "addsent"}]
    assert summarize(rows)["bedkd"]["bar_depends_on_floor"] == ["d/badnets"]
    md = markdown(rows, {})
    assert "| 8.0–12.0 |" in md and "| depends |" in md and "3 clean models" in md
    assert "turns on which clean model gives the floor: bedkd: d/badnets." in md
    assert "floors of the clean models" not in markdown([_row("badnets", "bedkd", 1.0, 1.0, 0.0)], {})
