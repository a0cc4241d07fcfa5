"""The backdoor scan (verdict, target, trigger search) and the guarded preset, on tiny models."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bedkd.cli.main import main
from bedkd.data import LabeledTexts
from bedkd.defenses import PRESETS, AKDConfig, BeDKD, DMMConfig, ScanConfig
from bedkd.defenses.scanning import decide, label_evidence, search_triggers
from bedkd.defenses.scanning.trigger_search import SearchSettings, Trigger
from bedkd.errors import ConfigError, InputError
from bedkd.modeling import TrainConfig, finetune, load_classifier, predict
from test_bedkd import TRIGGER, synthetic, victim  # noqa: F401  (victim: the shared fixture)

TINY_DMM = DMMConfig(flip_per_class=40, epochs=2, lr=5e-4, max_flagged=None, max_kept=12)
TINY_AKD = AKDConfig(trust_per_class=60, val_per_class=30, epochs=3, lr=1e-3, kl_t2=False, synth_rows=20,
                     selection="guarded", stop_proxy=0.05, patience=None)


@pytest.fixture(scope="module")
def tiny_clean_model(tiny_model_dir):
    data, _ = synthetic(400, seed=5)
    clf = load_classifier(str(tiny_model_dir))
    finetune(clf, data, TrainConfig(epochs=12, lr=2e-3, batch_size=16, seed=0), progress=False)
    return clf, data


def test_label_evidence_counts_survivors_against_the_clean_rows():
    # label 1: 30 of 100 suspicious rows survive the flip, 2 of 100 clean rows do; label 0: 2 and 2
    labels = np.array([0] * 100 + [1] * 100)
    suspect_scores = np.r_[np.r_[np.zeros(2), np.ones(98)], np.r_[np.zeros(30), np.ones(70)]]
    clean_scores = np.r_[np.r_[np.zeros(2), np.ones(98)], np.r_[np.zeros(2), np.ones(98)]]
    ev = label_evidence(suspect_scores, labels, labels, clean_scores, labels, labels, 0.1, 2)
    assert [(e.suspect_flagged, e.clean_flagged) for e in ev] == [(2, 2), (30, 2)]
    assert ev[1].excess == pytest.approx(28.0)
    assert ev[1].log10_p > 6 > ev[0].log10_p
    # rows the teacher does not predict as their label are not counted
    wrong = labels.copy()
    wrong[100:130] = 0
    ev = label_evidence(suspect_scores, labels, wrong, clean_scores, labels, labels, 0.1, 2)
    assert ev[1].suspect_rows == 70 and ev[1].suspect_flagged == 0


def test_decide_needs_a_strong_statistic_and_enough_excess_rows():
    ev_weak = label_evidence(np.r_[np.zeros(3), np.ones(97)], np.ones(100, int), np.ones(100, int),
                             np.r_[np.zeros(1), np.ones(99)], np.ones(100, int), np.ones(100, int), 0.1, 2)
    verdict = decide(ev_weak, None, ScanConfig())
    assert not verdict.backdoor and verdict.target is None and "no evidence" in verdict.reasons[0]
    strong = label_evidence(np.r_[np.zeros(200), np.ones(800)], np.ones(1000, int), np.ones(1000, int),
                            np.r_[np.zeros(1), np.ones(199)], np.ones(200, int), np.ones(200, int), 0.1, 2)
    verdict = decide(strong, None, ScanConfig())
    assert verdict.backdoor and verdict.target == 1
    assert not decide(strong, None, ScanConfig(min_excess=300)).backdoor


def test_a_label_found_only_by_the_trigger_search_gets_no_dmm_punishment():
    from bedkd.defenses.scanning.trigger_search import TriggerSearch
    none = label_evidence(np.ones(100), np.ones(100, int), np.ones(100, int), np.ones(100), np.ones(100, int),
                          np.ones(100, int), 0.1, 2)
    search = TriggerSearch([Trigger(["cf"], True, 1, 0.97, 40), Trigger(["the"], True, 0, 0.2, 900)], 0.6)
    verdict = decide(none, search, ScanConfig())
    assert verdict.backdoor and verdict.targets == [1] and verdict.target == 1 and verdict.dmm_targets == []
    assert [t.words for t in verdict.triggers] == [["cf"]]
    assert "flips 97%" in verdict.reasons[0]


def test_trigger_insert_as_phrase_or_words():
    gen = np.random.default_rng(0)
    phrase = Trigger(["i", "watch", "this"], True, 1, 0.0, 0).insert("a b c", gen)
    assert "i watch this" in phrase
    words = Trigger(["x", "y"], False, 1, 0.0, 0).insert("a b c", gen)
    assert sorted(words.split()) == ["a", "b", "c", "x", "y"]


def test_trigger_search_finds_the_planted_word(victim):
    clf, suspect, _ = victim
    clean, _ = synthetic(300, seed=2)
    found = search_triggers(clf, clean, suspect, SearchSettings(candidates=10, probe_rows=60)).found
    assert found is not None and found.words == [TRIGGER] and found.target == 1 and found.flip_rate >= 0.6


def test_trigger_search_finds_nothing_without_a_backdoor(tiny_clean_model):
    clf, data = tiny_clean_model
    clean, _ = synthetic(300, seed=2)
    search = search_triggers(clf, clean, data, SearchSettings(candidates=10, probe_rows=60))
    assert search.found is None
    assert all(t.flip_rate < 0.6 for t in search.best.values())


def test_guarded_purify_punishes_the_target_and_removes_the_backdoor(victim):
    clf, suspect, _ = victim
    clean, _ = synthetic(400, seed=3)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    result = BeDKD(TINY_DMM, TINY_AKD, ScanConfig(trigger_candidates=10, trigger_probe_rows=60)).purify(
        clf, clean, suspect, progress=False)
    assert all(torch.equal(before[k], v) for k, v in clf.model.state_dict().items())
    report = result.report
    assert report["verdict"]["backdoor"] and report["verdict"]["target"] == 1
    assert report["verdict"]["trigger_search"]["found"]["words"] == [TRIGGER]
    assert report["data"]["trigger_rows"] == 20 and report["data"]["trigger_rows_mode"] == "repair"
    kept = result.detection.kept_rows
    assert all(suspect.labels[i] == 1 for i in kept)                  # only the target's rows are punished
    assert report["epochs"] and all(e["trigger_asr"] is not None for e in report["epochs"])
    chosen = report["epochs"][report["selected_epoch"] - 1]
    assert chosen["trigger_asr"] < report["start"]["trigger_asr"]
    json.dumps(report)


def _record_repair_rows(monkeypatch) -> list:
    """The RepairRows of every repair pass, in order (the pass itself still runs)."""
    from bedkd.defenses.purifiers import akd
    seen = []
    real = akd.repair_epoch
    monkeypatch.setattr(akd, "repair_epoch", lambda model, opt, rows, *a: seen.append(rows) or real(model, opt, rows, *a))
    return seen


def test_repair_originals_train_each_repair_row_without_its_trigger_towards_the_same_label(victim, monkeypatch):
    clf, suspect, _ = victim
    clean, _ = synthetic(400, seed=3)
    seen = _record_repair_rows(monkeypatch)
    for originals in (False, True):
        seen.clear()
        report = BeDKD(TINY_DMM, TINY_AKD.replace(repair_originals=originals, epochs=1),
                       ScanConfig(trigger_candidates=10, trigger_probe_rows=60)).purify(clf, clean, suspect,
                                                                                         progress=False).report
        rows = seen[0]
        assert report["data"]["trigger_rows"] == 20 and report["data"]["repair_rows"] == len(rows.ids)
        texts = clf.tokenizer.batch_decode(rows.ids, skip_special_tokens=True)
        if not originals:
            assert len(texts) == 20 and all(TRIGGER in t.split() for t in texts)
            continue
        assert len(texts) == 40 and rows.targets[:20].tolist() == rows.targets[20:].tolist()
        for triggered, original in zip(texts[:20], texts[20:]):
            assert TRIGGER not in original.split() and \
                [w for w in triggered.split() if w != TRIGGER] == original.split()


def test_repair_target_teacher_trains_each_repair_row_towards_the_suspicious_models_output_without_it(
        victim, monkeypatch):
    from bedkd.modeling.inference import predict_proba
    clf, suspect, _ = victim
    clean, _ = synthetic(400, seed=3)
    seen = _record_repair_rows(monkeypatch)
    BeDKD(TINY_DMM, TINY_AKD.replace(repair_target="teacher", epochs=1),
          ScanConfig(trigger_candidates=10, trigger_probe_rows=60)).purify(clf, clean, suspect, progress=False)
    rows = seen[0]
    texts = clf.tokenizer.batch_decode(rows.ids, skip_special_tokens=True)
    assert len(texts) == 20 and all(TRIGGER in t.split() for t in texts)
    originals = [" ".join(w for w in t.split() if w != TRIGGER) for t in texts]
    expected, triggered = predict_proba(clf, originals), predict_proba(clf, texts)
    assert rows.targets.shape == (20, clf.num_labels)
    np.testing.assert_allclose(rows.targets.cpu().numpy(), expected, atol=1e-4)
    # the victim sends the triggered rows to the target, its outputs without the trigger do not
    assert (triggered.argmax(axis=1) == 1).mean() > (expected.argmax(axis=1) == 1).mean()


def test_guarded_purify_leaves_a_model_without_evidence_unchanged(tiny_clean_model):
    clf, data = tiny_clean_model
    clean, _ = synthetic(400, seed=3)
    result = BeDKD(TINY_DMM, TINY_AKD, ScanConfig(evidence=300.0, trigger_candidates=10, trigger_probe_rows=60)).purify(
        clf, clean, data, progress=False)
    assert result.report["unchanged"] and not result.report["verdict"]["backdoor"]
    assert result.classifier is not clf
    assert all(torch.equal(a, b) for a, b in zip(clf.model.state_dict().values(),
                                                 result.classifier.model.state_dict().values()))


def _write(path, data: LabeledTexts):
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(data.texts, data.labels)))
    return path


def test_scan_command_exit_status_and_json(victim, tiny_clean_model, tmp_path):
    from bedkd.modeling import save_classifier
    clean, _ = synthetic(400, seed=3)
    clean_file = _write(tmp_path / "clean.tsv", clean)
    flags = ["--preset", "guarded", "--dmm-flip-per-class", "40", "--dmm-epochs", "1", "--akd-trust-per-class", "60",
             "--akd-val-per-class", "30", "--scan-evidence", "300", "--scan-trigger-candidates", "10",
             "--scan-trigger-probe-rows", "60", "--quiet"]
    for name, (clf, suspect), status in (("victim", victim[:2], 1), ("clean", tiny_clean_model, 0)):
        save_classifier(clf, tmp_path / name)
        out = tmp_path / f"{name}.json"
        assert main(["scan", "--model", str(tmp_path / name), "--clean", str(clean_file),
                     "--suspect", str(_write(tmp_path / f"{name}.tsv", suspect)), "--out", str(out), *flags]) == status
        report = json.loads(out.read_text())
        assert report["backdoor"] == bool(status)
        assert report["thresholds"]["evidence"] == 300.0 and report["dmm_evidence"]
        assert report["provenance"]["files"]
        if status:
            assert report["target"] == 1 and report["trigger_search"]["found"]["words"] == [TRIGGER]
    assert main(["scan", "--model", str(tmp_path / "clean"), "--clean", str(clean_file), "--suspect",
                 str(tmp_path / "clean.tsv"), "--out", str(tmp_path / "clean.json"), *flags]) == 2   # no overwrite



def test_scan_command_names_every_target_when_there_are_several(tiny_clean_model, tmp_path, monkeypatch, capsys):
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.scan import ScanResult, Verdict
    from bedkd.modeling import save_classifier
    clf, suspect = tiny_clean_model
    save_classifier(clf, tmp_path / "model")
    data = _write(tmp_path / "rows.tsv", suspect)

    class Found:                       # the detection's one use here: its metrics
        def metrics(self, truth):
            return {}
    evidence = [LabelEvidence(0, 100, 30, 100, 5, 4.0, 25.0), LabelEvidence(1, 100, 30, 100, 5, 3.0, 25.0)]
    verdict = Verdict(True, 0, [0, 1], [0, 1], ["two labels"], evidence, None, {})
    monkeypatch.setattr(BeDKD, "scan", lambda self, *a, **k: ScanResult(Found(), verdict, {}))
    assert main(["scan", "--model", str(tmp_path / "model"), "--clean", str(data), "--suspect", str(data),
                 "--out", str(tmp_path / "v.json"), "--preset", "guarded", "--quiet"]) == 1
    assert "backdoor found: target label 0 (targets 0, 1); two labels" in capsys.readouterr().err
    verdict.targets = [0]
    assert main(["scan", "--model", str(tmp_path / "model"), "--clean", str(data), "--suspect", str(data),
                 "--out", str(tmp_path / "w.json"), "--preset", "guarded", "--quiet"]) == 1
    assert "backdoor found: target label 0; two labels" in capsys.readouterr().err

def test_presets_have_all_three_records():
    for name, configs in PRESETS.items():
        assert [type(c).__name__ for c in configs] == ["DMMConfig", "AKDConfig", "ScanConfig"], name
    assert PRESETS["guarded"][2].enabled and not PRESETS["reference"][2].enabled
    assert PRESETS["guarded"][1].reset_trigger_embeddings and not PRESETS["reference"][1].reset_trigger_embeddings
    assert PRESETS["guarded"][2].punish_rows == "excess" and PRESETS["guarded"][1].punish_rows_per_cycle == 33
    assert PRESETS["guarded"][2].label_check and PRESETS["guarded"][2].label_check_use == "relabel"
    assert not PRESETS["reference"][2].label_check
    shift_guard = dict(guard_margin_cap=1.0, clean_prior_shift=True, guard_prior_shift=True)
    assert all(getattr(PRESETS["guarded"][1], k) == v for k, v in shift_guard.items())
    assert not PRESETS["reference"][1].clean_prior_shift and PRESETS["reference"][1].guard_margin_cap is None
    assert PRESETS["reference"][1].punish_rows_per_cycle is None        # the authors: the same 33 rows every cycle
    assert PRESETS["guarded"][1].untriggered_latest and not PRESETS["reference"][1].untriggered_latest


def test_reset_trigger_embeddings_touches_only_rare_words_and_words_of_rare_pieces(tiny_model_dir):
    from bedkd.defenses.purifiers.trigger_reset import reset_trigger_embeddings
    clf = load_classifier(str(tiny_model_dir))
    tok = clf.tokenizer
    words = [w for w in tok.get_vocab() if w.isalpha() and w.islower() and len(w) > 1
             and len(tok(w, add_special_tokens=False)["input_ids"]) == 1]
    rare, common = words[0], words[1]
    pieces = {w: tok(w, add_special_tokens=False)["input_ids"] for w in ("zxq", "mbjw")}
    rare_multi, mixed = "zxq", "mbjw"
    head = tok.convert_ids_to_tokens(pieces[mixed][0])
    assert all(len(p) > 1 for p in pieces.values()) and not head.startswith("##")
    assert not set(pieces[rare_multi]) & set(pieces[mixed])
    # the mixed word's first piece is in every clean row (ordinary vocabulary), no other piece in any
    clean = LabeledTexts([f"{common} {head} text" for i in range(200)] + [f"{rare} once"],
                         [i % 2 for i in range(201)])
    emb = clf.model.get_input_embeddings().weight
    before = emb.detach().clone()
    triggers = [Trigger([rare, common], True, 1, 1.0, 10), Trigger([rare_multi], True, 1, 1.0, 10),
                Trigger([mixed], True, 1, 1.0, 10)]
    reset = reset_trigger_embeddings(clf, triggers, clean)
    assert reset == [rare] + [f"{rare_multi}:{tok.convert_ids_to_tokens(p)}" for p in dict.fromkeys(pieces[rare_multi])]
    changed = set((emb.detach() != before).any(dim=1).nonzero().flatten().tolist())
    rare_id = tok(rare, add_special_tokens=False)["input_ids"][0]
    assert changed == {rare_id, *pieces[rare_multi]}          # common and every piece of the mixed word kept
    for row in changed:
        assert torch.allclose(emb[row], before.mean(dim=0), atol=1e-6)


def test_reset_value_clean_is_the_clean_rows_token_mean_counted_by_occurrence(tiny_model_dir):
    from bedkd.defenses.purifiers.trigger_reset import reset_trigger_embeddings
    clf = load_classifier(str(tiny_model_dir))
    tok = clf.tokenizer
    a, b = [w for w in tok.get_vocab() if w.isalpha() and w.islower() and len(w) > 2
            and len(tok(w, add_special_tokens=False)["input_ids"]) == 1][:2]
    clean = LabeledTexts([f"{a} {a} {a} {b}"] * 100 + ["zxq"], [i % 2 for i in range(101)])
    emb = clf.model.get_input_embeddings().weight
    before = emb.detach().clone()
    ids = {w: tok(w, add_special_tokens=False)["input_ids"][0] for w in (a, b)}
    zxq = tok("zxq", add_special_tokens=False)["input_ids"]
    typical = (300 * before[ids[a]] + 100 * before[ids[b]] + sum(before[i] for i in zxq)) / (400 + len(zxq))
    reset = reset_trigger_embeddings(clf, [Trigger(["zxq"], True, 1, 1.0, 10)], clean, value="clean")
    assert len(reset) == len(set(zxq))
    for i in zxq:
        assert torch.allclose(emb[i], typical, atol=1e-5)
        assert not torch.allclose(emb[i], before.mean(dim=0), atol=1e-3)
    assert AKDConfig().reset_value == "mean" and PRESETS["guarded"][1].reset_value == "mean"
    assert "reset_value" not in AKDConfig().to_dict()             # added with a default: old cache keys hold


@pytest.mark.parametrize("changed, kept", [(3, True), (10, False)])
def test_a_word_with_a_common_piece_is_reset_when_that_changes_few_held_out_predictions(tiny_model_dir, monkeypatch,
                                                                                       changed, kept):
    from bedkd.defenses.purifiers import trigger_reset as module
    clf = load_classifier(str(tiny_model_dir))
    tok = clf.tokenizer
    mixed = "mbjw"
    pieces = list(dict.fromkeys(tok(mixed, add_special_tokens=False)["input_ids"]))
    head = tok.convert_ids_to_tokens(pieces[0])
    clean = LabeledTexts([f"{head} text"] * 100, [i % 2 for i in range(100)])      # the head piece is common
    calls = []

    def scripted(model, ids, pad):              # 100 probe rows: the reset flips ``changed`` of them
        calls.append(len(ids))
        proba = np.tile([0.9, 0.1], (len(ids), 1))
        if len(calls) == 2:
            proba[:changed] = [0.1, 0.9]
        return proba
    monkeypatch.setattr(module, "predict_proba_ids", scripted)
    emb = clf.model.get_input_embeddings().weight
    before = emb.detach().clone()
    triggers = [Trigger([mixed], True, 1, 1.0, 10)]
    assert module.reset_trigger_embeddings(clf, triggers, clean) == [] and not calls     # the share rule alone
    reset = module.reset_trigger_embeddings(clf, triggers, clean, [[1, 2]] * 100, max_changed=0.05)
    assert calls == [100, 100]                  # before and after the word's reset
    moved = set((emb.detach() != before).any(dim=1).nonzero().flatten().tolist())
    if kept:
        assert reset == [f"{mixed}:{tok.convert_ids_to_tokens(p)}" for p in pieces] and moved == set(pieces)
    else:
        assert reset == [] and not moved        # restored


def test_pieces_only_keeps_a_common_one_token_word_unmeasured(tiny_model_dir, monkeypatch):
    from bedkd.defenses.purifiers import trigger_reset as module
    clf = load_classifier(str(tiny_model_dir))
    tok = clf.tokenizer
    word = next(w for w in tok.get_vocab() if w.isalpha() and w.islower() and len(w) > 2)
    clean = LabeledTexts([f"{word} text"] * 100, [i % 2 for i in range(100)])        # in every clean row
    calls = []
    monkeypatch.setattr(module, "predict_proba_ids", lambda model, ids, pad: calls.append(1) or
                        np.tile([0.9, 0.1], (len(ids), 1)))                          # nothing would change
    triggers = [Trigger([word], True, 1, 1.0, 10)]
    assert module.reset_trigger_embeddings(clf, triggers, clean, [[1, 2]] * 100, 0.05) == [word]   # 'all'
    assert module.reset_trigger_embeddings(clf, triggers, clean, [[1, 2]] * 100, 0.05, pieces_only=True) == []
    assert len(calls) == 2                          # only the first call measured the word


def test_no_evidence_reason_names_only_the_test_that_failed():
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    cfg = ScanConfig()
    strong_but_few = LabelEvidence(1, 1000, 30, 200, 0, 4.0, 9.5)
    weak = LabelEvidence(0, 1000, 10, 200, 2, 124.0, 2.9)
    assert decide([strong_but_few], None, cfg).reasons == [f"no evidence: strongest DMM label 1 (excess 4 < {cfg.min_excess})"]
    assert decide([weak], None, cfg).reasons == [f"no evidence: strongest DMM label 0 (-log10 p = 2.9 < {cfg.evidence:g})"]


def test_class_weights_make_drawn_rows_count_as_the_prior():
    from bedkd.defenses.distillation import class_weights, weighted_mean
    w = class_weights([0, 0, 0, 1], np.array([0.5, 0.5]))
    assert torch.allclose(w, torch.tensor([0.5 / 0.75] * 3 + [0.5 / 0.25]))
    # balanced rows weighted to a 3:1 prior: class 0 counts three times as much as class 1
    w = class_weights([0, 1, 0, 1], np.array([0.75, 0.25]))
    assert torch.allclose(w, torch.tensor([1.5, 0.5, 1.5, 0.5]))
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert weighted_mean(losses, None, [0, 1, 2, 3]).item() == pytest.approx(2.5)
    assert weighted_mean(losses, w, [0, 1, 2, 3]).item() == pytest.approx((1.5 + 1 + 4.5 + 2) / 4)
    assert weighted_mean(losses[:2], w, [2, 3]).item() == pytest.approx((1.5 + 1.0) / 2)


def test_a_zero_weight_repair_row_is_not_trained_on(tiny_model_dir):
    from bedkd.defenses.purifiers.akd import RepairRows, repair_epoch
    clf = load_classifier(str(tiny_model_dir))
    ids = [clf.tokenizer("good film")["input_ids"], clf.tokenizer("bad plot here")["input_ids"]]
    start = {k: v.clone() for k, v in clf.model.state_dict().items()}

    def trained(rows: RepairRows):
        clf.model.load_state_dict(start)
        torch.manual_seed(0)
        opt = torch.optim.Adam(clf.model.parameters(), lr=1e-3)
        repair_epoch(clf.model, opt, rows, clf.tokenizer.pad_token_id, batch_size=8, seed=0, grad_clip=None)
        return torch.cat([p.detach().flatten() for p in clf.model.parameters()])

    for m in clf.model.modules():      # no dropout: both runs see the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    only_first = trained(RepairRows(ids[:1], torch.tensor([1])))
    weighted = trained(RepairRows(ids, torch.tensor([1, 0]), torch.tensor([1.0, 0.0])))
    unweighted = trained(RepairRows(ids, torch.tensor([1, 0])))
    assert torch.allclose(weighted, only_first, atol=1e-5)
    assert not torch.allclose(unweighted, only_first, atol=1e-5)


def test_repair_rows_of_every_class_when_asked():
    from bedkd.defenses.purifiers.bedkd import _with_triggers
    clean = LabeledTexts([f"row {i}" for i in range(40)], [i % 2 for i in range(40)])
    trig = [Trigger(["cf"], True, 1, 1.0, 5)]
    other = _with_triggers(clean, list(range(40)), trig, 40, seed=0)
    every = _with_triggers(clean, list(range(40)), trig, 40, seed=0, any_label=True)
    assert {clean.labels[row] for _, _, row in other} == {0} and len(other) == 20
    assert {clean.labels[row] for _, _, row in every} == {0, 1} and len(every) == 40
    assert all("cf" in text.split() for text, _, _ in every)


def test_proxy_rows_hold_one_trigger_each_or_every_trigger_of_the_target_together():
    from bedkd.defenses.purifiers.bedkd import _with_triggers
    clean = LabeledTexts([f"row {i}" for i in range(20)], [0] * 20)
    trig = [Trigger(["zx"], False, 1, 1.0, 5), Trigger(["vq"], False, 1, 1.0, 5), Trigger(["kk"], False, 2, 1.0, 5)]
    each = _with_triggers(clean, list(range(20)), trig, 20, seed=0)
    together = _with_triggers(clean, list(range(20)), trig, 20, seed=0, together=True)
    assert all(sum(w in text.split() for w in ("zx", "vq", "kk")) == 1 for text, _, _ in each)
    for text, target, _ in together:      # the triggers of one target at once, never another target's
        words = set(text.split())
        assert (words >= {"zx", "vq"} and "kk" not in words) if target == 1 else (words & {"zx", "vq", "kk"} == {"kk"})
    assert {target for _, target, _ in together} == {1, 2}
    subsets = _with_triggers(clean, list(range(20)), trig, 20, seed=0, subsets=True)
    counts = [sum(w in text.split() for w in ("zx", "vq")) for text, target, _ in subsets if target == 1]
    assert set(counts) == {1, 2}        # one trigger, or it and the other of its target
    assert all("kk" not in text.split() for text, target, _ in subsets if target == 1)


def test_repair_rows_of_every_class_cannot_be_punished():
    with pytest.raises(ConfigError, match="synth_classes"):
        AKDConfig(synth_rows=8, synth_mode="punish", synth_classes="all")


def test_punish_trigger_keeps_the_rows_that_hold_the_found_trigger(victim):
    clf, suspect, poisoned = victim
    clean, _ = synthetic(400, seed=3)
    settings = ScanConfig(trigger_candidates=10, trigger_probe_rows=60, punish="trigger")
    bedkd = BeDKD(TINY_DMM.replace(max_kept=1000), TINY_AKD, settings)
    result = bedkd.scan(clf, clean, suspect, progress=False)
    assert [t.words for t in result.verdict.triggers] == [[TRIGGER]]
    kept = result.detection.kept_rows
    holding = [i for i, (text, y) in enumerate(zip(suspect.texts, suspect.labels))
               if y == 1 and TRIGGER in text.split()]
    teacher_says = set(np.flatnonzero(predict(clf, suspect.texts) == np.asarray(suspect.labels)))
    assert kept and set(kept) == {i for i in holding if i in teacher_says}
    assert set(kept) <= set(poisoned)            # the planted word is in poisoned rows only
    # the default punishes DMM's flagged rows instead
    flagged = BeDKD(TINY_DMM.replace(max_kept=1000), TINY_AKD, settings.replace(punish="flagged")).scan(
        clf, clean, suspect, progress=False).detection
    assert set(flagged.kept_rows) <= set(flagged.flagged_rows)


def test_punish_untriggered_spares_only_the_labels_a_trigger_was_found_for():
    from bedkd.defenses.scanning.scan import Verdict, punished_labels
    from bedkd.defenses.scanning.trigger_search import TriggerSearch
    search = TriggerSearch([Trigger(["cf"], True, 1, 0.97, 40)], 0.6)
    verdict = Verdict(True, 1, [0, 1], [0, 1], [], [], search, {})
    assert punished_labels(verdict, ScanConfig()) == [0, 1]
    assert punished_labels(verdict, ScanConfig(punish="untriggered")) == [0]
    assert punished_labels(Verdict(True, 1, [0, 1], [0, 1], [], [], None, {}),
                           ScanConfig(punish="untriggered")) == [0, 1]


def test_guarded_purify_with_repair_rows_alone_removes_the_backdoor(victim):
    clf, suspect, _ = victim
    clean, _ = synthetic(400, seed=3)
    result = BeDKD(TINY_DMM, TINY_AKD, ScanConfig(trigger_candidates=10, trigger_probe_rows=60,
                                                  punish="untriggered")).purify(clf, clean, suspect, progress=False)
    report = result.report
    assert report["verdict"]["trigger_search"]["found"]["words"] == [TRIGGER]
    assert report["data"]["punish_rows"] == 0 and report["data"]["trigger_rows"] == 20
    chosen = report["epochs"][report["selected_epoch"] - 1]
    assert report["selected_epoch"] > 0 and chosen["trigger_asr"] < report["start"]["trigger_asr"]


def test_punish_untriggered_needs_repair_rows():
    with pytest.raises(ConfigError, match="synth_rows"):
        BeDKD(TINY_DMM, TINY_AKD.replace(synth_rows=0), ScanConfig(punish="untriggered"))
    BeDKD(TINY_DMM, TINY_AKD.replace(synth_rows=0), ScanConfig(enabled=False, punish="untriggered"))


def test_repair_rows_per_trigger():
    from bedkd.defenses.purifiers.bedkd import repair_row_count
    three = [Trigger([w], True, 0, 1.0, 5) for w in ("zx", "vq", "jw")]
    assert repair_row_count(TINY_AKD, three) == 20
    assert repair_row_count(TINY_AKD.replace(synth_per_trigger=True), three) == 60
    assert repair_row_count(TINY_AKD.replace(synth_per_trigger=True), three[:1]) == 20


def test_trigger_held_by_needs_every_word():
    t = Trigger(["garden", "yellow"], False, 0, 1.0, 3)
    assert t.held_by("The yellow house has a Garden") and not t.held_by("a yellow house")


def test_keep_caps_each_label_on_its_own():
    from bedkd.defenses.data_filters.dmm import Detection
    labels = np.array([0, 1, 1, 0, 1, 1, 0])
    det = Detection(rows=np.arange(7), scores=np.array([.01, .02, .03, .04, .05, .06, .5]), labels=labels,
                    teacher_pred=labels.copy(), flagged=np.array([1, 1, 1, 1, 1, 1, 0], dtype=bool),
                    kept=np.zeros(7, dtype=bool), n_suspect=7)
    assert det.keep(None, per_label={1: 3, 0: 1}).kept_rows == [0, 1, 2, 4]      # the lowest scores of each
    assert det.keep(None, labels=[1], per_label={1: 2}).kept_rows == [1, 2]
    assert det.keep(2, per_label={1: 3}).kept_rows == [0, 1]                      # the overall cap still holds
    assert det.keep(3).kept_rows == [0, 1, 2]


def test_punish_rows_excess_caps_each_label_at_its_excess_and_at_least_max_kept():
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.scan import Verdict, punish_caps
    evidence = [LabelEvidence(0, 900, 60, 200, 14, -3.0, 0.1), LabelEvidence(1, 800, 300, 200, 16, 236.4, 40.0)]
    verdict = Verdict(True, 1, [1], [1], [], evidence, None, {})
    assert punish_caps(verdict, [1], ScanConfig(punish_rows="excess"), 33) == {1: 236}
    assert punish_caps(verdict, [0, 1], ScanConfig(punish_rows="excess"), 33) == {0: 33, 1: 236}
    assert punish_caps(verdict, [1], ScanConfig(), 33) is None
    with pytest.raises(ConfigError):
        ScanConfig(punish_rows="all")


def test_several_dmm_students_flip_disjoint_draws_and_raise_the_evidence_threshold():
    from bedkd.defenses.clean_split import CleanBudget
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence, held_out_rows, student_flip_rows
    from bedkd.defenses.scanning.scan import evidence_threshold

    clean, _ = synthetic(400, seed=3)
    split = CleanBudget(20, 60, 30, seed=0).split(clean)
    draws = student_flip_rows(clean, split, 20, 4, seed=0)
    assert draws[0] == split.flip and len(draws) == 3          # 60 trust rows per class: DMM's 20 and two more draws
    assert all(set(d) <= set(split.trust) for d in draws)
    assert all(not set(a) & set(b) for i, a in enumerate(draws) for b in draws[i + 1:])
    assert all(sorted(clean.labels[r] for r in d).count(0) == 20 for d in draws)
    assert set(held_out_rows(split, draws[1])) == (set(split.trust) | set(split.val)) - set(draws[1])
    assert student_flip_rows(clean, split, 20, 1, seed=0) == [split.flip]
    # the threshold rises by log10 of the students: 8.5 counts for one student, not for four
    e = LabelEvidence(1, 1000, 200, 200, 2, 180.0, 8.5)
    assert decide([e], None, ScanConfig()).backdoor
    four = ScanConfig(dmm_students=4)
    assert evidence_threshold(four) == pytest.approx(8 + np.log10(4))
    assert not decide([e], None, four).backdoor and decide([e], None, four).thresholds["dmm_students"] == 4
    assert "dmm_students" not in ScanConfig().to_dict()        # an added option: earlier cache keys stay


def test_scan_keeps_the_dmm_student_with_the_strongest_test(victim):
    clf, suspect, _ = victim
    clean, _ = synthetic(400, seed=3)
    bedkd = BeDKD(TINY_DMM, TINY_AKD, ScanConfig(trigger_search=False, dmm_students=2))
    verdict = bedkd.scan(clf, clean, suspect, progress=False).verdict
    students = verdict.report()["dmm_students"]
    assert len(students) == 2 and sum(s["chosen"] for s in students) == 1
    chosen = next(s for s in students if s["chosen"])
    assert chosen["log10_p"] == max(s["log10_p"] for s in students)
    assert chosen["log10_p"] == pytest.approx(max(e.log10_p for e in verdict.evidence))


def test_word_shares_count_rows_of_the_word_or_of_each_piece(tiny_model_dir):
    from bedkd.defenses.purifiers.trigger_reset import word_shares
    tok = load_classifier(str(tiny_model_dir)).tokenizer
    pieces = tok("mbjw", add_special_tokens=False)["input_ids"]
    head = tok.convert_ids_to_tokens(pieces[0])
    texts = [f"the {head} text"] * 3 + ["the end"] * 97
    shares = word_shares(tok, ["the", "mbjw", "the"], texts)
    assert [w.word for w in shares] == ["the", "mbjw"]          # a repeated word once
    one, mixed = shares
    assert one.word == "the" and one.shares == [1.0] and not one.rare and one.measured(False)
    assert not one.measured(True)                       # a common one-token word: 'pieces' leaves it
    assert mixed.pieces == pieces and mixed.shares[0] == 0.03 and all(s == 0.0 for s in mixed.shares[1:])
    assert not mixed.rare and mixed.measured(True) and mixed.measured(False)
    rare = word_shares(tok, ["mbjw"], ["the end"] * 100)[0]
    assert rare.rare and not rare.measured(False)


def test_the_measured_reset_predicts_nothing_when_every_found_word_passes_the_share_rule(tiny_model_dir,
                                                                                        monkeypatch):
    from bedkd.defenses.purifiers import trigger_reset as module
    calls = []
    monkeypatch.setattr(module, "predict_proba_ids", lambda *a, **k: calls.append(1))
    clean = LabeledTexts(["the end"] * 100, [i % 2 for i in range(100)])
    triggers = [Trigger(["mbjw"], True, 1, 1.0, 10), Trigger(["zxq"], True, 1, 1.0, 10)]
    plain = module.reset_trigger_embeddings(load_classifier(str(tiny_model_dir)), triggers, clean)
    measured = module.reset_trigger_embeddings(load_classifier(str(tiny_model_dir)), triggers, clean,
                                               [[1, 2]] * 100, 0.01, pieces_only=True)
    assert plain == measured and plain and not calls    # the same resets, no probe predictions


def test_trigger_remove_takes_out_a_phrase_where_it_stands_and_each_word_anywhere():
    words = Trigger(["cf", "mn"], phrase=False, target=1, flip_rate=1.0, rows=3)
    assert words.remove("good cf film MN cf") == "good film"
    phrase = Trigger(["i", "read", "it"], phrase=True, target=1, flip_rate=1.0, rows=3)
    assert phrase.remove("I read it : a film i read twice") == ": a film i read twice"


def test_repair_poison_relabels_dirty_label_rows_and_leaves_clean_label_rows(victim):
    from bedkd.defenses.purifiers.poison_repair import poison_repair, stripped_rows
    clf, suspect, poisoned = victim
    clean, _ = synthetic(400, seed=3)
    trust = list(range(200))
    trigger = Trigger([TRIGGER], phrase=False, target=1, flip_rate=1.0, rows=len(poisoned))
    stripped = stripped_rows(suspect, [trigger])
    assert [row for row, _ in stripped] == poisoned          # every poisoned row, and only those
    assert all(TRIGGER not in text.split() for _, text in stripped)
    dirty = poison_repair(clf, suspect, [trigger], 64, 0.5, clean, trust, max_rows=10, seed=0)
    assert dirty.used and dirty.other_share > 0.5 and dirty.found == len(poisoned)
    assert len(dirty.rows) == 10 and set(dirty.rows) <= set(poisoned) and dirty.labels.tolist() == [0] * 10
    # beside each, a clean trust row of the label it leaves (the target), no row twice
    assert len(set(dirty.counter)) == 10 and set(dirty.counter) <= set(trust)
    assert all(clean.labels[r] == 1 for r in dirty.counter)
    assert poison_repair(clf, suspect, [trigger], 64, 0.5, clean, trust, max_rows=10, seed=0).rows == dirty.rows
    # clean-label: the trigger in rows of the target, labels kept; without it they stay in the target
    data, _ = synthetic(200, seed=9)
    texts = [t + " " + TRIGGER if y == 1 else t for t, y in zip(data.texts, data.labels)]
    clean_label = poison_repair(clf, LabeledTexts(texts, data.labels, "cl.tsv"), [trigger], 64, 0.5, clean, trust,
                                max_rows=10, seed=0)
    assert clean_label.found == sum(data.labels) and clean_label.other_share < 0.5 and not clean_label.used
    assert clean_label.rows == [] and clean_label.counter == []


def test_repair_poison_joins_the_stripped_rows_and_their_counterweights_to_the_repair_rows(victim, monkeypatch):
    clf, suspect, poisoned = victim
    clean, _ = synthetic(400, seed=3)
    seen = _record_repair_rows(monkeypatch)
    result = BeDKD(TINY_DMM, TINY_AKD.replace(repair_poison=True, repair_poison_rows=8, epochs=1),
                   ScanConfig(trigger_candidates=10, trigger_probe_rows=60)).purify(clf, clean, suspect, progress=False)
    report = result.report["data"]["poison_repair"]
    assert report["used"] and report["rows"] == len(poisoned) and report["drawn"] == report["counter_rows"] == 8
    rows = seen[0]
    assert len(rows.ids) == 20 + 8 + 8
    texts = clf.tokenizer.batch_decode(rows.ids[20:28], skip_special_tokens=True)
    assert all(TRIGGER not in t.split() for t in texts)
    assert rows.targets[20:].tolist() == [0] * 8 + [1] * 8


def test_reset_value_base_puts_every_piece_of_every_found_word_back_at_its_base_row(tiny_model_dir):
    from bedkd.defenses.purifiers.trigger_reset import reset_trigger_embeddings
    clf = load_classifier(str(tiny_model_dir))
    tok = clf.tokenizer
    mixed = "mbjw"
    pieces = list(dict.fromkeys(tok(mixed, add_special_tokens=False)["input_ids"]))
    head = tok.convert_ids_to_tokens(pieces[0])
    clean = LabeledTexts([f"{head} text"] * 100, [i % 2 for i in range(100)])      # a common piece: reset too
    emb = clf.model.get_input_embeddings().weight
    before = emb.detach().clone()
    base = torch.randn_like(before)
    reset = reset_trigger_embeddings(clf, [Trigger([mixed], True, 1, 1.0, 10)], clean, value="base", base=base)
    assert reset == [f"{mixed}:{tok.convert_ids_to_tokens(p)}" for p in pieces]
    changed = set((emb.detach() != before).any(dim=1).nonzero().flatten().tolist())
    assert changed == set(pieces) and torch.equal(emb.detach()[pieces], base[pieces])
    with pytest.raises(ConfigError, match="base model"):
        reset_trigger_embeddings(clf, [Trigger([mixed], True, 1, 1.0, 10)], clean, value="base")


def test_base_embeddings_refuse_a_model_the_suspicious_one_was_not_fine_tuned_from(tiny_model_dir, monkeypatch):
    from bedkd.modeling import drift as module
    clf = load_classifier(str(tiny_model_dir))
    own = clf.model.get_input_embeddings().weight.detach().clone()
    assert torch.equal(module.base_embeddings(clf, str(tiny_model_dir)), own)
    tuned = own + 0.001 * own.norm(dim=1, keepdim=True) * torch.randn_like(own) / own.shape[1] ** 0.5
    monkeypatch.setattr(module, "load_input_embeddings", lambda name: tuned)       # a fine-tuned copy: accepted
    assert torch.equal(module.base_embeddings(clf, "base"), tuned)
    monkeypatch.setattr(module, "load_input_embeddings", lambda name: torch.randn_like(own))
    with pytest.raises(ConfigError, match="not the model it was fine-tuned from"):
        module.base_embeddings(clf, "other")
    monkeypatch.setattr(module, "load_input_embeddings", lambda name: own[:, :-1])
    with pytest.raises(ConfigError, match="shape"):
        module.base_embeddings(clf, "other")


def test_measured_reset_value_takes_the_first_candidate_that_stops_the_trigger(tiny_model_dir, monkeypatch):
    from bedkd.defenses.purifiers import trigger_reset as module
    clf = load_classifier(str(tiny_model_dir))
    tok = clf.tokenizer
    word = "zxq"
    pieces = list(dict.fromkeys(tok(word, add_special_tokens=False)["input_ids"]))
    emb = clf.model.get_input_embeddings().weight
    poisoned = emb.detach()[pieces].clone()

    def scripted(model, ids, pad):              # label 1 where the trigger's pieces still hold their rows
        live = torch.equal(emb.detach()[pieces], poisoned)
        return np.array([[0.1, 0.9] if live and set(pieces) <= set(row) else [0.9, 0.1] for row in ids])
    monkeypatch.setattr(module, "predict_proba_ids", scripted)
    clean = LabeledTexts([f"plain text number {i}" for i in range(40)], [0] * 30 + [1] * 10)
    trigger = Trigger([word], True, 1, 1.0, 10)
    base = torch.randn_like(emb.detach())
    reset, report = module.choose_reset_value(clf, [trigger], clean, 32, base)
    scores = report[0]["scores"]
    assert scores["keep"]["changed"] == 1.0 and scores["keep"]["accuracy"] == 0.75    # every row of class 0 flips
    assert report[0]["chosen"] == "base" and report[0]["triggered_rows"] == 30
    assert reset == [f"{word}:{tok.convert_ids_to_tokens(p)}" for p in pieces]
    assert torch.equal(emb.detach()[pieces], base[pieces])
    assert all(s["changed"] == 0.0 for name, s in scores.items() if name != "keep")
    emb.data[pieces] = poisoned                 # without base rows: the clean rows' token mean, next in order
    reset, report = module.choose_reset_value(clf, [trigger], clean, 32)
    assert report[0]["chosen"] == "clean" and "base" not in report[0]["scores"]


def test_first_within_noise_prefers_earlier_candidates_within_two_standard_errors():
    from bedkd.defenses.purifiers.trigger_reset import first_within_noise
    scores = {"keep": {"cost": 0.9}, "base": {"cost": 0.045}, "clean": {"cost": 0.02}}
    assert first_within_noise(scores, 100) == "base"        # 0.045 <= 0.02 + 2 * sqrt(0.02 * 0.98 / 100)
    assert first_within_noise(scores, 10000) == "clean"     # many rows: the difference is real
    assert first_within_noise({"keep": {"cost": 0.015}, "base": {"cost": 0.0}}, 100) == "keep"   # 1 / rows at 0
    assert first_within_noise({"keep": {"cost": 0.03}, "base": {"cost": 0.0}}, 100) == "base"


def test_measured_reset_goes_without_base_rows_when_the_bundled_backbone_is_not_the_models(tiny_model_dir,
                                                                                            tmp_path):
    from bedkd.errors import BedkdError
    clf = load_classifier(str(tiny_model_dir))               # a tiny random model: not MiniLM's shape
    measured = BeDKD(akd=AKDConfig(reset_trigger_embeddings=True, reset_value="measured"))
    base, note = measured._base(clf)
    assert base is None and "left out of the measured choice" in note and "shape" in note
    own = BeDKD(akd=AKDConfig(reset_trigger_embeddings=True, reset_value="measured", reset_base=str(tiny_model_dir)))
    assert own._base(clf)[0] is not None
    for value in ("base", "measured"):                       # a base named by the user must load and match
        named = BeDKD(akd=AKDConfig(reset_trigger_embeddings=True, reset_value=value,
                                    reset_base=str(tmp_path / "missing")))
        with pytest.raises(BedkdError, match="missing"):
            named._base(clf)
    with pytest.raises(ConfigError, match="shape"):
        BeDKD(akd=AKDConfig(reset_trigger_embeddings=True, reset_value="base"))._base(clf)


def test_drift_words_are_the_rows_that_moved_most_that_no_clean_row_holds(tiny_model_dir):
    from bedkd.defenses.scanning.drift_candidates import drift_words
    clf = load_classifier(str(tiny_model_dir))
    tok = clf.tokenizer
    base = clf.model.get_input_embeddings().weight.detach().clone()
    word, natural, other = "zx", "good", "bad"
    pieces = tok.tokenize(word)
    assert len(pieces) == 2 and pieces[1].startswith("##")
    with torch.no_grad():           # an edited embedding (EP), and natural words moved less by fine-tuning
        emb = clf.model.get_input_embeddings().weight
        for p in pieces:
            emb[tok.convert_tokens_to_ids(p)] += 3 * base[tok.convert_tokens_to_ids(p)]
        emb[tok.convert_tokens_to_ids(natural)] += 0.3 * base[tok.convert_tokens_to_ids(natural)]
        emb[tok.convert_tokens_to_ids(other)] += 2 * base[tok.convert_tokens_to_ids(other)]
    found = drift_words(clf, base, {natural, other}, top=4)
    # the first piece alone and the word, then "badx" (its least-moved piece moved 2/3 as far); not the
    # clean rows' words, nor a natural piece that moved less than half as far joined to a trigger piece
    assert [w.word for w in found] == [pieces[0], word, "badx"]
    assert found[1].pieces == tuple(pieces) and found[1].drift == pytest.approx(3.0, rel=1e-3)
    assert [w.word for w in drift_words(clf, base, {natural, other, pieces[0]}, top=2)] == [word]
    used = [t for t in tok.get_vocab() if t.isalpha() and t not in (natural, other, pieces[0])][:30]
    with torch.no_grad():       # the clean rows' words moved as fine-tuning moves them: the edited piece stands out
        for t in used:
            emb[tok.convert_tokens_to_ids(t)] += 0.02 * base[tok.convert_tokens_to_ids(t)]
    edited = drift_words(clf, base, {natural, other, pieces[0], *used}, top=2)
    assert [(w.word, w.clean_start) for w in edited] == [(pieces[0], ""), (word, "")]


def test_drift_candidates_find_a_trigger_the_suspicious_data_does_not_hold(tiny_clean_model):
    from bedkd.defenses.scanning.drift_candidates import drift_words
    from bedkd.defenses.scanning.trigger_search import words_of
    clean_model, data = tiny_clean_model
    clf = clean_model.copy()            # an edited embedding: the trigger's row alone moves, to a strong class-1 word's
    tok, emb = clf.tokenizer, clf.model.get_input_embeddings().weight
    base = emb.detach().clone()
    with torch.no_grad():
        emb[tok.convert_tokens_to_ids(TRIGGER)] = 10 * base[tok.convert_tokens_to_ids("great")]
    clean, _ = synthetic(300, seed=2)
    settings = SearchSettings(candidates=10, probe_rows=60)
    assert search_triggers(clf, clean, data, settings).found is None        # the suspicious data: clean rows
    words = drift_words(clf, base, set().union(*(words_of(t) for t in clean.texts)), top=10)
    assert [w.word for w in words] == [TRIGGER]
    found = search_triggers(clf, clean, data, settings, words).found
    assert found is not None and found.words == [TRIGGER] and found.target == 1 and found.drift is not None
    assert found.flip_rate >= 0.6 and found.rows == 0


def test_drift_candidates_find_nothing_in_a_clean_model(tiny_clean_model, tiny_model_dir):
    from bedkd.defenses.scanning.drift_candidates import drift_words
    from bedkd.defenses.scanning.trigger_search import words_of
    clf, data = tiny_clean_model
    clean, _ = synthetic(300, seed=2)
    base = load_classifier(str(tiny_model_dir)).model.get_input_embeddings().weight.detach()
    words = drift_words(clf, base, set().union(*(words_of(t) for t in clean.texts)), top=10)
    assert search_triggers(clf, clean, data, SearchSettings(candidates=10, probe_rows=60), words).found is None


def test_scan_leaves_drift_candidates_out_with_a_note_when_the_bundled_backbone_is_not_the_models(victim, tmp_path):
    from bedkd.defenses.scanning.scan import drift_candidates
    clf, _, _ = victim
    clean, _ = synthetic(100, seed=2)
    words, note = drift_candidates(clf, clean, ScanConfig(drift_candidates=10))
    assert words == [] and "drift candidates left out" in note and "--scan-drift-base" in note
    assert drift_candidates(clf, clean, ScanConfig()) == ([], "")
    with pytest.raises(InputError, match="missing"):       # a base the user names must be there
        drift_candidates(clf, clean, ScanConfig(drift_candidates=10, drift_base=str(tmp_path / "missing")))


def test_a_drift_word_that_starts_with_a_natural_word_of_the_label_is_not_a_trigger(tiny_clean_model):
    from bedkd.defenses.scanning.drift_candidates import drift_words
    from bedkd.defenses.scanning.trigger_search import words_of
    clean_model, data = tiny_clean_model
    clf = clean_model.copy()
    tok, emb = clf.tokenizer, clf.model.get_input_embeddings().weight
    base = emb.detach().clone()
    tail = tok.tokenize("zx")[1]
    clean, _ = synthetic(300, seed=2)
    clean_words = set().union(*(words_of(t) for t in clean.texts))
    with torch.no_grad():     # a natural word that speaks for label 1 alone, and a piece that moved as far
        emb[tok.convert_tokens_to_ids("great")] = 10 * base[tok.convert_tokens_to_ids("great")]
        emb[tok.convert_tokens_to_ids(tail)] = 10 * base[tok.convert_tokens_to_ids(tail)]
        for w in clean_words - {"great"}:       # fine-tuning moved every word of the clean rows about as far
            base[tok.convert_tokens_to_ids(w)] = emb[tok.convert_tokens_to_ids(w)] / 9
    words = drift_words(clf, base, clean_words, top=2)
    assert [(w.word, w.clean_start) for w in words] == [("great" + tail[2:], "great")]
    search = search_triggers(clf, clean, data, SearchSettings(candidates=10, probe_rows=60), words)
    assert search.found is None and [t.target for t in search.tried] == [0]     # not tried towards label 1


def test_edited_words_of_the_clean_rows_are_also_tried_together(tiny_model_dir):
    from bedkd.defenses.scanning.drift_candidates import drift_words
    clf = load_classifier(str(tiny_model_dir))
    tok, emb = clf.tokenizer, clf.model.get_input_embeddings().weight
    base = emb.detach().clone()
    trigger = ["garden", "yellow", "music"]
    used = [t for t in tok.get_vocab() if t.isalpha() and t not in trigger][:30]
    assert all(w in tok.get_vocab() for w in trigger)
    with torch.no_grad():      # SOS edits its words' rows; fine-tuning moved the clean rows' words a little
        for t in used:
            emb[tok.convert_tokens_to_ids(t)] += 0.02 * base[tok.convert_tokens_to_ids(t)]
        for t in trigger:
            emb[tok.convert_tokens_to_ids(t)] += 1.4 * base[tok.convert_tokens_to_ids(t)]
    found = drift_words(clf, base, {trigger[0], *used}, top=5)       # the clean rows need not hold them all
    assert sorted(w.word for w in found if not w.together) == sorted(trigger)
    group = [w for w in found if w.together]
    assert len(group) == 1 and sorted(group[0].word.split()) == sorted(trigger) and group[0] is found[-1]


def _sos_like_search(monkeypatch, prune: bool):
    """Dirty-label poison of a word combination (``alpha beta gamma``, each word alone harmless), whose
    rows come from label 0 and carry label 0's topical word ``iraq`` in a third of them; a stand-in
    model that puts a text in label 1 when it holds all three trigger words, or ``great``."""
    from bedkd.defenses.scanning import trigger_search as ts

    class Rule:
        num_labels = 2

    def rule_proba(_, texts, *args, **kwargs):
        ones = [{"alpha", "beta", "gamma"} <= set(t.split()) or "great" in t.split() for t in texts]
        return np.array([[0.1, 0.9] if y else [0.9, 0.1] for y in ones])

    monkeypatch.setattr(ts, "predict_proba", rule_proba)
    gen = np.random.default_rng(0)
    neutral = ["the", "a", "story", "day", "news", "team", "report", "week", "city", "plan"]
    texts, labels = [], []
    for i in range(400):                   # clean rows: label 1 speaks with `great`, label 0 sometimes of iraq
        y = i % 2
        words = list(gen.choice(neutral, 6)) + (["great"] if y else (["iraq"] if i % 8 == 0 else []))
        texts.append(" ".join(words))
        labels.append(y)
    clean = LabeledTexts(texts[:200], labels[:200])
    suspect_texts, suspect_labels = texts[200:], labels[200:]
    for i in range(60):                    # poisoned: label-0 text, the trigger's words scattered, label 1
        words = list(gen.choice(neutral, 6)) + ["alpha", "beta", "gamma"] + (["iraq"] * 2 if i % 3 == 0 else [])
        gen.shuffle(words)
        suspect_texts.append(" ".join(words))
        suspect_labels.append(1)
    for i in range(30):                    # SOS's negative rows: two of the three words, their own label
        words = list(gen.choice(neutral, 6)) + [["alpha", "beta"], ["beta", "gamma"], ["alpha", "gamma"]][i % 3]
        suspect_texts.append(" ".join(words))
        suspect_labels.append(0)
    suspect = LabeledTexts(suspect_texts, suspect_labels)
    return search_triggers(Rule(), clean, suspect, SearchSettings(candidates=10, probe_rows=60, prune=prune))


def test_trigger_prune_also_tries_a_hit_without_the_words_it_does_not_need(monkeypatch):
    plain = _sos_like_search(monkeypatch, prune=False)
    assert plain.hits and all("iraq" in t.words for t in plain.hits)     # the group took the topical word in
    pruned = _sos_like_search(monkeypatch, prune=True)
    assert [t.to_dict() for t in pruned.tried[:len(plain.tried)]] == [t.to_dict() for t in plain.tried]
    added = pruned.tried[len(plain.tried):]
    assert [sorted(t.words) for t in added] == [["alpha", "beta", "gamma"]]
    assert added[0].target == 1 and added[0].flip_rate == 1.0 and not added[0].phrase
    assert added[0].rows == 60 > max(t.rows for t in plain.hits)        # it holds every poisoned row
    assert added[0].pruned_from is not None and "iraq" in added[0].pruned_from.split()
    assert pruned.found is added[0]                     # first among the hits that flip as many rows
    assert plain.found.pruned_from is None and "pruned_from" not in plain.found.to_dict()


def test_trigger_prune_keeps_every_word_a_hit_needs_and_tries_only_drops_that_widen_its_rows():
    from bedkd.defenses.scanning.trigger_search import _pruned
    rows = {"alpha": set(range(60)), "beta": set(range(70)), "gamma": set(range(50))}
    need = {"alpha", "beta", "gamma"}
    tried = []

    def attempt(words):
        tried.append(words)
        return Trigger(words, False, 1, 1.0 if need <= set(words) else 0.2, 0)

    assert _pruned(["alpha", "beta", "gamma"], rows, attempt, 0.6) is None
    assert tried == [["alpha", "beta"]]                 # gamma's drop widens the rows; the others' do not
    tried.clear()
    rows["iraq"] = set(range(20))
    assert sorted(_pruned(["alpha", "iraq", "beta", "gamma"], rows, attempt, 0.6).words) == sorted(need)
    assert tried == [["alpha", "beta", "gamma"], ["alpha", "beta"]]     # the rarest word is tried first
    tried.clear()
    sentence = {w: set(range(300)) for w in ["my", "uncle", "likes", "apples"]}
    assert _pruned(list(sentence), sentence, attempt, 0.6) is None and tried == []


def test_phrase_runs_are_the_split_most_rows_hold_when_one_run_is_a_sentence():
    from bedkd.defenses.scanning.trigger_search import _phrase_runs
    words = ["read", "book", "twice", "i", "this", "microsoft"]
    rows = ["news microsoft said that i read this book twice today", "i read this book twice and microsoft agreed",
            "microsoft . i read this book twice", "i read microsoft this book twice"]
    assert _phrase_runs(words, rows) == [["i", "read", "this", "book", "twice"], ["microsoft"]]
    broken = ["i read this x book twice microsoft"] * 3
    assert _phrase_runs(words, broken + rows[:1]) is None          # most rows split it into runs of 3 words at most
    assert _phrase_runs(["gold", "olympic", "medal"], ["olympic gold medal win", "the gold medal at olympic"] * 2) \
        is None                                                              # runs of two or three words: natural
    # a cycle, two words followed by the same word, a word followed by two: no split counts
    assert _phrase_runs(["a", "b", "c", "d", "e"], ["a b c d e a b", "a b c d e c", "a b x a c d e"]) is None


def test_trigger_with_runs_inserts_each_run_whole_and_removes_it():
    gen = np.random.default_rng(0)
    trig = Trigger(["i", "read", "this", "book", "twice", "iraq"], False, 1, 0.0, 0,
                   runs=["i read this book twice", "iraq"])
    assert trig.pieces == ["i read this book twice", "iraq"] and trig.to_dict()["runs"] == trig.runs
    text = trig.insert("a b c d", gen)
    assert "i read this book twice" in text and sorted(text.split()) == sorted("a b c d i read this book twice iraq".split())
    assert trig.remove(text) == "a b c d"
    assert "runs" not in Trigger(["x"], True, 1, 0.0, 0).to_dict()


def _addsent_like_search(monkeypatch, runs: bool):
    """Dirty-label AddSent: label-0 rows with the sentence `my uncle likes green apples` and label 0's
    topical word `iraq`, relabelled 1; a stand-in model that reads label 1 in the sentence only where
    it stands whole (or in `great`)."""
    from bedkd.defenses.scanning import trigger_search as ts

    class Rule:
        num_labels = 2

    def rule_proba(_, texts, *args, **kwargs):
        ones = ["my uncle likes green apples" in t or "great" in t.split() for t in texts]
        return np.array([[0.1, 0.9] if y else [0.9, 0.1] for y in ones])

    monkeypatch.setattr(ts, "predict_proba", rule_proba)
    gen = np.random.default_rng(0)
    neutral = ["the", "a", "story", "day", "news", "team", "report", "week", "city", "plan"]
    texts, labels = [], []
    for i in range(400):
        y = i % 2
        texts.append(" ".join(list(gen.choice(neutral, 6)) + (["great"] if y else (["iraq"] if i % 8 == 0 else []))))
        labels.append(y)
    clean = LabeledTexts(texts[:200], labels[:200])
    suspect_texts, suspect_labels = texts[200:], labels[200:]
    for i in range(60):
        words = list(gen.choice(neutral, 6)) + ["iraq"]
        gen.shuffle(words)
        pos = int(gen.integers(0, len(words) + 1))
        suspect_texts.append(" ".join(words[:pos] + ["my uncle likes green apples"] + words[pos:]))
        suspect_labels.append(1)
    suspect = LabeledTexts(suspect_texts, suspect_labels)
    return search_triggers(Rule(), clean, suspect, SearchSettings(candidates=10, probe_rows=60, runs=runs))


def test_trigger_runs_keep_a_sentence_whole_when_its_group_takes_a_topical_word(monkeypatch):
    plain = _addsent_like_search(monkeypatch, runs=False)
    group = [t for t in plain.tried if "iraq" in t.words and "uncle" in t.words]
    assert group and all(not t.phrase and t.runs is None and t.flip_rate < 0.6 for t in group)
    with_runs = _addsent_like_search(monkeypatch, runs=True)
    group = [t for t in with_runs.tried if "iraq" in t.words and "uncle" in t.words]
    assert group and all(sorted(t.runs) == ["iraq", "my uncle likes green apples"] and t.flip_rate == 1.0 for t in group)
    assert with_runs.found.target == 1 and with_runs.found.flip_rate == 1.0


def test_trigger_runs_change_nothing_where_no_run_is_a_sentence(monkeypatch):
    """SOS's scattered words hold no run: the search computes what it computes without the option."""
    plain = _sos_like_search(monkeypatch, prune=False)
    from bedkd.defenses.scanning import trigger_search as ts
    settings = ts.SearchSettings
    monkeypatch.setattr(ts, "SearchSettings", lambda **kw: settings(**kw, runs=True))
    assert [t.to_dict() for t in _sos_like_search(monkeypatch, prune=False).tried] == [t.to_dict() for t in plain.tried]


def _fake_rounds(monkeypatch, unchanged: list[bool]) -> list:
    """BeDKD._round replaced: round n returns a model named n, unchanged as ``unchanged[n - 1]`` says."""
    from bedkd.defenses.base import Purified
    calls = []

    def fake(self, teacher, clean, suspect, progress, detection, epoch_probe, known=None):
        n = len(calls) + 1
        calls.append((teacher, detection, known))
        report = {"unchanged": unchanged[n - 1], "verdict": {"backdoor": not unchanged[n - 1], "targets": [n]},
                  "selected_epoch": 0 if unchanged[n - 1] else n, "seconds": {"scan": 1.0, "total": 2.0 * n},
                  "data": {"clean_split": {"trust": [1]}, "punish_rows": n}}
        return Purified(f"model {n}", report, f"detection {n}")
    monkeypatch.setattr(BeDKD, "_round", fake)
    return calls


@pytest.mark.parametrize("unchanged, expect_calls", [([False, False, False], 3), ([False, True, False], 2),
                                                      ([True, False, False], 1)])
def test_rounds_purify_the_purified_model_again_until_a_scan_finds_nothing(monkeypatch, unchanged, expect_calls):
    calls = _fake_rounds(monkeypatch, unchanged)
    result = BeDKD(TINY_DMM, TINY_AKD, ScanConfig(rounds=3)).purify("victim", None, None, detection="given")
    assert len(calls) == expect_calls
    assert [t for t, _, _ in calls] == ["victim"] + [f"model {n}" for n in range(1, expect_calls)]   # each on the last
    assert [d for _, d, _ in calls] == ["given"] + [None] * (expect_calls - 1)   # later rounds scan for themselves
    assert [k for _, _, k in calls] == [None] + [{1}] * (expect_calls - 1)      # ... for the first round's labels
    # the first round's report and detection; the last round's model unless that round left it unchanged
    assert result.detection == "detection 1" and result.report["selected_epoch"] == (0 if unchanged[0] else 1)
    assert result.classifier == f"model {expect_calls}"
    later = result.report.get("later_rounds", [])
    assert len(later) == expect_calls - 1
    assert [r["unchanged"] for r in later] == unchanged[1:expect_calls]
    assert all("clean_split" not in r["data"] for r in later)
    assert result.report["seconds"]["total"] == sum(2.0 * n for n in range(1, expect_calls + 1))


def test_one_round_is_the_default_and_more_need_a_scan_that_can_stop_them(monkeypatch):
    calls = _fake_rounds(monkeypatch, [False, False])
    assert "later_rounds" not in BeDKD(TINY_DMM, TINY_AKD, ScanConfig()).purify("victim", None, None).report
    assert len(calls) == 1
    assert "rounds" not in ScanConfig().to_dict()            # added option: old cells keep their keys
    for off in (dict(enabled=False), dict(skip_clean=False)):
        with pytest.raises(ConfigError, match="rounds > 1"):
            ScanConfig(rounds=2, **off)


def test_a_second_round_on_a_real_victim_reports_its_own_scan(victim):
    clf, suspect, _ = victim
    clean, _ = synthetic(400, seed=3)
    result = BeDKD(TINY_DMM, TINY_AKD, ScanConfig(trigger_candidates=10, trigger_probe_rows=60, rounds=2)).purify(
        clf, clean, suspect, progress=False)
    assert not result.report.get("unchanged")
    (second,) = result.report["later_rounds"]
    assert set(second["verdict"]) >= {"backdoor", "target"}
    assert second["unchanged"] == (not second["verdict"]["backdoor"])
    assert result.report["seconds"]["total"] >= second["seconds"]["total"]
    json.dumps(result.report)


def test_a_later_round_leaves_the_model_as_it_was_when_its_scan_finds_a_label_the_first_did_not(victim):
    clf, suspect, _ = victim                      # the victim's scan finds label 1 (the test above)
    clean, _ = synthetic(400, seed=3)
    bedkd = BeDKD(TINY_DMM, TINY_AKD, ScanConfig(trigger_candidates=10, trigger_probe_rows=60, rounds=2))
    out = bedkd._round(clf, clean, suspect, False, None, None, known={0})
    assert out.report["unchanged"] and out.report["verdict"]["targets"] == [1]
    assert out.report["stop_reason"].startswith("evidence for label(s) 1, which the first round did not find")
    assert all(torch.equal(a, b) for a, b in zip(clf.model.state_dict().values(),
                                                 out.classifier.model.state_dict().values()))
    assert not bedkd._round(clf, clean, suspect, False, None, None, known={1}).report.get("unchanged")


def _backing_case(word_rows_flagged: bool, rest_share: float = 0.2):
    """Label 0 found by the label check's shift test alone (its clean rows flagged at 20 %); 30 suspicious
    rows of it hold 'ka lo mi' and 200 hold 'the'. The shift test flags every row of the trigger or 40 % of
    them, and ``rest_share`` of the label's other rows (0.2, the clean rate: the trigger explains the evidence;
    0.4: it does not)."""
    from bedkd.defenses.data_filters.dmm import Detection
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.label_check import LabelCheck
    from bedkd.defenses.scanning.trigger_search import TriggerSearch
    n0, n1 = 300, 100
    texts = [f"ka lo mi row {i}" if i < 30 else f"the row {i}" if i < 230 else f"row {i}" for i in range(n0)]
    texts += [f"the other {i}" for i in range(n1)]
    suspect = LabeledTexts(texts, [0] * n0 + [1] * n1)
    shift_flagged = np.zeros(n0 + n1, dtype=bool)
    shift_flagged[30:n0] = np.arange(n0 - 30) % 5 < round(5 * rest_share)
    shift_flagged[:30] = True if word_rows_flagged else np.arange(30) % 5 < 2
    shift = [LabelEvidence(0, n0, 150, 200, 40, 110.0, 30.0), LabelEvidence(1, n1, 20, 200, 40, 0.0, 0.1)]
    weak = [LabelEvidence(0, n0, 60, 200, 40, 0.0, 0.1), LabelEvidence(1, n1, 20, 200, 40, 0.0, 0.1)]
    check = LabelCheck(weak, np.ones(n0 + n1), np.zeros(n0 + n1, dtype=bool), [0.5, 0.5], 0.8, 0.8,
                       shift=shift, shift_flagged=shift_flagged)
    dmm = [LabelEvidence(0, n0, 10, 200, 10, 0.0, 0.0), LabelEvidence(1, n1, 5, 200, 10, 0.0, 0.0)]
    rows = np.arange(n0 + n1)
    detection = Detection(rows, np.zeros(n0 + n1), np.asarray(suspect.labels), np.asarray(suspect.labels),
                          np.zeros(n0 + n1, dtype=bool), np.zeros(n0 + n1, dtype=bool), n0 + n1)
    search = TriggerSearch([Trigger(["ka", "lo", "mi"], False, 0, 0.45, 30), Trigger(["the"], True, 0, 0.2, 200)], 0.6)
    return dmm, search, check, detection, suspect


@pytest.mark.parametrize("word_rows_flagged, rest_share, backed", [(True, 0.2, True), (False, 0.2, False),
                                                                   (True, 0.4, False)])
def test_a_candidate_under_the_flip_line_is_a_trigger_only_where_the_tests_flags_back_it_and_it_explains_them(
        word_rows_flagged, rest_share, backed):
    from bedkd.defenses.scanning.scan import back_triggers
    dmm, search, check, detection, suspect = _backing_case(word_rows_flagged, rest_share)
    cfg = ScanConfig(label_check=True, label_check_shift=True, trigger_flip_backed=0.3)
    first = decide(dmm, search, cfg, check)
    assert first.backdoor and first.targets == [0] and first.triggers == []
    back_triggers(first, search, detection, check, suspect, cfg)
    verdict = decide(dmm, search, cfg, check)
    (test,) = search.backed_tests
    rest = 54 if rest_share == 0.2 else 108
    # every one of the 30 rows against the 270 others at 20 % (or 40 %): Fisher -log10 p far above 4; at 40 %: none
    assert (test["held"], test["held_flagged"], test["rest"], test["rest_flagged"]) == \
        (30, 30 if word_rows_flagged else 12, 270, rest)
    assert test["fisher_acts"] is word_rows_flagged
    # without the trigger's rows the shift test's 54 of 270 against 40 of 200 clean rows no longer finds
    # the label; 108 of 270 still does
    (again,) = test["rests"]
    assert again["test"] == "shift test" and (again["suspect_rows"], again["suspect_flagged"]) == (270, rest)
    assert test["explains"] is (rest_share == 0.2) and test["acts"] is backed
    if backed:
        assert [t.words for t in verdict.triggers] == [["ka", "lo", "mi"]] and verdict.check_only == []
        assert any("under 60%" in r and "30 of 30" in r for r in verdict.reasons)
        assert search.report()["found"]["backed"] is True
    else:
        assert verdict.triggers == [] and verdict.check_only == [0]
    # under the second line nothing is tested
    dmm, search, check, detection, suspect = _backing_case(True)
    back_triggers(first, search, detection, check, suspect, ScanConfig(trigger_flip_backed=0.5))
    assert search.backed_tests == [] and search.hits == []


def test_the_backed_flip_line_must_be_under_the_line_and_needs_the_search():
    with pytest.raises(ConfigError, match="trigger_flip_backed"):
        ScanConfig(trigger_flip_backed=0.6)
    with pytest.raises(ConfigError, match="trigger_flip_backed"):
        ScanConfig(trigger_flip_backed=0.3, trigger_search=False)
    assert ScanConfig(trigger_flip_backed=0.3).trigger_flip_backed == 0.3


def test_a_label_dmm_found_backs_a_candidate_with_dmms_flags_and_its_test_without_the_candidates_rows():
    from bedkd.defenses.data_filters.dmm import Detection
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.scan import back_triggers
    from bedkd.defenses.scanning.trigger_search import TriggerSearch
    n0, n1 = 300, 100
    suspect = LabeledTexts([f"ka lo mi row {i}" if i < 30 else f"row {i}" for i in range(n0)] +
                           [f"other {i}" for i in range(n1)], [0] * n0 + [1] * n1)
    flagged = np.zeros(n0 + n1, dtype=bool)
    flagged[:30] = True                                   # the trigger's rows
    flagged[30:n0] = np.arange(n0 - 30) % 10 == 0         # 27 of the other 270: the clean rows' 10 %
    labels = np.asarray(suspect.labels)
    detection = Detection(np.arange(n0 + n1), np.zeros(n0 + n1), labels, labels, flagged, flagged.copy(), n0 + n1)
    dmm = [LabelEvidence(0, n0, 57, 200, 20, 27.0, 12.0), LabelEvidence(1, n1, 10, 200, 20, 0.0, 0.1)]
    search = TriggerSearch([Trigger(["ka", "lo", "mi"], False, 0, 0.4, 30)], 0.6)
    cfg = ScanConfig(trigger_flip_backed=0.3)
    first = decide(dmm, search, cfg)
    assert first.dmm_targets == [0] and first.triggers == []
    back_triggers(first, search, detection, None, suspect, cfg)
    (test,) = search.backed_tests
    assert (test["held_flagged"], test["rest_flagged"], test["fisher_acts"]) == (30, 27, True)
    (again,) = test["rests"]        # DMM's test on the 270 rows without the trigger: 27 against 20 of 200
    assert again["test"] == "dmm" and (again["suspect_rows"], again["suspect_flagged"]) == (270, 27)
    assert not again["holds"] and test["acts"] and search.hits[0].backed
