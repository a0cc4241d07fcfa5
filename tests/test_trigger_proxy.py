"""The trigger proxy with found triggers of two targets: pooled, or the worst target's."""
from __future__ import annotations

import numpy as np
import pytest

from bedkd.defenses.purifiers import akd
from bedkd.defenses.purifiers.akd import AKDConfig, Validator


@pytest.fixture
def predicts_first_token(monkeypatch):
    """A 'model' that predicts, for each row, the class written as the row's first token id."""
    def fake(model, ids, pad):
        return np.eye(2)[[row[0] for row in ids]]
    monkeypatch.setattr(akd, "predict_proba_ids", fake)


def _validator(worst: bool) -> Validator:
    # 8 held-out rows: 0-3 of class 1 (probed with target 0's trigger), 4-7 of class 0 (target 1's)
    val_labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    val_ids = [[int(y)] for y in val_labels]                    # predicted correctly without a trigger
    targets = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    with_trigger = [[0], [0], [0], [1], [0], [0], [0], [0]]     # target 0's trigger still flips 3 of 4
    return Validator(0, val_ids, val_labels, np.array([0.5, 0.5]), trigger_ids=with_trigger,
                     trigger_rows=np.arange(8), trigger_targets=targets, worst_target=worst)


def test_pooled_proxy_averages_a_live_backdoor_with_a_removed_one(predicts_first_token):
    record, _ = _validator(worst=False)(None)
    assert record["trigger_asr"] == pytest.approx(3 / 8) and record["clean_to_target"] == 0.0


def test_worst_target_proxy_shows_the_backdoor_that_is_left(predicts_first_token):
    record, _ = _validator(worst=True)(None)
    assert record["trigger_asr"] == pytest.approx(3 / 4) and record["clean_to_target"] == 0.0


def test_worst_target_is_an_added_option_that_leaves_earlier_keys_alone():
    assert "proxy_targets" not in AKDConfig().to_dict()
    assert AKDConfig(proxy_targets="worst").to_dict()["proxy_targets"] == "worst"


def test_each_trigger_rows_effect_is_recorded(predicts_first_token):
    record, _ = _validator(worst=False)(None)
    assert record["trigger_row_effects"] == "+++0" + "0000" and len(record["trigger_row_effects"]) == 8
    assert record["clean_to_target_rows"] == "0" * 8         # none went to the target without the trigger
    assert record["val_acc_per_class"] == [1.0, 1.0]             # each class's held-out rows, all right
