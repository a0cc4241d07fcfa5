"""The scan's label check: suspicious rows whose text a clean-data classifier puts in another class."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bedkd.data import LabeledTexts
from bedkd.defenses import ScanConfig
from bedkd.defenses.data_filters.dmm import Detection
from bedkd.defenses.scanning import decide, label_evidence
from bedkd.defenses.scanning.label_check import check_embeddings, label_check
from bedkd.defenses.scanning.scan import _with_label_check, punish_caps, punished_labels
from bedkd.defenses.scanning.trigger_search import Trigger, TriggerSearch
from bedkd.errors import ConfigError
from bedkd.modeling import load_classifier
from test_bedkd import synthetic, victim  # noqa: F401  (victim: the shared fixture)


def _points(gen, n, label, dim=8):
    centre = np.zeros(dim)
    centre[label] = 2.5
    return centre + gen.normal(size=(n, dim))


def _task(flipped: int, seed: int = 0):
    """Clean rows of two classes; suspicious rows of the same two, plus ``flipped`` class-0 points labelled 1."""
    gen = np.random.default_rng(seed)
    clean_x = np.r_[_points(gen, 200, 0), _points(gen, 200, 1)]
    clean_y = np.r_[np.zeros(200, int), np.ones(200, int)]
    suspect_x = np.r_[_points(gen, 900, 0), _points(gen, 900, 1), _points(gen, flipped, 0)]
    suspect_y = np.r_[np.zeros(900, int), np.ones(900 + flipped, int)]
    return clean_x, clean_y, suspect_x, suspect_y


def test_rows_labelled_against_their_content_are_evidence_for_their_label():
    check = check_embeddings(*_task(flipped=150), num_labels=2, quantile=0.2, seed=0)
    zero, one = check.evidence
    assert one.log10_p > 3 > 2 > zero.log10_p      # 200 clean rows per label bound the statistic
    assert 100 < one.excess < 170               # most of the 150 flipped rows
    assert check.flagged[-150:].mean() > 0.7 > 0.3 > check.flagged[:1800].mean()
    assert check.clean_accuracy > 0.8 and len(check.thresholds) == 2
    assert check.suspect_accuracy < check.clean_accuracy - 0.04     # the flipped rows read as the other class
    assert check.report()["suspect_accuracy"] == check.suspect_accuracy
    # the flag line is each label's clean quantile: about that share of clean rows falls below it
    assert one.clean_flagged == pytest.approx(0.2 * 200, abs=2)


def test_no_flipped_rows_no_evidence_on_any_label():
    for seed in range(3):
        check = check_embeddings(*_task(flipped=0, seed=seed), num_labels=2, quantile=0.2, seed=seed)
        assert max(e.log10_p for e in check.evidence) < 2
        assert check.suspect_accuracy == pytest.approx(check.clean_accuracy, abs=0.04)


def test_an_imbalanced_clean_pool_keeps_the_flag_line_per_label():
    clean_x, clean_y, suspect_x, suspect_y = _task(flipped=0)
    keep = np.r_[np.arange(200), np.arange(200, 240)]          # 200 rows of class 0, 40 of class 1
    check = check_embeddings(clean_x[keep], clean_y[keep], suspect_x, suspect_y, 2, 0.2, 0)
    assert [e.clean_flagged for e in check.evidence] == [pytest.approx(40, abs=2), pytest.approx(8, abs=2)]
    assert max(e.log10_p for e in check.evidence) < 2


def _three_classes(seed: int, moved: int, sources: tuple[int, ...]):
    """Clean and suspicious rows of three classes; ``moved`` rows per source class in ``sources`` (drawn
    like that class) join the suspicious rows labelled 0."""
    gen = np.random.default_rng(seed)
    clean_x = np.r_[tuple(_points(gen, 200, c) for c in range(3))]
    clean_y = np.repeat(np.arange(3), 200)
    suspect_x = np.r_[tuple(_points(gen, 600, c) for c in range(3)) + tuple(_points(gen, moved, c) for c in sources)]
    suspect_y = np.r_[np.repeat(np.arange(3), 600), np.zeros(moved * len(sources), int)]
    return clean_x, clean_y, suspect_x, suspect_y


def test_on_three_classes_an_excess_from_one_class_only_is_no_evidence_unless_sources_is_any():
    # rows of class 1 only labelled 0: a noisier or shifted training split reads this way
    task = _three_classes(0, moved=150, sources=(1,))
    whole = check_embeddings(*task, num_labels=3, quantile=0.2, seed=0, sources="any")
    split = check_embeddings(*task, num_labels=3, quantile=0.2, seed=0, sources="most")
    assert whole.evidence[0].log10_p > 3 and whole.source_log10_p is None
    assert split.evidence[0].log10_p < 2 and split.evidence[0].excess == whole.evidence[0].excess
    zero = split.source_log10_p[0]                       # the sources of label 0: classes 1 and 2
    assert zero[0] > 3 > 2 > zero[1]
    assert split.flagged.tolist() == whole.flagged.tolist()
    assert split.report()["source_log10_p"] == split.source_log10_p and "source_log10_p" not in whole.report()


def test_on_three_classes_poison_from_every_other_class_is_evidence():
    split = check_embeddings(*_three_classes(1, moved=150, sources=(1, 2)), num_labels=3, quantile=0.2, seed=1)
    assert split.evidence[0].log10_p > 3 and min(split.source_log10_p[0]) == split.evidence[0].log10_p
    assert max(e.log10_p for e in split.evidence[1:]) < 2
    cfg = ScanConfig(label_check=True)
    assert decide(_no_dmm_evidence(), None, cfg, split).check_targets == [0]
    assert "from more than half of the other classes" in decide(_no_dmm_evidence(), None, cfg, split).reasons[0]


def test_on_two_classes_both_sources_rules_are_one_test():
    task = _task(flipped=150)
    most, any_ = (check_embeddings(*task, num_labels=2, quantile=0.2, seed=0, sources=s) for s in ("most", "any"))
    assert [e.to_dict() for e in most.evidence] == [e.to_dict() for e in any_.evidence]
    assert most.source_log10_p is None
    with pytest.raises(ValueError, match="sources"):
        check_embeddings(*task, num_labels=2, quantile=0.2, seed=0, sources="all")


def test_a_class_with_one_clean_row_is_refused():
    clean_x, clean_y, suspect_x, suspect_y = _task(flipped=0)
    keep = np.r_[np.arange(200), [200]]
    with pytest.raises(ValueError, match="at least 2 clean rows"):
        check_embeddings(clean_x[keep], clean_y[keep], suspect_x, suspect_y, 2, 0.2, 0)


def _no_dmm_evidence():
    ones = np.ones(100)
    return label_evidence(ones, np.ones(100, int), np.ones(100, int), ones, np.ones(100, int), np.ones(100, int),
                          0.1, 2)


def test_a_label_found_by_the_label_check_alone_is_punished_on_its_flags():
    check = check_embeddings(*_task(flipped=150), num_labels=2, quantile=0.2, seed=0)
    cfg = ScanConfig(label_check=True, punish_rows="excess")
    verdict = decide(_no_dmm_evidence(), None, cfg, check)
    assert verdict.backdoor and verdict.target == 1 and verdict.dmm_targets == [] and verdict.check_targets == [1]
    assert verdict.check_only == [1] and "label check" in verdict.reasons[0]
    assert punished_labels(verdict, cfg) == [1]
    assert punish_caps(verdict, [1], cfg, 33) == {1: int(round(check.evidence[1].excess))}
    assert verdict.report()["label_check"]["evidence"][1]["label"] == 1
    # a stricter threshold: no evidence, and the reason names the label check's strongest label
    verdict = decide(_no_dmm_evidence(), None, dataclasses.replace(cfg, label_check_evidence=300.0), check)
    assert not verdict.backdoor and "label check: strongest label 1" in verdict.reasons[0]


def test_the_rows_scale_multiplies_the_label_checks_excess_only():
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    check = check_embeddings(*_task(flipped=150), num_labels=2, quantile=0.2, seed=0)
    cfg = ScanConfig(label_check=True, punish_rows="excess", label_check_rows_scale=2.0)
    verdict = decide(_no_dmm_evidence(), None, cfg, check)
    assert verdict.check_only == [1]
    assert punish_caps(verdict, [1], cfg, 33) == {1: int(round(2.0 * check.evidence[1].excess))}
    dmm = [LabelEvidence(0, 900, 100, 200, 22, 1.0, 0.1), LabelEvidence(1, 900, 400, 200, 22, 300.0, 30.0)]
    verdict = decide(dmm, None, cfg, check)                    # DMM's label: its own excess, unscaled
    assert verdict.check_only == [] and punish_caps(verdict, [1], cfg, 33) == {1: 300}
    assert "label_check_rows_scale" not in ScanConfig().to_dict()      # an added option: cache keys unchanged
    with pytest.raises(ConfigError, match="label_check_rows_scale"):
        ScanConfig(label_check_rows_scale=0.0)


def test_a_label_a_trigger_was_found_for_is_not_the_label_checks():
    """`guarded` runs the check: on a word trigger the search finds, the check's evidence on the same
    label changes neither the punished labels nor their rows (the runs are those of the preset without it)."""
    check = check_embeddings(*_task(flipped=150), num_labels=2, quantile=0.2, seed=0)
    search = TriggerSearch([Trigger(["cf"], True, 1, 0.97, 40)], 0.6)
    cfg = ScanConfig(label_check=True, label_check_use="relabel", punish_rows="excess")
    verdict = decide(_no_dmm_evidence(), search, cfg, check)
    assert verdict.check_targets == [1] and verdict.targets == [1] and verdict.check_only == []
    assert punished_labels(verdict, cfg) == punished_labels(decide(_no_dmm_evidence(), search, cfg), cfg) == []


def test_over_dmm_a_label_dmm_also_found_without_a_trigger_is_the_label_checks():
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    check = check_embeddings(*_task(flipped=150), num_labels=2, quantile=0.2, seed=0)
    dmm = [LabelEvidence(0, 900, 100, 200, 22, 1.0, 0.1), LabelEvidence(1, 900, 400, 200, 22, 300.0, 30.0)]
    cfg = ScanConfig(label_check=True, label_check_use="relabel", punish_rows="excess")
    verdict = decide(dmm, None, cfg, check)
    assert verdict.dmm_targets == [1] and verdict.check_targets == [1] and verdict.check_only == []
    assert punish_caps(verdict, [1], cfg, 33) == {1: 300}                      # DMM's rows and excess
    over = dataclasses.replace(cfg, label_check_over_dmm=True)
    verdict = decide(dmm, None, over, check)
    assert verdict.dmm_targets == [1] and verdict.check_only == [1] and punished_labels(verdict, over) == [1]
    assert punish_caps(verdict, [1], over, 33) == {1: int(round(check.evidence[1].excess))}
    search = TriggerSearch([Trigger(["cf"], True, 1, 0.97, 40)], 0.6)
    assert decide(dmm, search, over, check).check_only == []                   # a found trigger: DMM's rows


def test_the_label_check_flags_replace_dmms_only_on_its_own_labels():
    labels = np.array([0, 1, 1, 0, 1])
    det = Detection(rows=np.array([4, 3, 2, 1, 0]), scores=np.full(5, 0.5), labels=labels[[4, 3, 2, 1, 0]],
                    teacher_pred=labels[[4, 3, 2, 1, 0]], flagged=np.ones(5, dtype=bool), kept=np.zeros(5, dtype=bool),
                    n_suspect=5)
    check = check_embeddings(*_task(flipped=0), num_labels=2, quantile=0.2, seed=0)
    check = dataclasses.replace(check, own_prob=np.array([.9, .1, .05, .8, .3]),
                                flagged=np.array([False, True, True, False, True]))
    out = _with_label_check(det, check, [1])
    # scan order: rows 4 (label 1), 3 (0), 2 (1), 1 (1), 0 (0)
    assert out.flagged.tolist() == [True, True, True, True, True] and out.scores.tolist() == [.3, .5, .05, .1, .5]
    assert sorted(out.keep(None, labels=[1]).kept_rows) == [1, 2, 4]
    assert out.keep(2, labels=[1]).kept_rows == [2, 1]              # the lowest probability first
    check = dataclasses.replace(check, flagged=np.array([False, True, False, False, False]))
    assert _with_label_check(det, check, [1]).keep(None, labels=[1]).kept_rows == [1]


def test_label_check_options_are_checked():
    with pytest.raises(ConfigError):
        ScanConfig(label_check_quantile=0.0)
    with pytest.raises(ConfigError):
        ScanConfig(label_check_quantile=0.7)
    assert "label_check" not in ScanConfig().to_dict()         # an added option: cache keys unchanged
    assert "label_check_sources" not in ScanConfig().to_dict()
    with pytest.raises(ConfigError):
        ScanConfig(label_check_sources="all")


def test_label_check_on_texts_finds_the_poisoned_label(tiny_model_dir):
    clean, _ = synthetic(300, seed=3)
    suspect, poisoned = synthetic(600, seed=1, poison_rate=0.2)
    check = label_check(load_classifier(str(tiny_model_dir)), clean, suspect, 2, 0.2, 0)
    assert check.evidence[1].log10_p > 3 > check.evidence[0].log10_p
    assert check.flagged[poisoned].mean() > 0.5
    clean_suspect, _ = synthetic(600, seed=2)
    check = label_check(load_classifier(str(tiny_model_dir)), clean, clean_suspect, 2, 0.2, 0)
    assert max(e.log10_p for e in check.evidence) < 2
    assert isinstance(clean_suspect, LabeledTexts)


def test_scan_with_the_label_check_alone_punishes_the_flagged_rows_of_its_label(victim, tiny_model_dir):
    from bedkd.defenses import BeDKD
    from test_scan import TINY_AKD, TINY_DMM
    clf, suspect, poisoned = victim
    clean, _ = synthetic(300, seed=3)
    # 46 poisoned rows against a few hundred clean ones: a weak test, so a low threshold (this is about routing)
    cfg = ScanConfig(evidence=300.0, trigger_search=False, label_check=True, label_check_encoder=str(tiny_model_dir),
                     label_check_evidence=0.5, min_excess=5.0, punish_rows="excess")
    result = BeDKD(TINY_DMM, TINY_AKD, cfg).scan(clf, clean, suspect, progress=False)
    verdict, det = result.verdict, result.detection
    assert verdict.backdoor and verdict.dmm_targets == [] and verdict.check_targets == [1] and verdict.target == 1
    assert "label_check" in result.seconds
    kept = det.kept_rows
    assert kept and all(suspect.labels[r] == 1 for r in kept)
    assert len(set(kept) & set(poisoned)) > 0.5 * len(kept)
    assert len(kept) == max(TINY_DMM.max_kept, int(round(verdict.label_check.evidence[1].excess)))


def test_three_classes_evidence_on_the_target_only():
    gen = np.random.default_rng(4)
    clean_x = np.r_[_points(gen, 150, 0), _points(gen, 150, 1), _points(gen, 150, 2)]
    clean_y = np.repeat([0, 1, 2], 150)
    suspect_x = np.r_[_points(gen, 600, 0), _points(gen, 600, 1), _points(gen, 600, 2),
                      _points(gen, 80, 0), _points(gen, 80, 1)]          # rows of 0 and 1 labelled 2
    suspect_y = np.r_[np.repeat([0, 1, 2], 600), np.full(160, 2)]
    check = check_embeddings(clean_x, clean_y, suspect_x, suspect_y, 3, 0.2, 0, sources="any")
    assert check.evidence[2].log10_p > 3 and max(e.log10_p for e in check.evidence[:2]) < 2
    assert check.flagged[-160:].mean() > 0.7


def test_label_check_rows_per_cycle_only_when_every_punished_label_is_the_label_checks():
    from bedkd.defenses import AKDConfig, BeDKD
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.scan import Verdict
    dmm1 = [LabelEvidence(0, 900, 60, 200, 14, -3.0, 0.1), LabelEvidence(1, 800, 300, 200, 16, 236.4, 40.0)]
    check = check_embeddings(*_task(flipped=150), num_labels=2, quantile=0.2, seed=0)
    only_check = Verdict(True, 1, [1], [], [], dmm1, None, {}, check, [1])
    both = Verdict(True, 1, [0, 1], [1], [], dmm1, None, {}, check, [0])
    dmm_only = Verdict(True, 1, [1], [1], [], dmm1, None, {})
    scan = ScanConfig(label_check=True, label_check_rows_per_cycle=66)
    bedkd = BeDKD(akd=AKDConfig(punish_rows_per_cycle=33), scan=scan)
    assert bedkd._cycle_config(only_check).punish_rows_per_cycle == 66
    assert bedkd._cycle_config(both).punish_rows_per_cycle == 33          # a DMM label is punished too
    assert bedkd._cycle_config(dmm_only).punish_rows_per_cycle == 33
    assert bedkd._cycle_config(None).punish_rows_per_cycle == 33
    plain = BeDKD(akd=AKDConfig(punish_rows_per_cycle=33), scan=ScanConfig(label_check=True))
    assert plain._cycle_config(only_check).punish_rows_per_cycle == 33


def test_the_check_names_each_rows_likeliest_other_class():
    check = check_embeddings(*_task(flipped=150), num_labels=2, quantile=0.2, seed=0)
    _, _, _, suspect_y = _task(flipped=150)
    assert (check.other == 1 - suspect_y).all()                  # two classes: the other one
    gen = np.random.default_rng(4)
    clean_x = np.r_[_points(gen, 150, 0), _points(gen, 150, 1), _points(gen, 150, 2)]
    suspect_x = np.r_[_points(gen, 300, 1), _points(gen, 80, 0)]    # rows of 1, then rows of 0, all labelled 2
    check = check_embeddings(clean_x, np.repeat([0, 1, 2], 150), suspect_x, np.full(380, 2), 3, 0.2, 0)
    assert (check.other[:300] == 1).mean() > 0.9 and (check.other[300:] == 0).mean() > 0.9


def test_relabel_moves_the_label_checks_own_rows_from_punishment_to_repair():
    from bedkd.defenses import BeDKD
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.scan import Verdict
    clean_x, clean_y, suspect_x, suspect_y = _task(flipped=150)
    check = check_embeddings(clean_x, clean_y, suspect_x, suspect_y, num_labels=2, quantile=0.2, seed=0)
    dmm = [LabelEvidence(0, 900, 60, 200, 14, -3.0, 0.1), LabelEvidence(1, 1050, 300, 200, 16, 236.4, 40.0)]
    suspect = LabeledTexts([f"row {i}" for i in range(len(suspect_y))], suspect_y.tolist())
    detection = _detection_keeping([0, 5, 1800, 1900, 1949], suspect_y)   # two rows of label 0, three of label 1
    relabel = BeDKD(scan=ScanConfig(label_check=True, label_check_use="relabel"))
    only_check = Verdict(True, 1, [1], [], [], dmm, None, {}, check, [1])
    clean = LabeledTexts([f"clean {i}" for i in range(10)], [0, 1] * 5)
    trust = [0, 1, 2, 3, 5, 7]                                  # label 1: rows 1, 3, 5, 7
    out = relabel._relabelled(only_check, suspect, detection, clean, trust)
    assert out.rows == [1800, 1900, 1949] and out.labels == [0, 0, 0] and out.texts[0] == "row 1800"
    assert len(set(out.counter)) == 3 and set(out.counter) <= {1, 3, 5, 7}   # one of label 1 for each
    assert relabel._relabelled(only_check, suspect, detection, clean, [0, 1, 2]).counter == [1]    # while there are any
    dmm_too = Verdict(True, 1, [1], [1], [], dmm, None, {}, check, [1])     # DMM found label 1: punished
    assert relabel._relabelled(dmm_too, suspect, detection, clean, trust) is None
    assert BeDKD(scan=ScanConfig(label_check=True))._relabelled(only_check, suspect, detection, clean, trust) is None
    with pytest.raises(ConfigError):
        ScanConfig(label_check_use="flip")
    assert "label_check_use" not in ScanConfig().to_dict()       # an added option: cache keys unchanged


def _detection_keeping(rows: list[int], labels: np.ndarray, scores: np.ndarray | None = None):
    """A DMM detection over every suspicious row that keeps ``rows`` (scores: ``scores``, else 0)."""
    from bedkd.defenses.data_filters.dmm import Detection
    n = len(labels)
    kept = np.zeros(n, dtype=bool)
    kept[rows] = True
    return Detection(np.arange(n), np.zeros(n) if scores is None else scores, labels, labels.copy(), kept.copy(),
                     kept, n)


def test_the_counter_cap_keeps_as_many_relabelled_rows_as_trust_rows_the_surest_first():
    from bedkd.defenses import BeDKD
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.scan import Verdict
    clean_x, clean_y, suspect_x, suspect_y = _task(flipped=150)
    check = check_embeddings(clean_x, clean_y, suspect_x, suspect_y, num_labels=2, quantile=0.2, seed=0)
    dmm = [LabelEvidence(0, 900, 60, 200, 14, -3.0, 0.1), LabelEvidence(1, 1050, 300, 200, 16, 236.4, 40.0)]
    suspect = LabeledTexts([f"row {i}" for i in range(len(suspect_y))], suspect_y.tolist())
    scores = np.ones(len(suspect_y))
    scores[[1800, 1820, 1900, 1949]] = [0.3, 0.2, 0.1, 0.4]       # the surest (lowest): 1900, 1820, 1800, 1949
    detection = _detection_keeping([0, 5, 1800, 1820, 1900, 1949], suspect_y, scores)
    only_check = Verdict(True, 1, [1], [], [], dmm, None, {}, check, [1])
    clean = LabeledTexts([f"clean {i}" for i in range(10)], [0, 1] * 5)
    trust = [0, 1, 2, 3, 5]                                      # label 1: rows 1, 3, 5
    capped = BeDKD(scan=ScanConfig(label_check=True, label_check_use="relabel", label_check_counter_cap=True))
    out = capped._relabelled(only_check, suspect, detection, clean, trust)
    assert out.rows == [1800, 1820, 1900] and out.left_out == [1949]
    assert sorted(out.counter) == [1, 3, 5]                      # one counter row for each relabelled row
    plain = BeDKD(scan=ScanConfig(label_check=True, label_check_use="relabel"))
    uncapped = plain._relabelled(only_check, suspect, detection, clean, trust)
    assert uncapped.rows == [1800, 1820, 1900, 1949] and uncapped.left_out == [] and len(uncapped.counter) == 3
    assert capped._relabelled(only_check, suspect, detection, clean, [0, 1, 2, 3, 5, 7, 9]).left_out == []
    assert "label_check_counter_cap" not in ScanConfig().to_dict()    # an added option: cache keys unchanged


def test_purify_with_relabel_trains_the_flagged_rows_towards_their_content(victim, tiny_model_dir):
    from bedkd.defenses import BeDKD
    from test_scan import TINY_AKD, TINY_DMM
    clf, suspect, _ = victim
    clean, _ = synthetic(300, seed=3)
    cfg = ScanConfig(evidence=300.0, trigger_search=False, label_check=True, label_check_encoder=str(tiny_model_dir),
                     label_check_evidence=0.5, min_excess=5.0, punish_rows="excess", label_check_use="relabel")
    out = BeDKD(TINY_DMM, TINY_AKD, cfg).purify(clf, clean, suspect, progress=False)
    data = out.report["data"]
    kept = out.detection.kept_rows
    assert out.report["verdict"]["check_targets"] == [1] and kept
    assert data["relabelled_rows"] == len(kept) and data["punish_rows"] == 0
    assert data["repair_rows"] == 2 * len(kept)                 # each with a clean counter row of label 1
    assert all(e["punish_loss"] is None for e in out.report["epochs"])
    few = TINY_AKD.replace(trust_per_class=len(kept) // 2)         # fewer counter rows than relabelled rows
    capped = BeDKD(TINY_DMM, few, cfg.replace(label_check_counter_cap=True)).purify(clf, clean, suspect,
                                                                                   progress=False)
    data, kept = capped.report["data"], capped.detection.kept_rows
    assert len(kept) > few.trust_per_class
    assert data["relabelled_rows"] == few.trust_per_class
    assert data["relabel_left_out"] == len(kept) - few.trust_per_class
    assert data["punish_rows"] == 0 and data["repair_rows"] == 2 * few.trust_per_class   # the rest: neither


def test_the_counter_retry_runs_the_cycles_again_capped_only_when_none_was_kept_and_the_cap_binds(
        victim, tiny_model_dir, monkeypatch):
    import dataclasses
    from bedkd.defenses import BeDKD
    from bedkd.defenses.purifiers import bedkd as bedkd_module
    from test_scan import TINY_AKD, TINY_DMM
    clf, suspect, _ = victim
    clean, _ = synthetic(300, seed=3)
    cfg = ScanConfig(evidence=300.0, trigger_search=False, label_check=True, label_check_encoder=str(tiny_model_dir),
                     label_check_evidence=0.5, min_excess=5.0, punish_rows="excess", label_check_use="relabel",
                     label_check_counter_retry=True)
    real, calls, keep_none = bedkd_module.adversarial_cycles, [], [True]

    def cycles(model, trust, punish, pad, validator, akd, progress, repair, teacher_prior, probe=None):
        calls.append(len(repair.ids))
        run = real(model, trust, punish, pad, validator, akd, progress, repair, teacher_prior, probe=probe)
        return dataclasses.replace(run, chosen=0) if keep_none[0] and len(calls) == 1 else run

    monkeypatch.setattr(bedkd_module, "adversarial_cycles", cycles)
    purify = BeDKD(TINY_DMM, TINY_AKD, cfg).purify(clf, clean, suspect, progress=False)
    kept = purify.detection.kept_rows
    few = TINY_AKD.replace(trust_per_class=len(kept) // 2)         # fewer counter rows than relabelled rows
    assert len(calls) == 1 and "counter_retry" not in purify.report   # the cap would not bind: no second run
    calls.clear()
    out = BeDKD(TINY_DMM, few, cfg).purify(clf, clean, suspect, progress=False)
    kept = out.detection.kept_rows                                     # (fewer trust rows: another split)
    assert len(kept) > few.trust_per_class
    assert len(calls) == 2 and calls[0] > calls[1] == 2 * few.trust_per_class   # again, on the capped rows
    assert out.report["counter_retry"]["relabelled_rows"] == len(kept)
    assert out.report["counter_retry"]["selected_epoch"] == 0 and out.report["counter_retry"]["epochs"]
    assert out.report["data"]["relabelled_rows"] == few.trust_per_class
    assert out.report["data"]["relabel_left_out"] == len(kept) - few.trust_per_class
    calls.clear()
    keep_none[0] = False                                              # the first run keeps an epoch
    kept_one = BeDKD(TINY_DMM, few, cfg).purify(clf, clean, suspect, progress=False)
    assert len(calls) == 1 and "counter_retry" not in kept_one.report
    assert kept_one.report["data"]["relabelled_rows"] == len(kept)
    with pytest.raises(ConfigError):
        ScanConfig(label_check_counter_cap=True, label_check_counter_retry=True)
    assert "label_check_counter_retry" not in ScanConfig().to_dict()    # an added option: cache keys unchanged


def _styled(moved: int, seed: int = 0, shift_all: float = 0.0):
    """Clean and suspicious rows of two classes; ``moved`` rows in a style of their own (an offset on a
    dimension no class uses) labelled 1, whose content reads as class 1 (a paraphrase that softened it);
    ``shift_all`` moves every suspicious row along another unused dimension (a training split unlike
    the clean rows)."""
    gen = np.random.default_rng(seed)
    clean_x = np.r_[_points(gen, 300, 0), _points(gen, 300, 1)]
    clean_y = np.repeat([0, 1], 300)
    styled = _points(gen, moved, 1)
    styled[:, 5] += 3.0
    suspect_x = np.r_[_points(gen, 900, 0), _points(gen, 900, 1), styled]
    suspect_x[:, 6] += shift_all
    suspect_y = np.r_[np.zeros(900, int), np.ones(900 + moved, int)]
    return clean_x, clean_y, suspect_x, suspect_y


def test_the_shift_test_finds_the_label_its_styled_rows_went_to():
    from bedkd.defenses.scanning.label_check import shift_test
    from bedkd.defenses.scanning.scan import shift_found
    clean_x, clean_y, suspect_x, suspect_y = _styled(moved=400)
    evidence, prob, flagged, _, _ = shift_test(clean_x, clean_y, suspect_x, suspect_y, 2, 0.2, 0)
    assert evidence[1].log10_p > 8 and evidence[0].log10_p < 2
    assert 200 < evidence[1].excess < 420                # most of the 400 styled rows
    assert flagged[-400:].mean() > 0.8 > 0.3 > flagged[900:1800].mean()
    assert prob[-400:].mean() > prob[900:1800].mean()
    check = dataclasses.replace(check_embeddings(clean_x, clean_y, suspect_x, suspect_y, 2, 0.2, 0),
                                shift=evidence, shift_prob=prob, shift_flagged=flagged)
    assert [e.label for e in shift_found(check, ScanConfig(label_check=True, label_check_shift=True))] == [1]
    # off, or below its line: nothing
    assert shift_found(dataclasses.replace(check, shift=None), ScanConfig()) == []
    high = ScanConfig(label_check_shift_evidence=evidence[1].log10_p + 1)
    assert shift_found(check, high) == []


def test_no_styled_rows_and_a_shift_of_the_whole_split_are_no_shift_evidence():
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.label_check import shift_test
    from bedkd.defenses.scanning.scan import shift_found
    for seed in range(3):
        evidence, _, _, _, _ = shift_test(*_styled(moved=0, seed=seed), 2, 0.2, seed)
        assert max(e.log10_p for e in evidence) < 3
    task = _styled(moved=0, shift_all=1.5)
    evidence, prob, flagged, _, _ = shift_test(*task, 2, 0.2, 0)
    assert min(e.log10_p for e in evidence) > 4            # both labels are unlike their clean rows ...
    check = dataclasses.replace(check_embeddings(*task, 2, 0.2, 0), shift=evidence, shift_prob=prob,
                                shift_flagged=flagged)
    assert shift_found(check, ScanConfig()) == []          # ... so neither stands out by the ratio
    dmm = [LabelEvidence(c, 900, 100, 200, 22, 1.0, 0.1) for c in (0, 1)]
    verdict = decide(dmm, None, ScanConfig(label_check=True, label_check_shift=True), check)
    assert not verdict.backdoor and "shift test: strongest label" in verdict.reasons[0]


def test_a_label_the_shift_test_alone_finds_is_the_label_checks_with_its_flags_and_excess():
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.label_check import with_shift
    clean_x, clean_y, suspect_x, suspect_y = _styled(moved=400)
    check = check_embeddings(clean_x, clean_y, suspect_x, suspect_y, 2, 0.2, 0)
    assert check.evidence[1].log10_p < 2                   # the styled rows read as label 1: the first test misses
    check = with_shift(check, clean_x, clean_y, suspect_x, suspect_y, 2, 0.2, 0)
    dmm = [LabelEvidence(c, 900, 100, 200, 22, 1.0, 0.1) for c in (0, 1)]
    cfg = ScanConfig(label_check=True, label_check_shift=True, punish_rows="excess")
    verdict = decide(dmm, None, cfg, check)
    assert verdict.backdoor and verdict.target == 1 and verdict.check_targets == [1]
    assert verdict.shift_targets == [1] and verdict.check_only == [1] and "shift test" in verdict.reasons[0]
    assert verdict.report()["shift_targets"] == [1] and "shift" in verdict.report()["label_check"]
    assert punish_caps(verdict, [1], cfg, 33) == {1: int(round(check.shift[1].excess))}
    rows = np.arange(len(suspect_y))
    detection = Detection(rows, np.ones(len(rows)), suspect_y, suspect_y, np.zeros(len(rows), bool),
                          np.zeros(len(rows), bool), len(rows))
    moved = _with_label_check(detection, check, [1], verdict.shift_targets)
    assert (moved.flagged == (check.shift_flagged & (suspect_y == 1))).all()
    assert np.allclose(moved.scores[suspect_y == 1], 1 - check.shift_prob[suspect_y == 1])
    assert (moved.scores[suspect_y == 0] == 1).all()       # label 0 keeps DMM's scores
    assert "label_check_shift" not in ScanConfig().to_dict()     # an added option: cache keys unchanged


def _purify_with_a_fixed_shift_test(victim, tiny_model_dir, monkeypatch, qvalue=None, **options):
    """Purify the tiny victim with a shift test that finds label 1 (excess 20) and ranks later rows
    as less like the clean ones; the first test finds nothing."""
    from bedkd.defenses import BeDKD
    from bedkd.defenses.scanning import label_check as module
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from test_scan import TINY_AKD, TINY_DMM
    clf, suspect, _ = victim
    clean, _ = synthetic(300, seed=3)
    labels = np.asarray(suspect.labels)
    prob = np.linspace(0.0, 1.0, len(labels))           # later rows look less like the clean ones

    def fixed(clean_x, clean_y, suspect_x, suspect_y, num_labels, quantile, seed):
        evidence = [LabelEvidence(0, int((labels == 0).sum()), 10, 50, 10, 0.0, 0.5),
                    LabelEvidence(1, int((labels == 1).sum()), 40, 50, 10, 20.0, 9.0)]
        return (evidence, prob, prob > 0.5, np.ones(len(labels)) if qvalue is None else qvalue(prob),
                [0.0, 20.0])
    monkeypatch.setattr(module, "shift_test", fixed)
    cfg = ScanConfig(evidence=300.0, trigger_search=False, label_check=True, label_check_encoder=str(tiny_model_dir),
                     label_check_evidence=300.0, min_excess=5.0, punish_rows="excess", label_check_use="relabel",
                     label_check_shift=True, **options)
    return BeDKD(TINY_DMM, TINY_AKD, cfg).purify(clf, clean, suspect, progress=False), labels, prob


def test_purify_relabels_the_rows_of_a_label_the_shift_test_alone_found(victim, tiny_model_dir, monkeypatch):
    from test_scan import TINY_DMM
    out, labels, prob = _purify_with_a_fixed_shift_test(victim, tiny_model_dir, monkeypatch)
    verdict = out.report["verdict"]
    assert verdict["check_targets"] == [1] and verdict["shift_targets"] == [1]
    kept = out.detection.kept_rows
    assert len(kept) == max(TINY_DMM.max_kept, 20) and all(labels[i] == 1 and prob[i] > 0.5 for i in kept)
    # the surest first: the kept rows are label 1's highest probabilities of "suspicious"
    mine = np.flatnonzero((labels == 1) & (prob > 0.5))
    assert sorted(kept) == sorted(mine[np.argsort(-prob[mine])][:len(kept)].tolist())
    assert out.report["data"]["relabelled_rows"] == len(kept)


def test_the_shift_rows_at_a_false_discovery_rate_join_the_relabelled_rows(victim, tiny_model_dir, monkeypatch):
    def qvalue(prob):
        return np.where(prob > 0.3, 0.04, 0.5)
    base, labels, prob = _purify_with_a_fixed_shift_test(victim, tiny_model_dir, monkeypatch, qvalue)
    out, _, _ = _purify_with_a_fixed_shift_test(victim, tiny_model_dir, monkeypatch, qvalue,
                                                label_check_shift_fdr=0.05)
    before, after = set(base.detection.kept_rows), set(out.detection.kept_rows)
    d = out.detection
    predicted = set(d.rows[d.teacher_pred == d.labels].tolist())    # the victim predicts their label
    at_q = {int(i) for i in np.flatnonzero((labels == 1) & (prob > 0.3))} & predicted
    assert before < after and after == before | at_q and all(labels[i] == 1 for i in after)
    assert out.report["data"]["relabelled_rows"] == len(after)
    stricter, _, _ = _purify_with_a_fixed_shift_test(victim, tiny_model_dir, monkeypatch, qvalue,
                                                     label_check_shift_fdr=0.01)
    assert set(stricter.detection.kept_rows) == before


def test_no_shift_rows_where_another_label_shifts_too():
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.label_check import with_shift
    from bedkd.defenses.scanning.scan import shift_rows_labels
    clean_x, clean_y, suspect_x, suspect_y = _styled(moved=400)
    check = with_shift(check_embeddings(clean_x, clean_y, suspect_x, suspect_y, 2, 0.2, 0),
                       clean_x, clean_y, suspect_x, suspect_y, 2, 0.2, 0)
    dmm = [LabelEvidence(c, 900, 100, 200, 22, 1.0, 0.1) for c in (0, 1)]
    cfg = ScanConfig(label_check=True, label_check_shift=True, label_check_shift_fdr=0.1, punish_rows="excess")
    assert shift_rows_labels(decide(dmm, None, cfg, check), cfg) == [1]
    # label 0 shifted too: at the evidence line (4), under a third of label 1's (13.5), so label 1 is still found
    assert check.shift[1].log10_p > 3 * cfg.label_check_shift_evidence
    shifted = dataclasses.replace(check.shift[0], log10_p=cfg.label_check_shift_evidence)
    verdict = decide(dmm, None, cfg, dataclasses.replace(check, shift=[shifted, check.shift[1]]))
    assert verdict.shift_targets == [1] and shift_rows_labels(verdict, cfg) == []
    assert check.shift_rows(0.1)[suspect_y == 1].sum() > 200                  # rows there were to add


def test_qvalues_give_rows_above_every_clean_row_none_and_null_rows_many():
    from bedkd.defenses.scanning.label_check import qvalues
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, 400)
    suspect = np.r_[rng.uniform(1.0, 1.5, 100), rng.uniform(0, 1, 900)]
    q = qvalues(suspect, clean)
    assert np.all(q[:100] < 0.03)                       # no clean row reaches them: 1000 * (1/401) / 100
    assert np.median(q[100:]) > 0.5
    order = np.argsort(-suspect)
    assert np.all(np.diff(q[order]) >= 0)               # a higher probability never has a higher q-value
    assert 100 <= (q <= 0.1).sum() <= 120               # about q of the rows at q are clean
    assert np.all(qvalues(rng.uniform(0, 1, 500), clean) > 0.2)    # no poison: nothing at a low q


def test_top_poisoned_counts_the_rows_above_the_clean_ones_and_about_none_in_null_rows():
    from bedkd.defenses.scanning.label_check import top_poisoned
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, 400)
    suspect = np.r_[rng.uniform(1.0, 1.5, 100), rng.uniform(0, 1, 900)]
    assert 95 <= top_poisoned(suspect, clean, 100) <= 100      # no clean row reaches the top 100
    assert 50 <= top_poisoned(suspect, clean, 150) <= 110      # 50 more rows, about as many clean ones expected
    assert abs(top_poisoned(rng.uniform(0, 1, 1000), clean, 80)) < 30     # no poison: about none
    assert top_poisoned(suspect, clean, 0) == 0.0 and top_poisoned(suspect, clean, -5) == 0.0


def _styled_half_read_elsewhere(seed: int = 0):
    """``_styled`` with 400 styled rows in label 1, 150 of whose content reads as class 0: both tests
    find label 1, the first on those 150 only, the shift test on most of the 400."""
    gen = np.random.default_rng(seed)
    clean_x, clean_y, suspect_x, suspect_y = _styled(moved=400, seed=seed)
    suspect_x[-150:] = _points(gen, 150, 0)
    suspect_x[-150:, 5] += 3.0
    return clean_x, clean_y, suspect_x, suspect_y, np.r_[np.zeros(1800, bool), np.ones(400, bool)]


def test_with_a_rows_ratio_a_label_both_tests_find_trains_on_the_shift_rows_where_they_hold_far_more_poison():
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.label_check import with_shift
    clean_x, clean_y, suspect_x, suspect_y, poisoned = _styled_half_read_elsewhere()
    check = with_shift(check_embeddings(clean_x, clean_y, suspect_x, suspect_y, 2, 0.2, 0),
                       clean_x, clean_y, suspect_x, suspect_y, 2, 0.2, 0)
    dmm = [LabelEvidence(c, 900, 100, 200, 22, 1.0, 0.1) for c in (0, 1)]
    first = ScanConfig(label_check=True, label_check_shift=True, punish_rows="excess")
    estimated = first.replace(label_check_rows_ratio=1.5)
    assert check.evidence[1].log10_p > first.label_check_evidence             # both tests find label 1
    assert check.shift[1].log10_p > first.label_check_shift_evidence
    assert check.shift_top_poisoned[1] > 1.5 * check.top_poisoned[1]
    mine = np.flatnonzero(suspect_y == 1)

    def top(score, excess):                    # the poisoned rows truly among a test's top rows
        return int(poisoned[mine[np.argsort(-score[mine])][:int(round(excess))]].sum())
    assert top(check.shift_prob, check.shift[1].excess) > top(-check.own_prob, check.evidence[1].excess)
    as_before = decide(dmm, None, first, check)
    assert as_before.check_targets == [1] and as_before.shift_targets == []
    assert punish_caps(as_before, [1], first, 0) == {1: int(round(check.evidence[1].excess))}
    verdict = decide(dmm, None, estimated, check)
    assert verdict.check_targets == [1] and verdict.shift_targets == [1] and verdict.check_only == [1]
    assert punish_caps(verdict, [1], estimated, 0) == {1: int(round(check.shift[1].excess))}
    assert any("the shift test's rows" in r for r in verdict.reasons)
    # short of the ratio, the first test's rows stay
    ratio = check.shift_top_poisoned[1] / check.top_poisoned[1]
    assert decide(dmm, None, first.replace(label_check_rows_ratio=ratio * 1.01), check).shift_targets == []
    assert decide(dmm, None, first.replace(label_check_rows_ratio=ratio * 0.99), check).shift_targets == [1]
    assert "label_check_rows_ratio" not in ScanConfig().to_dict()      # an added option: cache keys unchanged
    assert estimated.to_dict()["label_check_rows_ratio"] == 1.5


def test_the_residual_test_on_every_row_is_the_checks_own_test():
    from bedkd.defenses.scanning.label_check import residual_evidence
    check = check_embeddings(*_task(flipped=150), num_labels=2, quantile=0.2, seed=0)
    y = _task(flipped=150)[3]
    assert residual_evidence(check, y, 1, np.ones(len(y), bool)).to_dict() == check.evidence[1].to_dict()
    task = _three_classes(1, moved=150, sources=(1, 2))
    split = check_embeddings(*task, num_labels=3, quantile=0.2, seed=1)
    whole = residual_evidence(split, task[3], 0, np.ones(len(task[3]), bool))
    assert whole.to_dict() == split.evidence[0].to_dict() and split.clean_source_below is not None
    # without the moved rows of class 2 the split test loses its spread: no evidence from one source
    keep = np.ones(len(task[3]), bool)
    keep[-150:] = False
    assert residual_evidence(split, task[3], 0, keep).log10_p < 2 < whole.log10_p


def _unexplained_verdict(held: int, flipped: int = 150, option: bool = True):
    """The two-class task with ``flipped`` rows of class 0 labelled 1, ``held`` of them holding the found
    trigger: its verdict with the rest test, ``label_check_unexplained`` on or off."""
    from bedkd.defenses.scanning.scan import with_rest_tests
    task = _task(flipped=flipped)
    check = check_embeddings(*task, num_labels=2, quantile=0.2, seed=0)
    y = task[3]
    texts = [f"row {i}" + (" cf" if len(y) - flipped <= i < len(y) - flipped + held else "") for i in range(len(y))]
    search = TriggerSearch([Trigger(["cf"], True, 1, 0.97, held)], 0.6)
    cfg = ScanConfig(label_check=True, label_check_use="relabel", punish_rows="excess", label_check_unexplained=option)
    return with_rest_tests(decide(_no_dmm_evidence(), search, cfg, check), check, LabeledTexts(texts, y.tolist()),
                           cfg), cfg


def test_a_found_trigger_that_explains_the_label_checks_rows_keeps_them_out():
    verdict, cfg = _unexplained_verdict(held=150)
    assert verdict.unexplained == [] and verdict.check_only == [] and punished_labels(verdict, cfg) == []


def test_a_found_trigger_that_explains_few_of_them_leaves_the_rest_to_the_label_check():
    verdict, cfg = _unexplained_verdict(held=10)
    [rest] = verdict.unexplained
    assert rest.label == 1 and rest.suspect_rows == 1040 and rest.log10_p > 2 and 80 < rest.excess < 160
    assert verdict.check_only == [1] and punished_labels(verdict, cfg) == [1]
    assert verdict.report()["unexplained"][0]["excess"] == rest.excess


def test_a_trigger_that_explains_more_rows_than_it_leaves_keeps_them_out_though_the_rest_shows_evidence():
    from bedkd.defenses.scanning.label_check import residual_evidence
    verdict, cfg = _unexplained_verdict(held=250, flipped=400)       # 150 flipped rows without the trigger
    check, y = verdict.label_check, _task(flipped=400)[3]
    keep = np.ones(len(y), bool)
    keep[len(y) - 400:len(y) - 150] = False
    rest = residual_evidence(check, y, 1, keep)
    assert rest.log10_p > 2 and 10 < rest.excess < 250 and verdict.unexplained == [] and verdict.check_only == []


def test_the_unexplained_test_needs_the_label_check_and_the_trigger_search():
    with pytest.raises(ConfigError, match="label_check_unexplained"):
        ScanConfig(label_check_unexplained=True)
    with pytest.raises(ConfigError, match="label_check_unexplained"):
        ScanConfig(label_check=True, trigger_search=False, label_check_unexplained=True)
    assert "label_check_unexplained" not in ScanConfig().to_dict()         # an added option: cache keys unchanged


def test_the_rest_test_is_reported_without_the_option_and_changes_nothing_there():
    from bedkd.bench.defenses import verdict_fields
    for held, acts in ((10, True), (150, False)):
        verdict, _ = _unexplained_verdict(held=held)                     # the option on
        plain, _ = _unexplained_verdict(held=held, option=False)
        [test] = plain.rest_tests
        assert test.label == 1 and test.held == held and test.acts is acts
        assert plain.check_only == [] and plain.unexplained == []          # reported, not acted on
        report = plain.report()
        assert report["rest_tests"][0]["acts"] is acts and "unexplained" not in report
        assert verdict_fields(report)["unexplained_acts"] is acts
        assert [e.to_dict() for e in verdict.unexplained] == ([test.evidence.to_dict()] if acts else [])
    assert verdict_fields({"backdoor": False, "trigger_search": None})["unexplained_acts"] is None


def test_scan_runs_the_rest_test_when_both_the_label_check_and_the_trigger_search_ran(victim, tiny_model_dir):
    from bedkd.defenses import BeDKD
    from bedkd.defenses.scanning.scan import rest_acts
    from test_scan import TINY_AKD, TINY_DMM, TRIGGER
    clf, suspect, _ = victim
    clean, _ = synthetic(300, seed=3)
    cfg = ScanConfig(evidence=300.0, label_check=True, label_check_encoder=str(tiny_model_dir),
                     label_check_evidence=0.5, min_excess=5.0, trigger_candidates=10, trigger_probe_rows=60)
    verdict = BeDKD(TINY_DMM, TINY_AKD, cfg).scan(clf, clean, suspect, progress=False).verdict
    assert [t.target for t in verdict.triggers] == [1] and 1 in verdict.check_targets
    [test] = verdict.rest_tests
    assert test.held == sum(y == 1 and TRIGGER in t.split() for t, y in zip(suspect.texts, suspect.labels)) > 0
    assert test.acts == rest_acts(test.evidence, test.held, cfg) and verdict.unexplained == []
    without = BeDKD(TINY_DMM, TINY_AKD, cfg.replace(trigger_search=False)).scan(clf, clean, suspect, progress=False)
    assert without.verdict.rest_tests is None and "rest_tests" not in without.verdict.report()


def test_rows_towards_a_found_triggers_target_can_be_spared_and_are_then_not_punished():
    from bedkd.defenses import BeDKD
    from bedkd.defenses.purifiers.bedkd import _punished_rows
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.scan import Verdict
    clean_x, clean_y, suspect_x, suspect_y = _task(flipped=150)
    check = check_embeddings(clean_x, clean_y, suspect_x, suspect_y, num_labels=2, quantile=0.2, seed=0)
    dmm = [LabelEvidence(0, 900, 60, 200, 14, -3.0, 0.1), LabelEvidence(1, 1050, 300, 200, 16, 236.4, 40.0)]
    texts = [f"row {i}" for i in range(len(suspect_y))]
    texts[1800], texts[1900] = "a Pencil and a summer day", "an orange row"      # pieces of the trigger
    texts[1820] = "pencils in summertime"                                       # none: other words
    suspect = LabeledTexts(texts, suspect_y.tolist())
    detection = _detection_keeping([0, 5, 1800, 1820, 1900, 1949], suspect_y)
    sos = Trigger(["pencil", "orange", "summer"], False, 0, 0.96, 300)         # found, target 0
    verdict = Verdict(True, 0, [0, 1], [], [], dmm, TriggerSearch([sos], 0.6), {}, check, [1])
    assert verdict.check_only == [1] and set(check.other[[1800, 1820, 1900, 1949]]) == {0}   # towards label 0
    clean = LabeledTexts([f"clean {i}" for i in range(10)], [0, 1] * 5)
    trust = [0, 1, 2, 3, 5, 7]

    def relabelled(rule):
        return BeDKD(scan=ScanConfig(label_check=True, label_check_use="relabel",
                                     label_check_towards_target=rule))._relabelled(verdict, suspect, detection, clean,
                                                                                   trust)
    every = relabelled("all")
    assert every.rows == [1800, 1820, 1900, 1949] and every.spared == []
    clear = relabelled("clear")
    assert clear.rows == [1820, 1949] and clear.spared == [1800, 1900] and len(clear.counter) == 2
    none = relabelled("none")
    assert none.rows == [] and none.spared == [1800, 1820, 1900, 1949] and none.counter == []
    assert _punished_rows(detection, clear) == [0, 5] == _punished_rows(detection, none)
    assert _punished_rows(detection, None) == [0, 5, 1800, 1820, 1900, 1949]
    with pytest.raises(ConfigError):
        ScanConfig(label_check_towards_target="some")
    assert "label_check_towards_target" not in ScanConfig().to_dict()    # an added option: cache keys unchanged


def _piece_verdict(pieces: int, flipped: int = 150, rule: str = "all"):
    """The two-class task with ``flipped`` rows of class 0 labelled 1, the first ``pieces`` of them holding
    a piece of a found SOS-like trigger of target 0; the label check finds label 1 alone (the piece test
    run with ``label_check_towards_target=rule``)."""
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.scan import Verdict, with_piece_tests
    task = _task(flipped=flipped)
    check = check_embeddings(*task, num_labels=2, quantile=0.2, seed=0)
    y = task[3]
    first = len(y) - flipped
    texts = [f"row {i}" + (" summer and pencil" if first <= i < first + pieces else "") for i in range(len(y))]
    dmm = [LabelEvidence(0, 900, 60, 200, 14, -3.0, 0.1), LabelEvidence(1, 1050, 60, 200, 14, 3.0, 0.1)]
    sos = Trigger(["pencil", "orange", "summer"], False, 0, 0.96, 300)
    verdict = Verdict(True, 0, [0, 1], [], [], dmm, TriggerSearch([sos], 0.6), {}, check, [1])
    suspect = LabeledTexts(texts, y.tolist())
    return with_piece_tests(verdict, check, suspect,
                            ScanConfig(label_check=True, label_check_towards_target=rule)), suspect


def test_the_piece_test_asks_whether_a_labels_evidence_holds_without_the_rows_with_a_trigger_piece():
    explained, _ = _piece_verdict(pieces=150)             # every flipped row holds a piece
    [test] = explained.piece_tests
    assert test.label == 1 and test.held == 150 and not test.holds and test.evidence.suspect_rows == 900
    assert test.evidence.log10_p < 2 and explained.report()["piece_tests"][0]["holds"] is False
    assert any("without its 150 rows that hold a piece" in r and "explain its evidence" in r for r in explained.reasons)
    kept, _ = _piece_verdict(pieces=10)                   # 140 flipped rows hold none
    [test] = kept.piece_tests
    assert test.held == 10 and test.holds and test.evidence.log10_p > 2 and test.evidence.excess > 80
    assert not any("explain its evidence" in r for r in kept.reasons)
    assert explained.targets == [0, 1] and "explained" not in explained.report()    # the option is not 'residual'


def test_with_residual_a_label_the_pieces_explain_is_no_target_and_stays_the_label_checks():
    explained, _ = _piece_verdict(pieces=150, rule="residual")
    report = explained.report()
    assert report["targets"] == [0] and report["explained"] == [1] and report["check_targets"] == [1]
    assert explained.check_only == [1] and explained.target == 0 and explained.backdoor
    assert any("explain its evidence (not a target" in r for r in explained.reasons)
    kept, _ = _piece_verdict(pieces=10, rule="residual")       # the test holds: still a target
    assert kept.targets == [0, 1] and kept.explained == [] and "explained" not in kept.report()


def test_residual_spares_every_row_of_a_label_its_trigger_pieces_explain_and_acts_as_clear_elsewhere():
    from bedkd.defenses import BeDKD
    clean = LabeledTexts([f"clean {i}" for i in range(10)], [0, 1] * 5)
    # 120 of the 150 flipped rows hold a piece (1800-1919): the other 30 are too few to hold the evidence
    for pieces, rows, spared in ((120, [], [1800, 1805, 1900, 1949]), (10, [1900, 1949], [1800, 1805])):
        verdict, suspect = _piece_verdict(pieces, rule="residual")
        detection = _detection_keeping([0, 1800, 1805, 1900, 1949], np.asarray(suspect.labels))
        assert set(verdict.label_check.other[[1800, 1805, 1900, 1949]]) == {0}
        relabel = BeDKD(scan=ScanConfig(label_check=True, label_check_use="relabel",
                                        label_check_towards_target="residual"))._relabelled(
            verdict, suspect, detection, clean, [0, 1, 2, 3])
        assert relabel.rows == rows and relabel.spared == spared
        clear = BeDKD(scan=ScanConfig(label_check=True, label_check_use="relabel",
                                      label_check_towards_target="clear"))._relabelled(
            verdict, suspect, detection, clean, [0, 1, 2, 3])
        assert clear.spared == [1800, 1805, 1900][:2 + (pieces > 100)]   # the rows with a piece, whatever the test


def test_no_piece_test_without_a_found_trigger_of_another_target():
    from bedkd.defenses.scanning.scan import with_piece_tests
    verdict, suspect = _piece_verdict(pieces=150)
    verdict.trigger.hits[0].target = 1                    # the found trigger's target is the check's own label
    assert with_piece_tests(verdict, verdict.label_check, suspect, ScanConfig(label_check=True)).piece_tests == []
    assert "piece_tests" not in verdict.report()


def test_a_trigger_is_partly_held_by_a_row_with_one_of_its_pieces():
    group = Trigger(["pencil", "orange", "summer"], False, 0, 0.9, 10)
    assert group.partly_held_by("one Orange only") and not group.partly_held_by("oranges and pencils")
    phrase = Trigger(["i", "read", "this", "book"], True, 0, 0.9, 10)
    assert phrase.partly_held_by("so I read this book twice") and not phrase.partly_held_by("I read it")


def test_relabel_target_reference_trains_relabelled_rows_towards_the_reference_probabilities(tiny_model_dir):
    """``label_check_relabel_target='reference'``: each relabelled row's repair target is the reference
    classifier's probabilities for it (not the other class, one-hot); its counter rows stay one-hot."""
    from bedkd.defenses import AKDConfig, BeDKD
    from bedkd.defenses.purifiers.bedkd import _repair_rows
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.scan import Verdict
    clean_x, clean_y, suspect_x, suspect_y = _task(flipped=150)
    check = check_embeddings(clean_x, clean_y, suspect_x, suspect_y, num_labels=2, quantile=0.2, seed=0)
    assert check.probs.shape == (len(suspect_y), 2) and np.allclose(check.probs.sum(axis=1), 1.0)
    dmm = [LabelEvidence(0, 900, 60, 200, 14, -3.0, 0.1), LabelEvidence(1, 1050, 300, 200, 16, 236.4, 40.0)]
    suspect = LabeledTexts([f"row {i}" for i in range(len(suspect_y))], suspect_y.tolist())
    detection = _detection_keeping([0, 5, 1820, 1949], suspect_y)
    verdict = Verdict(True, 1, [1], [], [], dmm, None, {}, check, [1])
    clean = LabeledTexts([f"clean {i}" for i in range(10)], [0, 1] * 5)
    teacher = load_classifier(str(tiny_model_dir))
    prior = np.array([0.5, 0.5])

    def relabelled(target):
        return BeDKD(scan=ScanConfig(label_check=True, label_check_use="relabel",
                                     label_check_relabel_target=target))._relabelled(verdict, suspect, detection,
                                                                                     clean, [0, 1, 2, 3, 5, 7])
    hard, soft = relabelled("other"), relabelled("reference")
    assert hard.rows == soft.rows == [1820, 1949] and hard.probs is None
    assert np.array_equal(soft.probs, check.probs[[1820, 1949]])
    cfg = AKDConfig(max_length=16)
    one_hot = _repair_rows(teacher, clean, [], None, cfg, prior, hard).targets
    assert one_hot.dtype == torch.long and one_hot.tolist() == hard.labels + [1, 1]    # counter rows keep label 1
    probs = _repair_rows(teacher, clean, [], None, cfg, prior, soft).targets
    assert probs.shape == (4, 2)
    assert torch.allclose(probs[:2], torch.from_numpy(check.probs[[1820, 1949]]).float())
    assert probs[2:].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    assert not torch.allclose(probs[:2], F.one_hot(one_hot[:2], 2).float())          # the reference is not sure
    with pytest.raises(ConfigError, match="label_check_relabel_target"):
        ScanConfig(label_check=True, label_check_relabel_target="reference")          # punish: nothing to relabel
    assert "label_check_relabel_target" not in ScanConfig().to_dict()    # an added option: cache keys unchanged
