"""The decoy attack (adaptive, against DMM): the data it builds, and what DMM's scan and keep rules
do with that data when decoys and poisoned rows are flagged alike (no model is trained here)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bedkd.attacks import AttackConfig, BadNets, Decoy, DecoyConfig, make_attack
from bedkd.attacks.base import poison_count
from bedkd.attacks.decoy import DECOY_POOL
from bedkd.data import LabeledTexts
from bedkd.errors import ConfigError

TRIGGERS = set(BadNets.default_triggers)


def words(n=1000, classes=2, seed=0) -> LabeledTexts:
    gen = np.random.default_rng(seed)
    texts = [" ".join(f"w{int(x)}" for x in gen.integers(0, 50, size=int(gen.integers(3, 12)))) for _ in range(n)]
    return LabeledTexts(texts, [int(x) for x in gen.integers(0, classes, size=n)], "mem.tsv", list(range(2, n + 2)))


def build(rate=0.01, decoys=0.1, classes=2, seed=0, **own):
    train, test = words(1000, classes), words(100, classes, seed=1)
    attack = Decoy(AttackConfig(rate=rate, target=1, seed=seed), DecoyConfig(rate=decoys, **own))
    return attack, train, test, attack.poison(train, test)


@pytest.mark.parametrize("classes", [2, 4])
def test_backdoor_rows_are_badnets_at_the_rate(classes):
    _, train, test, out = build(classes=classes)
    assert len(out.poisoned_rows) == 10
    for r in out.poisoned_rows:
        assert train.labels[r] != 1 and out.train.labels[r] == 1
        added = [w for w in out.train.texts[r].split() if w in TRIGGERS]
        assert 1 <= len(added) <= 3
    plain = BadNets(AttackConfig(rate=0.01, target=1)).poison(train, test)
    assert out.poisoned_rows == plain.poisoned_rows and out.test_poison == plain.test_poison
    assert all(out.train.texts[r] == plain.train.texts[r] for r in out.poisoned_rows)


@pytest.mark.parametrize("classes", [2, 4])
def test_decoy_rows_use_their_own_class_vocabulary_and_keep_labels(classes):
    attack, train, test, out = build(classes=classes, length=6)
    decoys = out.augmented_rows
    assert len(decoys) == poison_count(0.1, 1000) == 100
    assert not set(decoys) & set(out.poisoned_rows)
    vocab = attack.vocabulary(sorted(set(train.labels)), train, test)
    assert sorted(vocab) == list(range(classes)) and all(len(v) == 3 for v in vocab.values())
    all_words = [w for v in vocab.values() for w in v]
    assert len(set(all_words)) == len(all_words), "class vocabularies are disjoint"
    natural = {w for t in train.texts + test.texts for w in t.split()}
    assert not set(all_words) & (natural | TRIGGERS)
    for r in decoys:
        assert out.train.labels[r] == train.labels[r], "label kept"
        tokens = out.train.texts[r].split()
        assert len(tokens) == 6 and set(tokens) <= set(vocab[train.labels[r]])
    assert {train.labels[r] for r in decoys} == set(range(classes)), "every class gets decoys"
    changed = set(decoys) | set(out.poisoned_rows)
    assert all(out.train.texts[i] == train.texts[i] and out.train.labels[i] == train.labels[i]
               for i in range(len(train)) if i not in changed)
    assert out.name == "decoy"


def test_vocabulary_skips_pool_words_found_in_the_data():
    train = words(200)
    train = LabeledTexts([t + (" granite walnut" if i == 0 else "") for i, t in enumerate(train.texts)],
                         train.labels, train.source, train.lines)
    out = Decoy(AttackConfig(rate=0.05), DecoyConfig(rate=0.5)).poison(train, words(20, seed=1))
    used = {w for r in out.augmented_rows for w in out.train.texts[r].split()}
    assert used and not used & {"granite", "walnut"}


def test_seeded_and_reproducible():
    _, _, _, a = build(seed=3)
    _, _, _, b = build(seed=3)
    _, _, _, c = build(seed=4)
    assert a.train.texts == b.train.texts and a.augmented_rows == b.augmented_rows
    assert a.augmented_rows != c.augmented_rows


def test_own_words_dealt_to_the_classes_in_turn():
    attack, train, test, out = build(words=["alpha", "beta", "gamma", "delta"])
    assert attack.vocabulary([0, 1], train, test) == {0: ["alpha", "gamma"], 1: ["beta", "delta"]}
    for r in out.augmented_rows:
        assert set(out.train.texts[r].split()) <= ({"alpha", "gamma"} if train.labels[r] == 0 else {"beta", "delta"})


@pytest.mark.parametrize("build_it, match", [
    (lambda: DecoyConfig(rate=1.5), "DecoyConfig.rate must be <= 1"),
    (lambda: DecoyConfig(length=0), "DecoyConfig.length must be >= 1"),
    (lambda: DecoyConfig(words=["two words"]), "single words"),
    (lambda: DecoyConfig(words=["a", "A"]), "differ"),
    (lambda: Decoy(AttackConfig(), DecoyConfig(words=["cf", "x"])), "also trigger words"),
    (lambda: Decoy(AttackConfig(style="bible")), "takes no style"),
    (lambda: build(words=["only"]), "1 decoy words for 2 classes"),
    (lambda: build(decoys=0.995), "asks for 995 decoy rows"),
    (lambda: build(classes=4, words_per_class=11), "44 decoy words needed"),
])
def test_bad_options_raise_config_error(build_it, match):
    with pytest.raises(ConfigError, match=match):
        build_it()


def test_no_decoys_is_plain_badnets():
    train, test = words(300), words(30, seed=1)
    out = Decoy(AttackConfig(rate=0.05), DecoyConfig(rate=0.0)).poison(train, test)
    plain = BadNets(AttackConfig(rate=0.05)).poison(train, test)
    assert out.train == plain.train and out.augmented_rows == []


def test_registered_with_cli_options():
    attack = make_attack("decoy", AttackConfig(rate=0.01), options=DecoyConfig(rate=0.2))
    assert isinstance(attack, Decoy) and attack.options.rate == 0.2
    assert Decoy.expected_flagged_share(0.01, 0.1) == pytest.approx(1 / 11)
    assert len(DECOY_POOL) == len(set(DECOY_POOL)) >= 24


# -- DMM's budgets against the decoy data ----------------------------------------------------------
class _Probs:
    """Stub models for DMM's scan. Teacher and student agree exactly on decoy and poisoned rows (score
    0: what DMM flags), nearly on one clean row in ``clean_agree`` (score 0.07: flagged, but ranked
    after them) and not at all on the rest (the flip moved them)."""

    def __init__(self, poisoned, decoys, labels, texts, clean_agree=40):
        self.exact = set(poisoned) | set(decoys)
        self.near = set(range(0, len(texts), clean_agree)) - self.exact
        self.row_of = {t: i for i, t in enumerate(texts)}
        self.labels = labels

    def encode(self, tokenizer, texts, max_length):
        return [self.row_of[t] for t in texts]

    def predict(self, model, ids, pad):
        out = np.zeros((len(ids), 2))
        for k, i in enumerate(ids):
            y, teacher = self.labels[i], model == "teacher"
            p = 0.99 if teacher or i in self.exact else 0.92 if i in self.near else 0.2
            out[k, y], out[k, 1 - y] = p, 1 - p
        return out


def _scan(monkeypatch, out, seed):
    from bedkd.defenses.data_filters import dmm as dmm_module
    from bedkd.defenses.data_filters.dmm import DMMConfig, DMMDetector
    texts = [f"{i}:{t}" for i, t in enumerate(out.train.texts)]     # unique keys for the stub
    stub = _Probs(out.poisoned_rows, out.augmented_rows, out.train.labels, texts)
    monkeypatch.setattr(dmm_module, "encode", stub.encode)
    monkeypatch.setattr(dmm_module, "predict_proba_ids", stub.predict)
    tok = SimpleNamespace(pad_token_id=0)
    teacher, student = SimpleNamespace(model="teacher", tokenizer=tok), SimpleNamespace(model="student", tokenizer=tok)
    suspect = LabeledTexts(texts, out.train.labels)
    det = DMMDetector(DMMConfig(seed=seed)).scan(teacher, student, suspect, progress=False)
    return det.metrics(out.poisoned_rows)


def test_decoys_fill_dmm_flag_budget(monkeypatch):
    """DMM's real scan and keep rules (stop at 128 flagged, keep the 33 lowest scores) on the decoy
    data, if decoys and poisoned rows are flagged alike: without decoys every poisoned row is
    flagged and kept; with 10 % decoys against 1 % poison the poisoned share of the flagged rows
    drops to about rate / (rate + decoy rate) (~9 %) and a handful of poisoned rows are kept.
    Five defender seeds: the attacker cannot choose the scan order."""
    train, test = words(3000), words(50, seed=1)
    plain = Decoy(AttackConfig(rate=0.01, target=1), DecoyConfig(rate=0.0)).poison(train, test)
    decoy = Decoy(AttackConfig(rate=0.01, target=1), DecoyConfig(rate=0.1)).poison(train, test)
    for seed in range(5):
        m = _scan(monkeypatch, plain, seed)
        assert m["scanned"] == 3000 and m["flagged"] < 128, "fewer than 128 rows are ever flagged"
        assert m["kept_true_poison"] == 30 and m["kept_precision"] == pytest.approx(100 * 30 / 33)
    shares, kept = [], []
    for seed in range(5):
        m = _scan(monkeypatch, decoy, seed)
        assert m["flagged"] == 128 and m["kept"] == 33 and m["scanned"] < 1500
        shares.append(m["flagged_precision"])
        kept.append(m["kept_true_poison"])
    assert 3 < np.mean(shares) < 15, shares
    assert np.mean(kept) <= 5 and max(kept) <= 9, kept
