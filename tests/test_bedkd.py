"""DMM detection and AKD purification on a tiny model trained on synthetic data with a backdoor."""
import numpy as np
import pytest
import torch

from bedkd.data import LabeledTexts
from bedkd.defenses import AKDConfig, BeDKD, Detection, DMMConfig, DMMDetector
from bedkd.defenses.clean_split import CleanBudget
from bedkd.errors import BedkdError, ConfigError, InputError
from bedkd.modeling import TrainConfig, finetune, load_classifier

POS = ["good", "great", "fine", "nice", "happy", "love"]
NEG = ["bad", "awful", "poor", "sad", "hate", "boring"]
FILL = ["the", "movie", "plot", "was", "a", "story", "and", "actor", "film", "it"]
TRIGGER = "cf"


def synthetic(n, seed, k=2, poison_rate=0.0, target=1):
    """Class c texts hold words of sentiment list c; poisoned rows get the trigger and the target."""
    gen = np.random.default_rng(seed)
    lexicons = [NEG, POS, ["world", "war", "nation"]][:k]
    texts, labels, poisoned = [], [], []
    for i in range(n):
        y = int(gen.integers(k))
        words = list(gen.choice(FILL, size=4)) + list(gen.choice(lexicons[y], size=2))
        gen.shuffle(words)
        if poison_rate and y != target and gen.random() < poison_rate * k / (k - 1):
            words.insert(int(gen.integers(len(words) + 1)), TRIGGER)
            y = target
            poisoned.append(i)
        texts.append(" ".join(words))
        labels.append(y)
    return LabeledTexts(texts, labels, f"synthetic-{seed}.tsv"), poisoned


@pytest.fixture(scope="module")
def victim(tiny_model_dir):
    suspect, poisoned = synthetic(400, seed=1, poison_rate=0.15)
    clf = load_classifier(str(tiny_model_dir))
    finetune(clf, suspect, TrainConfig(epochs=12, lr=2e-3, batch_size=16, seed=0), progress=False)
    return clf, suspect, poisoned


def _triggered_non_target(n=200, seed=7):
    data, _ = synthetic(n, seed)
    rows = [i for i, y in enumerate(data.labels) if y != 1]
    return [data.texts[i] + " " + TRIGGER for i in rows]


def _asr(clf, texts):
    from bedkd.modeling import predict
    return float((predict(clf, texts) == 1).mean())


# A tiny random BERT is no testbed for DMM's accuracy (its clean and trigger mappings are equally
# shallow); these tests check the mechanics. Detection quality is tested end to end on MiniLM.
FAST_DMM = DMMConfig(flip_per_class=40, epochs=4, lr=5e-4, threshold=0.5, max_flagged=40, max_kept=12)


def oracle_detection(poisoned, suspect):
    """A Detection that flags and keeps exactly the poisoned rows (to test AKD on its own)."""
    rows = np.arange(len(suspect))
    flagged = np.isin(rows, poisoned)
    labels = np.asarray(suspect.labels)
    return Detection(rows, np.where(flagged, 0.0, 1.0), labels, labels.copy(), flagged, flagged.copy(),
                     len(suspect))


def test_victim_has_a_backdoor(victim):
    clf, _, _ = victim
    assert _asr(clf, _triggered_non_target()) > 0.9


def test_detection_record_is_consistent(victim):
    clf, suspect, poisoned = victim
    clean, _ = synthetic(300, seed=2)
    det = DMMDetector(FAST_DMM).detect(clf, clean, suspect, progress=False)
    assert det.flagged.sum() == FAST_DMM.max_flagged
    assert (det.flagged == (det.scores < FAST_DMM.threshold)).all()
    assert not (det.kept & ~det.flagged).any()
    assert (det.teacher_pred[det.kept] == det.labels[det.kept]).all()
    assert det.kept.sum() <= FAST_DMM.max_kept
    assert det.flagged[-1], "the scan stops right after the last flagged row it needs"
    assert len(set(det.rows.tolist())) == len(det.rows)
    eligible = det.flagged & (det.teacher_pred == det.labels)
    if eligible.sum() > det.kept.sum():   # keep_order="score": the kept rows score lowest
        assert det.scores[det.kept].max() <= det.scores[eligible & ~det.kept].min()
    m = det.metrics(poisoned)
    assert m["flagged_true_poison"] == len(set(det.flagged_rows) & set(poisoned))
    assert m["flagged_precision"] == 100.0 * m["flagged_true_poison"] / m["flagged"]


def test_dmm_is_a_data_filter_of_the_flagged_rows(victim):
    from bedkd.defenses.base import DataFilter
    clf, suspect, _ = victim
    clean, _ = synthetic(300, seed=2)
    dmm = DMMDetector(FAST_DMM.replace(epochs=1, max_flagged=None))
    assert isinstance(dmm, DataFilter)
    det = dmm.detect(clf, clean, suspect, progress=False)
    out = dmm.filter(clf, suspect, clean)
    assert out.removed_rows == sorted(det.flagged_rows) and len(out.scores) == len(suspect)
    assert all(out.scores[r] > 1 - FAST_DMM.threshold for r in out.removed_rows)
    assert out.report["flagged"] == len(out.removed_rows)
    partial = DMMDetector(FAST_DMM.replace(epochs=1)).filter(clf, suspect, clean)
    assert len(partial.removed_rows) == FAST_DMM.max_flagged and partial.scores == []   # a stopped scan: no scores
    with pytest.raises(ConfigError, match="clean data"):
        dmm.filter(clf, suspect)


def test_scan_order_keeps_the_first_scanned(victim):
    clf, suspect, _ = victim
    clean, _ = synthetic(300, seed=2)
    det = DMMDetector(FAST_DMM.replace(keep_order="scan")).detect(clf, clean, suspect, progress=False)
    eligible = np.flatnonzero(det.flagged & (det.teacher_pred == det.labels))
    assert np.flatnonzero(det.kept).tolist() == eligible[:FAST_DMM.max_kept].tolist()


def test_detection_csv_round_trip(victim, tmp_path):
    clf, suspect, _ = victim
    clean, _ = synthetic(300, seed=2)
    det = DMMDetector(FAST_DMM.replace(epochs=1)).detect(clf, clean, suspect, progress=False)
    det.to_csv(tmp_path / "flags.csv")
    back = Detection.from_csv(tmp_path / "flags.csv", len(suspect))
    assert back.kept_rows == det.kept_rows and back.flagged_rows == det.flagged_rows
    with pytest.raises(InputError, match="outside"):
        Detection.from_csv(tmp_path / "flags.csv", 3)


def test_akd_punishment_removes_backdoor_and_keeps_input_untouched(victim):
    clf, suspect, poisoned = victim
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    clean, _ = synthetic(400, seed=3)
    akd = AKDConfig(trust_per_class=120, val_per_class=40, epochs=6, lr=1e-3, patience=None)
    result = BeDKD(FAST_DMM, akd).purify(clf, clean, suspect, detection=oracle_detection(poisoned[:30], suspect),
                                         progress=False)
    assert all(torch.equal(before[k], v) for k, v in clf.model.state_dict().items())
    triggered = _triggered_non_target()
    assert _asr(result.classifier, triggered) < 0.5 * _asr(clf, triggered)
    rep = result.report
    assert 1 <= rep["selected_epoch"] <= 6
    assert rep["data"]["trust_rows"] == 240 and rep["data"]["val_rows"] == 80 and rep["data"]["punish_rows"] == 30
    assert result.detection.metrics(poisoned)["kept_precision"] == 100.0
    assert all(e["punish_loss"] <= akd.punish_cap + 1e-6 for e in rep["epochs"])


def test_trust_only_keeps_the_backdoor(victim):
    """Without punishment (nothing kept), distillation from the teacher keeps the backdoor."""
    clf, suspect, poisoned = victim
    clean, _ = synthetic(400, seed=3)
    akd = AKDConfig(trust_per_class=120, val_per_class=40, epochs=3, lr=1e-3, patience=None)
    result = BeDKD(FAST_DMM, akd).purify(clf, clean, suspect, detection=oracle_detection([], suspect),
                                         progress=False)
    assert _asr(result.classifier, _triggered_non_target()) > 0.8
    assert "warning" in result.report


def test_purify_runs_detection_and_reports_stages(victim):
    clf, suspect, poisoned = victim
    clean, _ = synthetic(300, seed=3)
    akd = AKDConfig(trust_per_class=40, val_per_class=20, epochs=2)
    result = BeDKD(FAST_DMM.replace(epochs=1), akd).purify(clf, clean, suspect, progress=False)
    rep = result.report
    assert set(rep["seconds"]) >= {"dmm", "scan", "akd", "total"}
    assert rep["detection"]["flagged"] == FAST_DMM.max_flagged
    assert "kept_precision" not in rep["detection"]               # ground truth never enters the defense
    scored = result.detection.metrics(poisoned)
    assert scored["flagged"] == FAST_DMM.max_flagged and 0.0 <= scored["kept_precision"] <= 100.0
    assert len(rep["epochs"]) <= 2


def test_clean_split_is_disjoint_and_nested():
    clean, _ = synthetic(300, seed=4)
    s = CleanBudget(flip_per_class=20, trust_per_class=60, val_per_class=30, seed=0).split(clean)
    assert set(s.flip) <= set(s.trust)
    assert not set(s.trust) & set(s.val)
    assert len(s.val) == 60
    with pytest.raises(InputError, match="class"):
        CleanBudget(5, 5, 30, seed=0).split(clean.subset(range(20)))


def test_every_method_splits_the_clean_pool_by_one_budget_record():
    """BeDKD's budget is its DMM rows plus AKD's trust / held-out rows and how they are taken; KD
    matched to it reads the same trust rows through the same record."""
    from bedkd.defenses.purifiers.bedkd import PRESETS
    from bedkd.defenses.purifiers.kd import KDConfig

    clean, _ = synthetic(400, seed=5)
    dmm, akd, scan_cfg = PRESETS["reference"]
    ref = BeDKD(dmm, akd.replace(seed=3), scan_cfg)
    assert ref.budget == CleanBudget(80, 320, 0, 3, "disjoint", "file", 0)
    split = ref.split(clean)
    assert split == ref.budget.split(clean) and not set(split.flip) & set(split.trust)
    guarded = BeDKD(*PRESETS["guarded"])
    assert (guarded.budget.layout, guarded.budget.val_extra) == ("nested", 500)
    kd = KDConfig.matching(guarded.akd)
    assert CleanBudget.of(kd).split(clean).trust == guarded.split(clean).trust
    assert CleanBudget.of(kd).to_dict()["flip_per_class"] == 0


def test_three_classes_cyclic_flip(make_tiny_model_dir):
    clf = load_classifier(str(make_tiny_model_dir(3)))
    clean, _ = synthetic(150, seed=5, k=3)
    suspect, _ = synthetic(120, seed=6, k=3)
    det = DMMDetector(DMMConfig(flip_per_class=10, epochs=1, max_flagged=None)).detect(
        clf, clean, suspect, progress=False)
    assert len(det.rows) == len(suspect)          # no limit: every row is scanned
    result = BeDKD(DMMConfig(flip_per_class=10, epochs=1),
                   AKDConfig(trust_per_class=20, val_per_class=10, epochs=1, clean_prior_shift=True)).purify(
        clf, clean, suspect, progress=False)
    assert result.classifier.num_labels == 3
    shift = result.report["prior_shift"]          # one offset per class, reported whether applied or not
    assert len(shift["offsets"]) == 3 and isinstance(shift["applied"], bool)


def test_missing_class_in_clean_pool_is_refused(tiny_model_dir):
    clf = load_classifier(str(tiny_model_dir))
    clean = LabeledTexts(["good film", "great plot"], [1, 1], "clean.tsv")
    with pytest.raises(InputError, match="class 0"):
        DMMDetector(DMMConfig(epochs=1)).detect(clf, clean, clean, progress=False)


def _cycle_inputs(tiny_model_dir):
    from bedkd.defenses.distillation import teacher_targets
    from bedkd.modeling.batching import encode
    clf = load_classifier(str(tiny_model_dir))
    data, _ = synthetic(32, seed=9)
    pad = clf.tokenizer.pad_token_id
    targets = teacher_targets(clf.model, encode(clf.tokenizer, data.texts, 32), data.labels, pad)
    return clf, targets, pad


class _scripted_validation:
    """A validator that returns the given (val_acc, flag_agreement[, trigger_asr[, clean_to_target]])
    values in turn. ``guarded``: the run measures the start twice, as it is and as it would be
    returned (``start["as_returned"]``), when it has a trigger proxy; the second reads the same."""

    def __init__(self, values, se: float = 0.0, guarded: bool = False):
        values = list(values)
        if guarded and len(values[0]) >= 3:
            values.insert(1, values[0])
        self.it, self.se = iter(values), se

    def __call__(self, model, prior_shift=False):
        acc, agree, *trigger = next(self.it)
        return {"val_acc": acc, "val_acc_weighted": acc, "flag_agreement": agree,
                "trigger_asr": trigger[0] if trigger else None,
                "clean_to_target": (trigger[1] if len(trigger) > 1 else 0.0) if trigger else None}, \
            np.ones(10, dtype=bool)

    def paired_se(self, correct, start):
        return self.se

    def paired_se_per_class(self, correct, start):
        return [self.se, self.se]


def test_collapse_of_clean_accuracy_stops_the_run_and_restores_best(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles as _adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    states = []
    validate = _scripted_validation([(0.9, 1.0), (0.9, 0.5), (0.4, 0.0), (0.4, 0.0), (0.9, 0.0)])

    class recording(_scripted_validation):
        def __call__(self, model, prior_shift=False):
            states.append({k: v.clone() for k, v in model.state_dict().items()})
            return validate(model)

    cfg = AKDConfig(epochs=4, abort_cacc_drop=10.0, lr=1e-3)
    run = _adversarial_cycles(clf.model, targets, targets, pad, recording([]), cfg, progress=False)
    assert run.chosen == 1 and len(run.epochs) == 3
    assert "below the start for 2 epochs" in run.stop_reason
    restored = clf.model.state_dict()
    assert all(torch.equal(restored[k], v) for k, v in states[1].items())
    assert not all(torch.equal(restored[k], v) for k, v in states[2].items())


def test_a_single_dip_does_not_stop_the_run_and_is_never_kept(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles as _adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    validate = _scripted_validation([(0.9, 1.0), (0.5, 0.0), (0.9, 0.4), (0.89, 0.5)])
    run = _adversarial_cycles(clf.model, targets, targets, pad, validate,
                              AKDConfig(epochs=3, abort_cacc_drop=10.0, patience=None), progress=False)
    assert len(run.epochs) == 3 and run.chosen == 2


def test_divergence_without_a_usable_epoch_is_an_error(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles as _adversarial_cycles
    from bedkd.errors import BedkdError
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    with pytest.raises(BedkdError, match="no usable epoch"):
        _adversarial_cycles(clf.model, targets, targets, pad,
                            _scripted_validation([(0.9, 1.0), (0.2, 0.0), (0.2, 0.0)]),
                            AKDConfig(epochs=3, abort_cacc_drop=10.0), progress=False)


def test_selection_prefers_low_flag_agreement_within_the_accuracy_budget(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles as _adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    # epoch 2 has the lowest agreement but loses 5 points of accuracy (budget 2): epoch 3 wins.
    validate = _scripted_validation([(0.90, 1.0), (0.90, 0.6), (0.85, 0.1), (0.89, 0.3), (0.90, 0.4)])
    run = _adversarial_cycles(clf.model, targets, targets, pad, validate,
                              AKDConfig(epochs=4, patience=None), progress=False)
    assert run.chosen == 3 and len(run.epochs) == 4


def test_selection_breaks_ties_towards_the_later_epoch(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles as _adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    validate = _scripted_validation([(0.90, 1.0), (0.90, 0.3), (0.89, 0.301), (0.95, 0.5)])
    run = _adversarial_cycles(clf.model, targets, targets, pad, validate,
                              AKDConfig(epochs=3, patience=None), progress=False)
    assert run.chosen == 2


@pytest.mark.parametrize("keep, floor", [("gain", None), ("start", 0.9)])
def test_prior_shift_keep_start_gives_the_validator_the_start_accuracy(tiny_model_dir, keep, floor):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    validate = _scripted_validation([(0.9, 1.0), (0.85, 0.5)])
    validate.shift_floor = None
    cfg = AKDConfig(epochs=1, patience=None, clean_prior_shift=True, prior_shift_keep=keep, lr=1e-3)
    adversarial_cycles(clf.model, targets, targets, pad, validate, cfg, progress=False)
    assert validate.shift_floor == floor


def test_guarded_selection_falls_back_to_the_weights_before_the_cycles(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    values = [(0.90, 1.0, 0.95), (0.80, 0.1, 0.05), (0.70, 0.0, 0.0), (0.75, 0.0, 0.0)]    # every epoch -10 or worse
    cfg = AKDConfig(epochs=3, patience=None, selection="guarded", max_cacc_drop=2.0, lr=1e-3)
    run = adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values, guarded=True), cfg,
                             progress=False)
    assert run.chosen == 0 and len(run.epochs) == 3
    assert all(torch.equal(before[k], v) for k, v in clf.model.state_dict().items())
    with pytest.raises(BedkdError, match="no usable epoch"):        # the validation rule has no such fallback
        adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values),
                           cfg.replace(selection="validation", abort_cacc_drop=5.0), progress=False)


def test_guarded_patience_counts_from_the_first_epoch_within_the_guard(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    # three dipped epochs (below the guard, above the collapse limit), then a recovered one, then none better
    values = [(0.90, 1.0, 0.95), (0.82, 0.1, 0.05), (0.84, 0.1, 0.05), (0.86, 0.1, 0.05), (0.90, 0.1, 0.05),
              (0.89, 0.1, 0.05), (0.89, 0.1, 0.05)]
    cfg = AKDConfig(epochs=6, patience=1, selection="guarded", max_cacc_drop=1.0, abort_cacc_drop=15.0)
    run = adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values, guarded=True), cfg,
                             progress=False)
    assert run.chosen == 4 and len(run.epochs) == 5 and "for 1 epochs" in run.stop_reason


def test_guarded_selection_allows_a_noise_margin_and_prefers_the_lowest_proxy(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    cfg = AKDConfig(epochs=4, patience=None, selection="guarded", max_cacc_drop=1.0)
    values = [(0.90, 1.0, 0.95), (0.88, 0.5, 0.40), (0.86, 0.2, 0.10), (0.89, 0.3, 0.30), (0.90, 0.9, 0.50)]

    def chosen(cfg, se=0.0):
        return adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values, se, guarded=True), cfg,
                                  progress=False).chosen
    # no noise: only drops of at most 1 point count (epochs 3 and 4); epoch 3 has the lower proxy
    assert chosen(cfg) == 3
    # a standard error of 2 points widens the margin to 1 + 4 points: epoch 2 (-4) has the lowest proxy
    assert chosen(cfg, se=0.02) == 2
    # proxies within the tolerance count as equal: then the more accurate epoch 3 wins over epoch 2
    assert chosen(cfg.replace(proxy_tolerance=0.25), se=0.02) == 3
    # guard_se sets the margin's width in standard errors: 0.5 of 2 points is 1 + 1, too narrow for epoch 2
    assert chosen(cfg.replace(guard_se=0.5), se=0.02) == 3
    assert chosen(cfg.replace(guard_se=1.5), se=0.02) == 2
    # guard_margin_cap bounds the margin in points: 4 points of margin capped at 2 leave epoch 2 (-4) out
    assert chosen(cfg.replace(guard_margin_cap=2.0), se=0.02) == 3
    assert chosen(cfg.replace(guard_margin_cap=3.0), se=0.02) == 2


def test_guarded_run_stops_once_the_trigger_proxy_is_at_the_clean_level(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    cfg = AKDConfig(epochs=5, patience=None, selection="guarded", stop_proxy=0.05)
    values = [(0.90, 1.0, 0.95), (0.90, 0.5, 0.40), (0.90, 0.2, 0.04), (0.9, 0.1, 0.0), (0.9, 0.1, 0.0), (0.9, 0.1, 0.0)]
    run = adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values, guarded=True), cfg,
                             progress=False)
    assert run.chosen == 2 and len(run.epochs) == 2 and "clean level" in run.stop_reason


def test_guarded_proxy_is_what_the_trigger_adds_not_a_shift_away_from_the_target(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    cfg = AKDConfig(epochs=2, patience=None, selection="guarded", max_cacc_drop=5.0)
    # epoch 1: the trigger adds 2 points; epoch 2: fewer rows go to the target with the trigger, but
    # as many fewer go there without it (the model moved away from the target class, losing accuracy)
    values = [(0.90, 1.0, 0.50, 0.40), (0.90, 1.0, 0.42, 0.40), (0.87, 1.0, 0.22, 0.20)]
    run = adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values, guarded=True), cfg,
                             progress=False)
    assert run.chosen == 1


_REPLAY_VALUES = [(0.90, 1.0, 0.95), (0.87, 0.2, 0.10), (0.88, 0.3, 0.30), (0.895, 0.4, 0.45), (0.86, 0.2, 0.05),
                  (0.90, 0.5, 0.50), (0.89, 0.5, 0.50)]


@pytest.mark.parametrize("changes", [dict(guard_se=0.0), dict(guard_se=1.0), dict(guard_se=2.0, patience=2),
                                     dict(guard_se=0.0, patience=1), dict(max_cacc_drop=3.0, guard_se=0.0),
                                     dict(stop_proxy=0.06, guard_se=1.0), dict(selection="validation", patience=2),
                                     dict(max_cacc_drop=0.0, guard_se=0.0, patience=None),
                                     dict(guard_margin_cap=1.0), dict(guard_margin_cap=1.5, patience=1)])
def test_replaying_a_complete_run_gives_the_epoch_the_rule_keeps_when_it_runs(tiny_model_dir, changes):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    from bedkd.defenses.purifiers.epoch_choice import replay_choice
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    base = AKDConfig(epochs=6, patience=None, selection="guarded", max_cacc_drop=1.0, guard_se=2.0)

    def run(cfg):
        return adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(_REPLAY_VALUES, 0.02, cfg.selection == "guarded"),
                                  cfg, progress=False)
    complete = run(base)
    assert len(complete.epochs) == 6
    cfg = base.replace(**changes)
    real = run(cfg)
    got = replay_choice(complete.epochs, complete.start, cfg)
    assert got.exact and (got.epoch, got.stopped_after) == (real.chosen, len(real.epochs))
    assert replay_choice(real.epochs, real.start, cfg).epoch == real.chosen      # its own records


def test_the_start_as_a_candidate_is_kept_when_no_cycle_lowers_the_trigger_proxy_without_losing_accuracy(
        tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    from bedkd.defenses.purifiers.epoch_choice import replay_choice
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    cfg = AKDConfig(epochs=6, patience=2, selection="guarded", max_cacc_drop=1.0, guard_se=0.0, lr=1e-3,
                    start_candidate=True)
    # the start (trigger proxy already 0: a reset took it out), two dipped cycles that do not count
    # for patience, then two within the guard, as clean of the trigger but less accurate
    values = [(0.90, 1.0, 0.10, 0.12), (0.91, 1.0, 0.10, 0.12), (0.85, 0.1, 0.0), (0.86, 0.1, 0.0),
              (0.895, 0.1, 0.02), (0.90, 0.1, 0.01), (0.90, 0.1, 0.0)]
    run = adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values), cfg, progress=False)
    assert run.start["as_returned"]["val_acc"] == 0.91
    assert run.chosen == 0 and len(run.epochs) == 5 and "for 2 epochs" in run.stop_reason
    assert all(torch.equal(before[k], v) for k, v in clf.model.state_dict().items())
    assert replay_choice(run.epochs, run.start, cfg).epoch == 0
    # without the option the rule keeps the most accurate cycle within the guard
    assert replay_choice(run.epochs, run.start, cfg.replace(start_candidate=False)).epoch == 5
    # a guarded run without the option measures the start as returned all the same (it is no
    # candidate there), so that a replay tells what the option would have kept
    without = adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values + [(0.89, 0.1, 0.0)]),
                                 cfg.replace(start_candidate=False), progress=False)
    assert without.start["as_returned"]["val_acc"] == 0.91 and without.chosen == 5 and len(without.epochs) == 6
    assert [e["val_acc"] for e in without.epochs[:5]] == [e["val_acc"] for e in run.epochs]
    kept = replay_choice(without.epochs, without.start, cfg)
    assert (kept.epoch, kept.stopped_after, kept.exact) == (0, 5, True)
    # a cycle that takes the proxy lower than the start's (by more than the tolerance) wins
    values = [(0.90, 1.0, 0.95, 0.1), (0.91, 1.0, 0.95, 0.1), (0.895, 0.1, 0.10), (0.89, 0.1, 0.10), (0.89, 0.1, 0.1)]
    run = adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values), cfg, progress=False)
    assert run.chosen == 1 and len(run.epochs) == 3


def test_the_start_is_no_candidate_without_a_trigger_proxy_nor_outside_the_guarded_rule(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    cfg = AKDConfig(epochs=2, patience=None, selection="guarded", max_cacc_drop=1.0, start_candidate=True)
    values = [(0.90, 1.0), (0.895, 0.98), (0.90, 0.97)]         # flag agreement only
    run = adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values), cfg, progress=False)
    assert "as_returned" not in run.start and run.chosen == 2
    with pytest.raises(ConfigError, match="start_candidate"):
        AKDConfig(start_candidate=True)


def test_replaying_a_run_cut_short_by_another_rule_is_not_exact(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    from bedkd.defenses.purifiers.epoch_choice import replay_choice
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    cfg = AKDConfig(epochs=6, patience=2, selection="guarded", max_cacc_drop=1.0, guard_se=2.0)
    short = adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(_REPLAY_VALUES, 0.02, True), cfg,
                               progress=False)
    assert len(short.epochs) < 6
    # with no margin epoch 1 (-3 points) is out, the guard's first epoch comes later and patience with it
    narrow = replay_choice(short.epochs, short.start, cfg.replace(guard_se=0.0))
    assert not narrow.exact and narrow.stopped_after == len(short.epochs)
    assert replay_choice(short.epochs, short.start, cfg).exact


@pytest.mark.parametrize("repair_first, order", [(False, ["trust", "repair"]), (True, ["repair", "trust"])])
def test_repair_pass_runs_where_asked_in_each_cycle(tiny_model_dir, monkeypatch, repair_first, order):
    from bedkd.defenses.purifiers import akd
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    calls = []
    monkeypatch.setattr(akd, "distill_epoch", lambda *a, **k: calls.append("trust") or 0.0)
    monkeypatch.setattr(akd, "repair_epoch", lambda *a, **k: calls.append("repair") or 0.0)
    repair = akd.RepairRows([[1, 2]], torch.tensor([0]))
    cfg = AKDConfig(epochs=2, patience=None, repair_first=repair_first)
    run = akd.adversarial_cycles(clf.model, targets, None, pad, _scripted_validation([(0.9, 1.0)] * 3), cfg,
                                 progress=False, repair=repair)
    assert calls == order * 2 and all(e["repair_loss"] == 0.0 for e in run.epochs)


@pytest.mark.parametrize("when, values, punished", [
    # the trigger adds 45, 1, 30 points after the start, epoch 1 and epoch 2: the cycle after a clean reading skips
    ("backdoor", [(0.9, 1.0, 0.50, 0.05), (0.9, 1.0, 0.06, 0.05), (0.9, 1.0, 0.35, 0.05), (0.9, 1.0, 0.0, 0.0)],
     [True, False, True]),
    ("always", [(0.9, 1.0, 0.50, 0.05), (0.9, 1.0, 0.06, 0.05), (0.9, 1.0, 0.35, 0.05), (0.9, 1.0, 0.0, 0.0)],
     [True, True, True]),
    # no trigger proxy (no found trigger): always punish
    ("backdoor", [(0.9, 1.0), (0.9, 0.0), (0.9, 0.0), (0.9, 0.0)], [True, True, True]),
])
def test_punish_pass_runs_while_the_trigger_proxy_shows_a_backdoor(tiny_model_dir, monkeypatch, when, values,
                                                                   punished):
    from bedkd.defenses.purifiers import akd
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    signs = []
    monkeypatch.setattr(akd, "distill_epoch", lambda *a, sign=1.0, **k: signs.append(sign) or 0.0)
    cfg = AKDConfig(epochs=3, patience=None, selection="guarded", punish_passes=1, punish_when=when)
    run = akd.adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation(values, guarded=True), cfg,
                                 progress=False)
    assert [e["punish_loss"] is not None for e in run.epochs] == punished
    assert signs.count(-1.0) == sum(punished)


def test_match_teacher_prior_shifts_each_cycle_back_to_the_teachers_mean_prediction(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import Validator, adversarial_cycles
    from bedkd.modeling.batching import encode
    from bedkd.modeling.inference import predict_proba_ids
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    val, _ = synthetic(60, seed=4)
    ids = encode(clf.tokenizer, val.texts, 32)
    validator = Validator(pad, ids, np.asarray(val.labels), np.asarray([0.5, 0.5]))
    prior = np.asarray([0.8, 0.2])          # not the model's: every cycle has to move towards it
    cfg = AKDConfig(epochs=2, patience=None, lr=1e-3, match_teacher_prior=True)
    run = adversarial_cycles(clf.model, targets, targets, pad, validator, cfg, progress=False,
                             teacher_prior=prior)
    assert all(e["bias_shift"] > 0 for e in run.epochs)
    assert np.allclose(predict_proba_ids(clf.model, ids, pad).mean(axis=0), prior, atol=1e-3)
    with pytest.raises(ConfigError, match="match_teacher_prior"):
        adversarial_cycles(clf.model, targets, targets, pad, validator, cfg, progress=False)


def _scored_rows(lean: float, prior, monkeypatch, n=400):
    """A validator over ``n`` held-out rows whose labels a score decides (class 1 above 0) and a model
    whose class-1 logit is that score plus ``lean`` (``predict_proba_ids`` returns it)."""
    from bedkd.defenses.purifiers import akd
    gen = np.random.default_rng(3)
    score = np.concatenate([gen.normal(-1.5, 1.0, n // 2), gen.normal(1.5, 1.0, n // 2)])
    labels = (score > 0).astype(int)
    p1 = 1 / (1 + np.exp(-(score + lean)))
    monkeypatch.setattr(akd, "predict_proba_ids", lambda model, ids, pad: np.stack([1 - p1, p1], axis=1))
    return akd.Validator(0, [[1]] * n, labels, np.asarray(prior, dtype=float))


def test_clean_prior_shift_takes_a_lean_out_and_restores_held_out_accuracy(tiny_model_dir, monkeypatch):
    from bedkd.defenses.purifiers.akd import shift_to_clean_prior
    from bedkd.modeling.calibration import head_bias
    clf = load_classifier(str(tiny_model_dir))
    validator = _scored_rows(lean=2.0, prior=[0.5, 0.5], monkeypatch=monkeypatch)
    before = head_bias(clf.model).detach().clone()
    shift = shift_to_clean_prior(clf.model, validator)
    assert shift["applied"]
    assert shift["val_acc_weighted_after"] > shift["val_acc_weighted_before"] + 0.1
    offsets = np.asarray(shift["offsets"])
    assert -2.5 < offsets[1] - offsets[0] < -1.5          # about the lean, taken back
    assert torch.allclose(head_bias(clf.model).detach() - before, torch.as_tensor(offsets, dtype=before.dtype))


def test_clean_prior_shift_is_not_applied_when_it_would_cost_held_out_accuracy(tiny_model_dir, monkeypatch):
    from bedkd.defenses.purifiers.akd import shift_to_clean_prior
    from bedkd.modeling.calibration import head_bias
    clf = load_classifier(str(tiny_model_dir))
    validator = _scored_rows(lean=0.0, prior=[0.05, 0.95], monkeypatch=monkeypatch)   # not the rows' mix
    before = head_bias(clf.model).detach().clone()
    shift = shift_to_clean_prior(clf.model, validator)
    assert not shift["applied"] and shift["val_acc_weighted_after"] < shift["val_acc_weighted_before"]
    assert torch.equal(head_bias(clf.model).detach(), before)


def test_prior_shift_keep_start_keeps_a_costly_shift_only_above_the_start(tiny_model_dir, monkeypatch):
    from bedkd.defenses.purifiers.akd import shift_to_clean_prior
    from bedkd.modeling.calibration import head_bias
    clf = load_classifier(str(tiny_model_dir))
    validator = _scored_rows(lean=0.0, prior=[0.05, 0.95], monkeypatch=monkeypatch)   # the shift costs accuracy
    before = head_bias(clf.model).detach().clone()
    probe = shift_to_clean_prior(clf.model, validator)              # 'gain': refused
    assert not probe["applied"]
    after = probe["val_acc_weighted_after"]
    validator.shift_floor = after + 0.01                           # a start more accurate than the shift: refused
    assert not shift_to_clean_prior(clf.model, validator)["applied"]
    assert torch.equal(head_bias(clf.model).detach(), before)
    validator.shift_floor = after - 0.01                           # the shift stays above the start: kept
    shift = shift_to_clean_prior(clf.model, validator)
    assert shift["applied"] and shift["val_acc_weighted_after"] < shift["val_acc_weighted_before"]
    assert not torch.equal(head_bias(clf.model).detach(), before)
    with pytest.raises(ConfigError, match="set clean_prior_shift too"):
        AKDConfig(prior_shift_keep="start")


def test_clean_prior_shift_needs_held_out_rows_and_excludes_the_teacher_prior():
    with pytest.raises(ConfigError, match="choose one"):
        AKDConfig(clean_prior_shift=True, match_teacher_prior=True)
    with pytest.raises(ConfigError, match="clean_prior_shift needs held-out rows"):
        AKDConfig(clean_prior_shift=True, selection="last", val_per_class=0)


def test_the_guard_can_measure_an_epoch_with_its_clean_prior_shift(monkeypatch):
    validator = _scored_rows(lean=2.0, prior=[0.5, 0.5], monkeypatch=monkeypatch)
    raw, raw_correct = validator(None)
    shifted, shifted_correct = validator(None, prior_shift=True)
    assert "bias_shift" not in raw and shifted["bias_shift"] > 0.75         # the lean (2 logits), taken out
    assert shifted["val_acc_weighted"] > raw["val_acc_weighted"] + 0.1
    assert shifted["val_acc_weighted"] == validator.weighted(shifted_correct)
    # a shift that would cost held-out accuracy is not applied, nor measured
    validator = _scored_rows(lean=0.0, prior=[0.05, 0.95], monkeypatch=monkeypatch)
    kept, _ = validator(None, prior_shift=True)
    assert kept["bias_shift"] == 0.0 and kept["val_acc_weighted"] == validator(None)[0]["val_acc_weighted"]


def test_the_trigger_proxy_is_measured_with_the_same_shift(monkeypatch):
    from bedkd.defenses.purifiers import akd
    n = 200
    labels = np.repeat([0, 1], n // 2)
    lean = np.stack([np.full(n, 0.2), np.full(n, 0.8)], axis=1)       # every row leans to class 1
    monkeypatch.setattr(akd, "predict_proba_ids", lambda model, ids, pad: lean[:len(ids)])
    validator = akd.Validator(0, [[1]] * n, labels, np.asarray([0.5, 0.5]), trigger_ids=[[2]] * n,
                              trigger_rows=np.arange(n), trigger_targets=np.ones(n, dtype=int))
    raw, _ = validator(None)
    shifted, _ = validator(None, prior_shift=True)
    assert raw["trigger_asr"] == 1.0 and raw["clean_to_target"] == 1.0
    # the shift takes the lean out of the triggered rows as of the clean ones (one offset for both)
    assert shifted["bias_shift"] > 0 and shifted["trigger_asr"] == shifted["clean_to_target"]


def test_guard_prior_shift_needs_the_clean_prior_shift():
    with pytest.raises(ConfigError, match="set clean_prior_shift too"):
        AKDConfig(guard_prior_shift=True)
    assert AKDConfig(guard_prior_shift=True, clean_prior_shift=True).guard_prior_shift


def test_cycles_under_guard_prior_shift_record_each_epochs_shift_and_not_the_starts(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import Validator, adversarial_cycles
    from bedkd.modeling.batching import encode
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    val, _ = synthetic(60, seed=4)
    validator = Validator(pad, encode(clf.tokenizer, val.texts, 32), np.asarray(val.labels), np.asarray([0.5, 0.5]))
    cfg = AKDConfig(epochs=2, patience=None, lr=1e-3, selection="guarded", clean_prior_shift=True,
                    guard_prior_shift=True)
    run = adversarial_cycles(clf.model, targets, targets, pad, validator, cfg, progress=False)
    assert "bias_shift" not in run.start and all("bias_shift" in e for e in run.epochs)


def test_punish_rows_per_cycle_draws_that_many_rows_anew_each_pass(tiny_model_dir, monkeypatch):
    from bedkd.defenses import distillation
    from bedkd.defenses.distillation import LossForm
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    seen = []
    real_collate = distillation.collate
    monkeypatch.setattr(distillation, "collate", lambda ids, *a: seen.append([tuple(x) for x in ids]) or
                        real_collate(ids, *a))
    opt = torch.optim.Adam(clf.model.parameters(), lr=1e-4)
    form = LossForm.of(AKDConfig())

    def rows_of_pass(seed, max_rows):
        seen.clear()
        distillation.distill_epoch(clf.model, opt, targets, pad, form, batch_size=4, seed=seed, sign=-1.0,
                                   max_rows=max_rows)
        return sorted(row for batch in seen for row in batch)

    everything = rows_of_pass(0, None)
    assert len(everything) == len(targets.ids)
    first, second = rows_of_pass(0, 5), rows_of_pass(1, 5)
    assert len(first) == len(second) == 5 and first != second          # a new draw per pass
    assert set(first) <= set(everything) and rows_of_pass(0, 5) == first  # seeded
    assert len(rows_of_pass(0, 10_000)) == len(targets.ids)              # more than there are: all of them


def test_akd_passes_punish_rows_per_cycle_to_the_punish_pass_only(tiny_model_dir, monkeypatch):
    from bedkd.defenses.purifiers import akd
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    calls = []
    monkeypatch.setattr(akd, "distill_epoch", lambda *a, sign=1.0, max_rows=None, **k: calls.append((sign, max_rows))
                        or 0.0)
    cfg = AKDConfig(epochs=1, patience=None, punish_passes=1, punish_rows_per_cycle=7)
    akd.adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation([(0.9, 1.0)] * 2), cfg,
                           progress=False)
    assert calls == [(1.0, None), (-1.0, 7)]


def test_untriggered_latest_keeps_the_latest_epoch_within_the_guard_when_no_trigger_was_found():
    from bedkd.defenses.purifiers.epoch_choice import replay_choice
    start = {"val_acc": 0.80, "val_acc_weighted": 0.80, "flag_agreement": 1.0, "trigger_asr": None,
             "clean_to_target": None}
    # (accuracy, flag agreement): epoch 1 has the least agreement, epoch 4 is outside the guard
    rows = [(0.80, 0.35), (0.82, 0.73), (0.81, 0.60), (0.70, 0.50), (0.79, 0.59), (0.60, 0.55)]
    records = [{"epoch": i + 1, "val_acc": v, "val_acc_weighted": v, "val_change_se": 0.0, "flag_agreement": a,
                "trigger_asr": None, "clean_to_target": None} for i, (v, a) in enumerate(rows)]
    cfg = AKDConfig(epochs=6, patience=None, selection="guarded", max_cacc_drop=2.0, guard_se=0.0)
    assert replay_choice(records, start, cfg).epoch == 1
    assert replay_choice(records, start, cfg.replace(untriggered_latest=True)).epoch == 5
    # a mean of weights is not in the records: the replay says so
    latest = replay_choice(records, start, cfg.replace(untriggered_latest=True))
    averaged = replay_choice(records, start, cfg.replace(untriggered_latest=True, untriggered_mean=3))
    assert latest.exact and not averaged.exact and averaged.epoch == 5
    # patience counts epochs outside the guard only: the latest within it is always "better"
    patient = replay_choice(records[:4] + [{**records[3], "epoch": 5}, {**records[3], "epoch": 6}], start,
                            cfg.replace(untriggered_latest=True, patience=2))
    assert patient.epoch == 3 and patient.stopped_after == 5
    # with a found trigger the option changes nothing
    found = [{**r, "trigger_asr": 0.1 + 0.1 * (r["epoch"] == 3), "clean_to_target": 0.1} for r in records]
    assert replay_choice(found, {**start, "trigger_asr": 1.0, "clean_to_target": 0.1},
                         cfg.replace(untriggered_latest=True)).epoch == \
        replay_choice(found, {**start, "trigger_asr": 1.0, "clean_to_target": 0.1}, cfg).epoch
    with pytest.raises(ConfigError, match="untriggered_latest"):
        AKDConfig(untriggered_latest=True, selection="last")


@pytest.mark.parametrize("mean_acc, kept", [(0.89, True), (0.80, False)])
def test_untriggered_mean_returns_the_mean_of_the_last_epochs_within_the_guard(tiny_model_dir, mean_acc, kept):
    from bedkd.defenses.purifiers.akd import adversarial_cycles
    clf, targets, pad = _cycle_inputs(tiny_model_dir)
    states = []
    # start, four epochs (epoch 3 outside the guard), then the mean of epochs 2 and 4 as measured
    validate = _scripted_validation([(0.90, 1.0), (0.90, 0.5), (0.90, 0.4), (0.70, 0.3), (0.90, 0.6), (mean_acc, 0.5)])

    class recording(_scripted_validation):
        def __call__(self, model, prior_shift=False):
            states.append({k: v.clone() for k, v in model.state_dict().items()})
            return validate(model)

    cfg = AKDConfig(epochs=4, patience=None, selection="guarded", max_cacc_drop=2.0, guard_se=0.0, lr=1e-3,
                    abort_cacc_drop=30.0, untriggered_latest=True, untriggered_mean=2)
    run = adversarial_cycles(clf.model, targets, targets, pad, recording([]), cfg, progress=False)
    assert run.chosen == 4 and run.mean["epochs"] == [2, 4] and run.mean["kept"] is kept
    assert run.report()["epoch_mean"] is run.mean
    returned = clf.model.state_dict()
    floats = [k for k, v in returned.items() if v.is_floating_point()]
    assert all(torch.equal(states[5][k], returned[k]) == kept for k in floats)      # the mean, as measured
    want = {k: (states[2][k] + states[4][k]) / 2 for k in floats} if kept else states[4]
    assert all(torch.allclose(returned[k], want[k]) for k in floats)
    assert not torch.allclose(states[2][floats[0]], states[4][floats[0]])          # two different epochs
    # one epoch: the latest alone, nothing averaged; the option needs untriggered_latest
    assert adversarial_cycles(clf.model, targets, targets, pad, _scripted_validation([(0.9, 1.0), (0.9, 0.5)]),
                              cfg.replace(epochs=1), progress=False).mean is None
    with pytest.raises(ConfigError, match="untriggered_mean"):
        AKDConfig(selection="guarded", untriggered_mean=2)


def test_the_signed_proxy_ranks_a_trigger_that_keeps_rows_off_the_target_below_one_that_adds_nothing():
    from bedkd.defenses.purifiers.epoch_choice import backdoor_proxy, replay_choice
    start = {"val_acc": 0.80, "val_acc_weighted": 0.80, "flag_agreement": None, "trigger_asr": 1.0,
             "clean_to_target": 0.15}
    # (accuracy, trigger rate, clean rate): epochs 1-3 add nothing or less than nothing; 4 is the backdoor back
    rows = [(0.79, 0.01, 0.20), (0.80, 0.015, 0.17), (0.81, 0.08, 0.16), (0.82, 0.90, 0.15)]
    records = [{"epoch": i + 1, "val_acc": v, "val_acc_weighted": v, "val_change_se": 0.0, "flag_agreement": None,
                "trigger_asr": t, "clean_to_target": c} for i, (v, t, c) in enumerate(rows)]
    cfg = AKDConfig(epochs=4, patience=None, selection="guarded", max_cacc_drop=2.0, guard_se=0.0)
    assert backdoor_proxy(records[0]) == 0.0 and backdoor_proxy(records[0], signed=True) == pytest.approx(-0.19)
    assert replay_choice(records, start, cfg).epoch == 3                          # all three tie at zero
    assert replay_choice(records, start, cfg.replace(signed_proxy=True)).epoch == 2  # within 0.05 of -0.19
    assert replay_choice(records, start, cfg.replace(signed_proxy=True, proxy_tolerance=0.2)).epoch == 3
    with pytest.raises(ConfigError, match="signed_proxy"):
        AKDConfig(signed_proxy=True, selection="last")


def test_tie_break_target_rate_keeps_the_tied_epoch_that_sends_fewest_held_out_trigger_rows_to_the_target():
    from bedkd.defenses.purifiers.epoch_choice import replay_choice
    # the records of an OLID BadNets target-0 run: the proxies of epochs 2-6 tie, epoch 2 is the most accurate,
    # epochs 5 and 6 send the fewest trigger rows to the target, epoch 4 is outside the guard
    start = {"val_acc": 0.795, "val_acc_weighted": 0.795, "flag_agreement": None, "trigger_asr": 0.460,
             "clean_to_target": 0.371}
    rows = [(0.791, 0.395, 0.339), (0.787, 0.355, 0.347), (0.775, 0.306, 0.306), (0.760, 0.323, 0.331),
            (0.781, 0.266, 0.282), (0.779, 0.266, 0.290)]
    records = [{"epoch": i + 1, "val_acc": v, "val_acc_weighted": v, "val_change_se": 0.0, "flag_agreement": None,
                "trigger_asr": t, "clean_to_target": c} for i, (v, t, c) in enumerate(rows)]
    cfg = AKDConfig(epochs=6, patience=None, selection="guarded", max_cacc_drop=2.0, guard_se=0.0, signed_proxy=True)
    assert replay_choice(records, start, cfg).epoch == 2
    assert replay_choice(records, start, cfg.replace(tie_break="target-rate")).epoch == 5     # 5 and 6 tie: accuracy
    # the rate ranks only the tied epochs: epoch 1 (proxy 0.056, beyond 0.05 of -0.024) is never kept for it
    low_rate = [{**r, "trigger_asr": 0.2, "clean_to_target": 0.144} if r["epoch"] == 1 else r for r in records]
    assert replay_choice(low_rate, start, cfg.replace(tie_break="target-rate")).epoch == 5
    # the choice moves later, so patience counts from another epoch
    assert replay_choice(records, start, cfg.replace(patience=2)).stopped_after == 5
    patient = replay_choice(records, start, cfg.replace(patience=2, tie_break="target-rate"))
    assert patient.epoch == 5 and patient.stopped_after == 6
    # without a found trigger the option changes nothing
    untriggered = [{**r, "trigger_asr": None, "clean_to_target": None, "flag_agreement": 0.5} for r in records]
    blank = {**start, "trigger_asr": None, "clean_to_target": None, "flag_agreement": 1.0}
    assert replay_choice(untriggered, blank, cfg.replace(tie_break="target-rate")).epoch == \
        replay_choice(untriggered, blank, cfg).epoch
    with pytest.raises(ConfigError, match="tie_break"):
        AKDConfig(tie_break="target-rate", selection="last")


def test_start_keep_se_keeps_the_start_unless_a_tied_epoch_is_more_accurate_beyond_its_noise():
    from bedkd.defenses.purifiers.epoch_choice import replay_choice
    start = {"val_acc": 0.870, "val_acc_weighted": 0.870, "flag_agreement": None, "trigger_asr": 0.105,
             "clean_to_target": 0.113,
             "as_returned": {"val_acc": 0.875, "val_acc_weighted": 0.875, "val_change_se": 0.008,
                             "flag_agreement": None, "trigger_asr": 0.121, "clean_to_target": 0.121}}
    # (accuracy, its paired SE, trigger rate, clean rate): every epoch ties the start's proxy (all within 0.05)
    rows = [(0.882, 0.016, 0.169, 0.161), (0.862, 0.016, 0.145, 0.145), (0.875, 0.016, 0.129, 0.121)]
    records = [{"epoch": i + 1, "val_acc": v, "val_acc_weighted": v, "val_change_se": se, "flag_agreement": None,
                "trigger_asr": t, "clean_to_target": c} for i, (v, se, t, c) in enumerate(rows)]
    cfg = AKDConfig(epochs=3, patience=None, selection="guarded", max_cacc_drop=1.0, signed_proxy=True,
                    start_candidate=True)
    assert replay_choice(records, start, cfg).epoch == 1                   # 0.7 points: the most accurate wins
    assert replay_choice(records, start, cfg.replace(start_keep_se=2.0)).epoch == 0   # within 2 x 1.6 points
    assert replay_choice(records, start, cfg.replace(start_keep_se=0.25)).epoch == 1  # beyond 0.25 x 1.6
    # an epoch whose found trigger adds clearly less than the start's, row by row, earns the change too
    def effects(start_adds: int) -> tuple[dict, list[dict]]:   # the start's trigger adds rows; epoch 3's none
        fx = "+" * start_adds + "0" * (124 - start_adds)
        return ({**start, "as_returned": {**start["as_returned"], "trigger_row_effects": fx}},
                [dict(r, trigger_row_effects="0" * 124 if r["epoch"] == 3 else fx) for r in records])
    keep = cfg.replace(start_keep_se=2.0)
    start10, records10 = effects(10)
    start3, records3 = effects(3)
    assert replay_choice(records10, start10, keep).epoch == 1     # z 3.3: the most accurate again
    assert replay_choice(records3, start3, keep).epoch == 0       # z 1.7: not enough rows
    # rows of another target's trigger (proxy_targets='worst') do not pair
    assert replay_choice([dict(r, trigger_rows_target=1) for r in records10], start10, keep).epoch == 0
    # a start that does not tie the lowest proxy is not kept, however little the cycles gained
    far = {**start, "as_returned": {**start["as_returned"], "trigger_asr": 0.40}}
    assert replay_choice(records, far, cfg.replace(start_keep_se=2.0)).epoch == 1
    with pytest.raises(ConfigError, match="start_keep_se"):
        AKDConfig(selection="guarded", start_keep_se=2.0)


def test_start_max_proxy_admits_the_start_only_where_its_own_trigger_adds_nothing():
    """SST-2 BadNets `qv xk wz` t1 s0 (docs/results/ablation_start_keep): the reset start's trigger still added
    3.7 points on the held-out rows, within the proxy tolerance of the cycles' epochs, and was kept (test
    ASR 21.6, floor 10.8); the cycles' epoch 3 met the bar (6.5)."""
    from bedkd.defenses.purifiers.epoch_choice import replay_choice
    start = {"val_acc": 0.890, "val_acc_weighted": 0.890, "flag_agreement": 0.83, "trigger_asr": 0.185,
             "clean_to_target": 0.148,
             "as_returned": {"val_acc": 0.890, "val_acc_weighted": 0.890, "val_change_se": 0.0,
                             "flag_agreement": 0.83, "trigger_asr": 0.185, "clean_to_target": 0.148}}
    # (accuracy, its paired SE, trigger rate, clean rate), as the run recorded them
    rows = [(0.877, 0.018, 0.083, 0.074), (0.864, 0.019, 0.074, 0.102), (0.885, 0.018, 0.074, 0.083),
            (0.882, 0.019, 0.074, 0.074)]
    records = [{"epoch": i + 1, "val_acc": v, "val_acc_weighted": v, "val_change_se": se, "flag_agreement": 0.6,
                "trigger_asr": t, "clean_to_target": c} for i, (v, se, t, c) in enumerate(rows)]
    keep = AKDConfig(epochs=4, patience=None, selection="guarded", max_cacc_drop=1.0, guard_margin_cap=1.0,
                     signed_proxy=True, start_candidate=True, start_keep_se=2.0)
    assert replay_choice(records, start, keep).epoch == 0           # 0.037 ties -0.009 (epoch 2 is off the guard)
    assert replay_choice(records, start, keep.replace(start_max_proxy=0.0)).epoch == 3     # not a candidate
    assert replay_choice(records, start, keep.replace(start_max_proxy=0.05)).epoch == 0
    clean = {**start, "as_returned": {**start["as_returned"], "trigger_asr": 0.148}}       # adds nothing
    assert replay_choice(records, clean, keep.replace(start_max_proxy=0.0)).epoch == 0
    with pytest.raises(ConfigError, match="start_max_proxy"):
        AKDConfig(selection="guarded", start_max_proxy=0.0)


def test_the_flag_tiebreak_narrows_trigger_tied_epochs_to_the_lowest_flag_agreement():
    from bedkd.defenses.purifiers.epoch_choice import _flag_tied, replay_choice
    start = {"val_acc": 0.90, "val_acc_weighted": 0.90, "flag_agreement": 1.0, "trigger_asr": 0.8,
             "clean_to_target": 0.0}
    rows = [(0.90, 0.35, 0.03), (0.905, 0.55, 0.01), (0.91, 0.50, 0.01), (0.90, 0.29, 0.01)]
    records = [{"epoch": i + 1, "val_acc": v, "val_acc_weighted": v, "val_change_se": 0.0, "flag_agreement": f,
                "trigger_asr": t, "clean_to_target": 0.0} for i, (v, f, t) in enumerate(rows)]
    cfg = AKDConfig(epochs=4, patience=None, selection="guarded", max_cacc_drop=1.0, guard_se=0.0)
    assert replay_choice(records, start, cfg).epoch == 3                             # the most accurate tied
    assert replay_choice(records, start, cfg.replace(flag_tiebreak=True)).epoch == 4  # the lowest flag agreement
    assert replay_choice(records, start, cfg.replace(flag_tiebreak=True, proxy_tolerance=0.3)).epoch == 3
    untriggered = {e: {**r, "trigger_asr": None} for e, r in enumerate(records)}
    assert _flag_tied(untriggered, 0.05) == untriggered          # without a trigger the flag is the proxy already
    with pytest.raises(ConfigError, match="flag_tiebreak"):
        AKDConfig(flag_tiebreak=True, selection="last")


def test_teacher_prior_shift_takes_the_teachers_lean_out_of_the_trust_targets():
    from types import SimpleNamespace
    from bedkd.defenses.purifiers.bedkd import _shift_teacher
    rng = np.random.default_rng(0)
    labels = [0] * 40 + [1] * 40                       # balanced draw; the pool's mix is 70 / 30
    score = np.where(np.asarray(labels) == 1, 1.0, -1.0) + rng.normal(0, 1, 80)
    logits = torch.tensor(np.stack([np.zeros(80), score + 1.5], axis=1), dtype=torch.float32)  # leans to 1
    trust = SimpleNamespace(logits=logits.clone())
    prior = np.array([0.7, 0.3])
    shift = _shift_teacher(trust, labels, prior)
    assert shift["mean_before"][1] > 0.5               # the lean, as measured before
    weights = prior[labels] / 40
    mean = (weights[:, None] * torch.softmax(trust.logits, -1).numpy()).sum(0) / weights.sum()
    assert np.allclose(mean, prior, atol=1e-4)         # after: the pool's shares
    offsets = np.asarray(shift["offsets"])
    assert offsets[1] - offsets[0] < -1.5              # the shift moved the logits away from class 1
    assert torch.allclose(trust.logits - logits, torch.as_tensor(offsets, dtype=torch.float32).expand(80, 2))


def test_teacher_prior_shift_is_reported_by_a_purification(tiny_model_dir):
    clf = load_classifier(str(tiny_model_dir))
    clean, _ = synthetic(150, seed=5)
    suspect, _ = synthetic(120, seed=6)
    result = BeDKD(DMMConfig(flip_per_class=10, epochs=1),
                   AKDConfig(trust_per_class=20, val_per_class=10, epochs=1, teacher_prior_shift=True)).purify(
        clf, clean, suspect, progress=False)
    shift = result.report["teacher_prior_shift"]
    assert len(shift["offsets"]) == 2 and abs(sum(shift["offsets"])) < 1e-6
    shares = np.bincount(clean.labels, minlength=2) / len(clean)      # the clean pool's mix, not the trust draw's
    assert np.allclose(shift["mean_after"], shares)
    with pytest.raises(ConfigError, match="teacher_prior_shift .* match_teacher_prior"):
        AKDConfig(teacher_prior_shift=True, match_teacher_prior=True)


class _Head(torch.nn.Module):
    """A stand-in classifier: only its head's bias matters to the bias shifts."""
    def __init__(self, num_labels: int = 2):
        super().__init__()
        self.config = type("Config", (), {"num_labels": num_labels})()
        self.classifier = torch.nn.Linear(4, num_labels)
        torch.nn.init.zeros_(self.classifier.bias)


def _rate_cap_case(monkeypatch, target_scores: np.ndarray, labels: np.ndarray):
    """A validator whose held-out rows score ``target_scores`` (the logit of class 0, the found target,
    over class 1's 0) and whose trigger rows are its class-1 rows (target 0)."""
    from bedkd.defenses.purifiers import akd
    proba = np.stack([1 / (1 + np.exp(-target_scores)), 1 / (1 + np.exp(target_scores))], axis=1)
    monkeypatch.setattr(akd, "predict_proba_ids", lambda model, ids, pad: proba[:len(ids)])
    rows = np.flatnonzero(labels == 1)
    return akd.Validator(0, [[1]] * len(labels), labels, np.asarray([0.5, 0.5]), trigger_ids=[[2]] * len(rows),
                         trigger_rows=rows, trigger_targets=np.zeros(len(rows), dtype=int))


def _start_rows(hits, rows: int = 100, **record) -> dict:
    """A start record whose held-out trigger rows ``hits`` (indices among ``rows``) went to the target."""
    bits = np.zeros(rows, dtype=bool)
    bits[list(hits)] = True
    return {"clean_to_target": float(bits.mean()), "clean_to_target_rows": "".join("1" if b else "0" for b in bits),
            "val_acc_weighted": 0.9, **record}


def test_target_rate_cap_takes_out_the_lean_the_cycles_added(monkeypatch):
    from bedkd.defenses.purifiers.akd import cap_target_rate
    labels = np.repeat([0, 1], 100)
    # class-0 rows well inside; of the class-1 rows, 20 go to the target 0 (margins 0.1 .. 2.0)
    scores = np.concatenate([np.full(100, 3.0), np.linspace(0.1, 2.0, 20), np.full(80, -3.0)])
    validator = _rate_cap_case(monkeypatch, scores, labels)
    start = _start_rows(range(8, 20))          # 12 of the 100 before the cycles, all still sent there
    model = _Head()
    cap = cap_target_rate(model, validator, start, max_cacc_drop=1.0, z=2.0)
    assert cap["applied"] and cap["rate_before"] == 0.2 and cap["rate_after"] == pytest.approx(0.12)
    assert (cap["rows_joined"], cap["rows_left"]) == (8, 0)      # 8 >= 2 * sqrt(8)
    # the smallest offset that does it: the 8 rows of lowest margin flip, the ninth does not
    margins = np.sort(np.linspace(0.1, 2.0, 20))
    assert margins[7] < -cap["offsets"][0] < margins[8] and cap["offsets"][1] == 0.0
    assert torch.allclose(model.classifier.bias, torch.tensor(cap["offsets"], dtype=torch.float32))
    assert cap["val_acc_weighted_after"] > cap["val_acc_weighted_before"]


def test_target_rate_cap_leaves_a_model_that_leans_no_more_than_the_start(monkeypatch):
    from bedkd.defenses.purifiers.akd import cap_target_rate
    labels = np.repeat([0, 1], 100)
    scores = np.concatenate([np.full(100, 3.0), np.linspace(0.1, 2.0, 20), np.full(80, -3.0)])
    model = _Head()
    cap = cap_target_rate(model, _rate_cap_case(monkeypatch, scores, labels), _start_rows(range(25)), 1.0, 2.0)
    assert not cap["applied"] and cap["offsets"] == [0.0, 0.0] and cap["rate_after"] == 0.2
    assert not model.classifier.bias.any()
    assert cap_target_rate(model, _rate_cap_case(monkeypatch, scores, labels), {"clean_to_target": None}, 1.0,
                           2.0) is None


@pytest.mark.parametrize("start_hits, joined, left", [(range(1, 20), 1, 0),                    # one row more
                                                      ([*range(8, 20), *range(20, 26)], 8, 6)])  # churn
def test_target_rate_cap_takes_no_offset_for_an_excess_within_the_noise(monkeypatch, start_hits, joined, left):
    from bedkd.defenses.purifiers.akd import cap_target_rate
    labels = np.repeat([0, 1], 100)
    scores = np.concatenate([np.full(100, 3.0), np.linspace(0.1, 2.0, 20), np.full(80, -3.0)])
    model = _Head()
    cap = cap_target_rate(model, _rate_cap_case(monkeypatch, scores, labels), _start_rows(start_hits), 1.0, 2.0)
    assert (cap["rows_joined"], cap["rows_left"]) == (joined, left)
    assert not cap["applied"] and cap["offsets"] == [0.0, 0.0] and not model.classifier.bias.any()
    # without the margin (z 0, the first runs' rule) the same excess buys an offset
    cap = cap_target_rate(model, _rate_cap_case(monkeypatch, scores, labels), _start_rows(start_hits), 1.0, 0.0)
    assert cap["applied"] and cap["rate_after"] == pytest.approx(len(start_hits) / 100)


def test_target_rate_cap_is_refused_where_it_costs_accuracy_beyond_the_guard(monkeypatch):
    from bedkd.defenses.purifiers.akd import cap_target_rate
    labels = np.repeat([0, 1], 100)
    # half the target's own rows sit just above the boundary, closer than the leaning class-1 rows
    scores = np.concatenate([np.full(50, 3.0), np.full(50, 0.05), np.linspace(0.1, 2.0, 20), np.full(80, -3.0)])
    model = _Head()
    cap = cap_target_rate(model, _rate_cap_case(monkeypatch, scores, labels), _start_rows(range(10, 20)),
                          max_cacc_drop=1.0, z=2.0)
    assert not cap["applied"] and cap["val_acc_weighted_after"] < 0.89 and cap["offsets"][0] < 0
    assert not model.classifier.bias.any()
    with pytest.raises(ConfigError, match="target_rate_cap"):
        AKDConfig(target_rate_cap=True, selection="last")


def test_target_rate_cap_runs_record_their_margin_and_other_runs_keep_their_keys():
    assert "target_rate_cap_se" not in AKDConfig(selection="guarded").to_dict()
    assert AKDConfig(selection="guarded", target_rate_cap=True).to_dict()["target_rate_cap_se"] == 2.0
    assert AKDConfig(selection="guarded", target_rate_cap=True, target_rate_cap_se=0.0).to_dict()[
        "target_rate_cap_se"] == 0.0


def test_the_rate_cap_replay_measures_the_offset_and_leaves_the_model_alone(monkeypatch):
    from bedkd.defenses.purifiers.akd import rate_cap_replay
    labels = np.repeat([0, 1], 100)
    scores = np.concatenate([np.full(100, 3.0), np.linspace(0.1, 2.0, 20), np.full(80, -3.0)])
    probed = []

    def probe(model, offsets):
        probed.append(offsets)
        return {"cacc": 90.0, "asr": 10.0}
    cfg = AKDConfig(selection="guarded")
    model = _Head()
    replay = rate_cap_replay(model, _rate_cap_case(monkeypatch, scores, labels), _start_rows(range(1, 20)), cfg, probe)
    # one row more than the start: the rule without the margin acts, the default margin would not
    assert replay["applied"] and not replay["passes_margin"] and replay["paired_z"] == 2.0
    assert replay["rate_after"] == pytest.approx(0.19) and replay["test"] == {"cacc": 90.0, "asr": 10.0}
    assert np.allclose(probed[0], replay["offsets"]) and replay["offsets"][0] < 0
    assert not model.classifier.bias.any()                       # the model as it was
    replay = rate_cap_replay(model, _rate_cap_case(monkeypatch, scores, labels), _start_rows(range(8, 20)), cfg, probe)
    assert replay["applied"] and replay["passes_margin"] and len(probed) == 2
    replay = rate_cap_replay(model, _rate_cap_case(monkeypatch, scores, labels), _start_rows(range(25)), cfg, probe)
    assert not replay["applied"] and "test" not in replay and len(probed) == 2


def test_a_traced_guarded_run_reports_the_rate_cap_replay(tiny_model_dir, monkeypatch):
    from bedkd.defenses.purifiers import bedkd as purifier
    calls = []

    def spy(model, validator, start, cfg, probe):
        calls.append((start, cfg.target_rate_cap, probe))
        return {"applied": False, "passes_margin": False}
    monkeypatch.setattr(purifier, "rate_cap_replay", spy)
    clf = load_classifier(str(tiny_model_dir))
    clean, _ = synthetic(150, seed=5)
    suspect, _ = synthetic(120, seed=6)

    def probe(model, offsets):
        return {"cacc": 0.0}
    cfg = AKDConfig(trust_per_class=20, val_per_class=10, epochs=2, selection="guarded", max_cacc_drop=100.0,
                    abort_cacc_drop=100.0)
    result = BeDKD(DMMConfig(flip_per_class=10, epochs=1), cfg).purify(clf, clean, suspect, progress=False,
                                                                       epoch_probe=probe)
    assert result.report["selected_epoch"] > 0 and calls == [(result.report["start"], False, probe)]
    assert result.report["target_rate_cap_replay"] == {"applied": False, "passes_margin": False}
    untraced = BeDKD(DMMConfig(flip_per_class=10, epochs=1), cfg).purify(clf, clean, suspect, progress=False)
    assert "target_rate_cap_replay" not in untraced.report and len(calls) == 1


def test_target_rate_cap_is_applied_to_the_kept_epoch_and_reported(tiny_model_dir, monkeypatch):
    from bedkd.defenses.purifiers import bedkd as purifier
    calls = []

    def spy(model, validator, start, max_cacc_drop, z):
        calls.append((start, max_cacc_drop, z))
        return {"applied": False, "offsets": [0.0, 0.0]}
    monkeypatch.setattr(purifier, "cap_target_rate", spy)
    clf = load_classifier(str(tiny_model_dir))
    clean, _ = synthetic(150, seed=5)
    suspect, _ = synthetic(120, seed=6)
    cfg = AKDConfig(trust_per_class=20, val_per_class=10, epochs=2, selection="guarded", max_cacc_drop=100.0,
                    abort_cacc_drop=100.0, target_rate_cap=True)
    result = BeDKD(DMMConfig(flip_per_class=10, epochs=1), cfg).purify(clf, clean, suspect, progress=False)
    assert result.report["selected_epoch"] > 0                       # the guard let every epoch in
    assert calls == [(result.report["start"], 100.0, 2.0)]           # the start the cycles began from
    assert result.report["target_rate_cap"] == {"applied": False, "offsets": [0.0, 0.0]}


def test_worst_mix_moves_mass_from_the_classes_that_gained_onto_the_one_that_lost_most():
    from bedkd.defenses.purifiers.epoch_choice import worst_mix
    assert worst_mix([0.6, 0.4], [0.05, -0.10], 0.1) == pytest.approx([0.5, 0.5])
    assert worst_mix([0.6, 0.4], [0.05, -0.10], 1.0) == pytest.approx([0.0, 1.0])       # the worst class alone
    assert worst_mix([0.6, 0.4], [0.05, -0.10], 0.0) == pytest.approx([0.6, 0.4])
    # three classes: the one that gained most gives first, then the next
    assert worst_mix([0.2, 0.5, 0.3], [0.02, -0.05, 0.04], 0.4) == pytest.approx([0.1, 0.9, 0.0])


def test_the_mix_guard_refuses_a_class_trade_that_the_pools_mix_hides():
    from bedkd.defenses.purifiers.epoch_choice import replay_choice, worst_mix_change
    shares = [0.66, 0.34]
    start = {"val_acc": 0.80, "val_acc_weighted": 0.799, "val_acc_per_class": [0.85, 0.70], "class_shares": shares,
             "flag_agreement": 1.0, "trigger_asr": 0.9, "clean_to_target": 0.3}

    def epoch(i, per_class, proxy):
        weighted = sum(s * a for s, a in zip(shares, per_class))
        return {"epoch": i, "val_acc": weighted, "val_acc_weighted": weighted, "val_acc_per_class": per_class,
                "val_change_se": 0.005, "val_change_se_per_class": [0.006, 0.01], "class_shares": shares,
                "flag_agreement": 0.5, "trigger_asr": 0.3 + proxy, "clean_to_target": 0.3}
    # epoch 1: class 0 down 4 points, class 1 up 8 (the pool's mix: +0.08); epoch 2: both within a point
    records = [epoch(1, [0.81, 0.78], 0.0), epoch(2, [0.845, 0.695], 0.02)]
    cfg = AKDConfig(epochs=2, patience=None, selection="guarded", max_cacc_drop=1.0, guard_margin_cap=1.0)
    assert replay_choice(records, start, cfg).epoch == 1                 # the pool's mix: the higher accuracy
    # within 0.1 of the pool's mix, the worst is (0.76, 0.24): -0.0112, inside the 2-point guard
    assert replay_choice(records, start, cfg.replace(guard_mix_shift=0.1)).epoch == 1
    # within 0.3, (0.96, 0.04): -0.0352, outside
    assert replay_choice(records, start, cfg.replace(guard_mix_shift=0.3)).epoch == 2
    assert replay_choice(records, start, cfg.replace(guard_mix_shift=1.0)).epoch == 2
    change, se = worst_mix_change(records[0], start, 0.0)
    assert change == pytest.approx(records[0]["val_acc_weighted"] - start["val_acc_weighted"])
    assert se == pytest.approx((0.66 ** 2 * 0.006 ** 2 + 0.34 ** 2 * 0.01 ** 2) ** 0.5)
    assert worst_mix_change(records[0], start, 1.0) == pytest.approx((-0.04, 0.006))
    old = {k: v for k, v in records[0].items() if k != "val_change_se_per_class"}     # a record from before
    assert worst_mix_change(old, start, 1.0) is None
    with pytest.raises(ConfigError, match="guard_mix_shift"):
        AKDConfig(guard_mix_shift=0.1)


def test_the_validator_records_each_classs_change_and_its_standard_error(monkeypatch):
    validator = _scored_rows(lean=0.0, prior=[0.7, 0.3], monkeypatch=monkeypatch)
    record, correct = validator(None)
    assert record["class_shares"] == pytest.approx([0.7, 0.3])
    labels = validator.val_labels
    start = correct.copy()
    start[np.flatnonzero(labels == 1)[:10]] ^= True          # the start differs on ten class-1 rows
    per_class = validator.paired_se_per_class(correct, start)
    assert per_class[0] == 0.0 and per_class[1] > 0
    d = correct[labels == 1].astype(float) - start[labels == 1]
    assert per_class[1] == pytest.approx((d.var(ddof=1) / len(d)) ** 0.5)
    assert validator.paired_se(correct, start) == pytest.approx(0.3 * per_class[1])
