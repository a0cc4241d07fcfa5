"""A found trigger word of several pieces given a token of its own in the returned model (trigger_tokens)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from bedkd.data import LabeledTexts
from bedkd.defenses import BeDKD, ScanConfig
from bedkd.defenses.purifiers.trigger_tokens import (isolate_counts, isolate_keeps, isolate_trigger_words,
                                                     words_to_isolate)
from bedkd.defenses.scanning.trigger_search import Trigger
from bedkd.modeling import load_classifier, predict_proba, save_classifier
from test_bedkd import synthetic, victim  # noqa: F401  (victim: the shared fixture)
from test_scan import TINY_AKD, TINY_DMM

MIXED = "mbjw"          # pieces in the tiny vocabulary; its first piece is made common below


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _clean_with_common_head(tok, n=200):
    head = tok.convert_ids_to_tokens(_ids(tok, MIXED)[0])
    return LabeledTexts([f"{head} text number {i}" for i in range(n)], [i % 2 for i in range(n)])


def test_only_unreset_rare_words_of_several_letter_pieces_are_isolated(tiny_model_dir):
    tok = load_classifier(str(tiny_model_dir)).tokenizer
    one = next(w for w in tok.get_vocab() if w.isalpha() and w.islower() and len(w) > 2 and len(_ids(tok, w)) == 1)
    assert len(_ids(tok, MIXED)) > 1 and len(_ids(tok, "zxq")) > 1
    clean = _clean_with_common_head(tok).texts + ["zxq once", "mb-jw"]
    triggers = [Trigger([MIXED, one], True, 1, 1.0, 10), Trigger(["zxq", "m-jw"], True, 1, 1.0, 10)]
    assert words_to_isolate(tok, triggers, clean, []) == [MIXED, "zxq"]         # one token, '-': left
    assert words_to_isolate(tok, triggers, clean, ["zxq:z", "zxq:##x"]) == [MIXED]     # reset already
    common = clean + [f"{MIXED} again"] * 5                                    # 5 of 207 rows: common
    assert words_to_isolate(tok, triggers, common, []) == ["zxq"]


def test_an_isolated_word_reads_as_one_mean_token_and_nothing_else_changes(tiny_model_dir, tmp_path):
    clf = load_classifier(str(tiny_model_dir))
    tok = clf.tokenizer
    clean = _clean_with_common_head(tok)
    emb = clf.model.get_input_embeddings().weight.detach().clone()
    texts = ["the plot mbjw was good", "MBJW, it was fine", "ambjw mbjws text", clean.texts[0]]
    before = [_ids(tok, t) for t in texts]
    plain_proba = predict_proba(clf, texts[2:])
    out, ids = isolate_trigger_words(clf, [Trigger([MIXED], True, 1, 1.0, 10)], clean, [])
    new = out.tokenizer
    assert list(ids) == [MIXED] and ids[MIXED] == len(tok) and len(new) == len(tok) + 1
    assert [_ids(tok, t) for t in texts] == before                             # the teacher's tokenizer as it was
    assert _ids(new, texts[0]).count(ids[MIXED]) == 1 and _ids(new, texts[1])[0] == ids[MIXED]   # case, punctuation
    assert [_ids(new, t) for t in texts[2:]] == before[2:]                     # inside other words, clean rows
    grown = out.model.get_input_embeddings().weight
    assert grown.shape[0] == len(new) and torch.equal(grown[:-1], emb)
    assert torch.allclose(grown[-1], emb.mean(dim=0), atol=1e-6)
    assert (abs(predict_proba(out, texts[2:]) - plain_proba) < 1e-6).all()
    saved = load_classifier(str(save_classifier(out, tmp_path / "purified")))
    assert _ids(saved.tokenizer, texts[0]) == _ids(new, texts[0])
    assert (abs(predict_proba(saved, texts) - predict_proba(out, texts)) < 1e-5).all()


def test_purify_returns_the_isolated_model_when_asked(victim, monkeypatch):
    from bedkd.defenses.purifiers import bedkd as module
    clf, suspect, _ = victim
    clean, _ = synthetic(400, seed=3)
    calls, vocab = [], len(clf.tokenizer)

    def recorded(student, triggers, clean_rows, reset, value):
        calls.append(([t.words for t in triggers], reset, value))
        return isolate_trigger_words(student, [Trigger([MIXED], True, 1, 1.0, 10)], clean_rows, reset, value)
    monkeypatch.setattr(module, "isolate_trigger_words", recorded)
    scan = ScanConfig(trigger_candidates=10, trigger_probe_rows=60)
    plain = BeDKD(TINY_DMM, TINY_AKD.replace(epochs=1), scan).purify(clf, clean, suspect, progress=False)
    assert not calls and "isolated_words" not in plain.report["data"]
    result = BeDKD(TINY_DMM, TINY_AKD.replace(epochs=1, isolate_trigger_words=True), scan).purify(
        clf, clean, suspect, progress=False)
    assert len(calls) == 1 and calls[0][0] and calls[0][2] == "mean"
    assert list(result.report["data"]["isolated_words"]) == [MIXED]
    assert len(result.classifier.tokenizer) == vocab + 1 and len(clf.tokenizer) == vocab    # the victim's as it was


def _purify_isolating(victim, monkeypatch, tmp_path, *extra) -> dict:
    """``bedkd purify --preset guarded --akd-isolate-trigger-words`` (tiny budgets, ``extra`` flags) on the
    shared victim, its scan's words replaced by ``MIXED``; the written report."""
    import json

    from bedkd.cli.main import main
    from bedkd.defenses.purifiers import bedkd as module
    from test_scan import _write
    clf, suspect, _ = victim
    clean, _ = synthetic(400, seed=3)
    monkeypatch.setattr(module, "isolate_trigger_words", lambda student, triggers, rows, reset, value:
                        isolate_trigger_words(student, [Trigger([MIXED], True, 1, 1.0, 10)], rows, reset, value))
    save_classifier(clf, tmp_path / "victim")
    flags = ["--preset", "guarded", "--dmm-flip-per-class", "40", "--dmm-epochs", "1", "--akd-trust-per-class", "60",
             "--akd-val-per-class", "30", "--akd-epochs", "1", "--scan-trigger-candidates", "10",
             "--scan-trigger-probe-rows", "60", "--akd-isolate-trigger-words", *extra, "--quiet"]
    assert main(["purify", "--model", str(tmp_path / "victim"), "--clean", str(_write(tmp_path / "clean.tsv", clean)),
                 "--suspect", str(_write(tmp_path / "suspect.tsv", suspect)), "--out", str(tmp_path / "out"),
                 *flags]) == 0
    return json.loads((tmp_path / "out" / "report.json").read_text())


def test_purify_command_saves_the_isolated_tokenizer_and_says_so(victim, monkeypatch, tmp_path, capsys):
    report = _purify_isolating(victim, monkeypatch, tmp_path, "--akd-isolate-keep", "always")   # the preset's: paired
    assert list(report["data"]["isolated_words"]) == [MIXED]
    assert "reads mbjw as new whole-word token(s)" in capsys.readouterr().err
    saved = load_classifier(str(tmp_path / "out"))
    assert _ids(saved.tokenizer, f"the {MIXED} plot")[1] == report["data"]["isolated_words"][MIXED]
    assert len(_ids(load_classifier(str(tmp_path / "victim")).tokenizer, MIXED)) > 1


def test_purify_command_says_when_the_keep_rule_left_the_pieces(victim, monkeypatch, tmp_path, capsys):
    from bedkd.defenses.purifiers import bedkd as module
    rules = []
    monkeypatch.setattr(module, "isolate_keeps", lambda counts, rule: rules.append((counts, rule)) or False)
    check = _purify_isolating(victim, monkeypatch, tmp_path, "--akd-isolate-keep", "paired")["data"]["isolate_check"]
    assert len(rules) == 1 and rules[0][1] == "paired" and check["rule"] == "paired" and not check["kept"]
    moved = (f"{check['rows_off_target']} held-out trigger rows left the target with new tokens and "
             f"{check['rows_to_target']} joined it") if check["trigger_proxy_with"] is not None else "no held-out"
    assert f"{MIXED} kept their pieces: {moved}" in capsys.readouterr().err
    assert len(load_classifier(str(tmp_path / "out")).tokenizer) == len(victim[0].tokenizer)


def _hits(on: int, rows: int = 100):
    return np.arange(rows) < on


@dataclass
class _ScriptedProxy:
    """A Validator stand-in whose held-out trigger rows go to the target as ``without`` says on the model
    as it was, and as ``with_`` says once it grew."""
    rows: int
    without: np.ndarray
    with_: np.ndarray
    trigger_texts: list = field(default_factory=lambda: ["a mbjw text"])
    trigger_ids: list = field(default_factory=lambda: [[1, 2]])

    def trigger_hits(self, model, offsets=None):
        grown = model.get_input_embeddings().weight.shape[0] > self.rows
        return self.with_ if grown else self.without


def test_isolate_keeps_lower_on_any_net_fall_and_paired_only_beyond_two_standard_errors():
    def counts(off, to):
        return {"rows_off_target": off, "rows_to_target": to}
    assert isolate_keeps(counts(1, 0), "lower") and not isolate_keeps(counts(1, 0), "paired")
    assert isolate_keeps(counts(4, 0), "paired") and not isolate_keeps(counts(3, 0), "paired")
    assert isolate_keeps(counts(30, 10), "paired")                       # 20 >= 2 * sqrt(40) = 12.6
    assert isolate_keeps(counts(12, 5), "lower") and not isolate_keeps(counts(12, 5), "paired")   # 7 < 8.2
    assert not any(isolate_keeps(counts(5, 5), rule) for rule in ("lower", "paired"))
    assert not any(isolate_keeps(counts(0, 6), rule) for rule in ("lower", "paired"))
    pairs = isolate_counts(np.array([True, True, False, False]), np.array([False, True, True, False]))
    assert pairs == {"trigger_proxy_without": 0.5, "trigger_proxy_with": 0.5, "proxy_rows": 4,
                     "rows_off_target": 1, "rows_to_target": 1}


def test_isolate_keep_keeps_the_tokens_only_when_the_rule_says_the_trigger_proxy_falls(tiny_model_dir, monkeypatch):
    from bedkd.defenses import AKDConfig, BeDKD
    from bedkd.defenses.purifiers import bedkd as module
    monkeypatch.setattr(module, "isolate_trigger_words", lambda student, triggers, rows, reset, value:
                        isolate_trigger_words(student, [Trigger([MIXED], True, 1, 1.0, 10)], rows, reset, value))
    for keep, without, with_, kept in (("lower", _hits(40), _hits(10), True), ("lower", _hits(40), _hits(50), False),
                                       ("lower", _hits(40), _hits(40), False), ("lower", _hits(40), _hits(39), True),
                                       ("paired", _hits(40), _hits(39), False), ("paired", _hits(40), _hits(36), True),
                                       ("paired", _hits(40), _hits(10) | (np.arange(100) >= 80), False),  # 30/20
                                       ("paired", _hits(40), _hits(10) | (np.arange(100) >= 95), True),
                                       ("always", _hits(40), _hits(50), True)):
        clf = load_classifier(str(tiny_model_dir))
        before = {k: v.clone() for k, v in clf.model.state_dict().items()}
        rows = clf.model.get_input_embeddings().weight.shape[0]
        defense = BeDKD(akd=AKDConfig(isolate_trigger_words=True, isolate_keep=keep))
        clean = _clean_with_common_head(clf.tokenizer)
        out, ids, check = defense._isolated(clf, [Trigger([MIXED], True, 1, 1.0, 10)], clean, [],
                                            _ScriptedProxy(rows, without, with_))
        assert bool(ids) == kept and (len(out.tokenizer) > len(clf.tokenizer)) == kept, (keep, with_.sum())
        if keep != "always":
            assert check == {"words": [MIXED], "rule": keep, **isolate_counts(without, with_), "kept": kept}
        else:
            assert check is None
        if not kept:       # returned exactly as it was
            assert out.model.get_input_embeddings().weight.shape[0] == rows
            assert all(torch.equal(before[k], v) for k, v in out.model.state_dict().items())
