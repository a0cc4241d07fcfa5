"""EP and SOS: poisoned data, the two-stage victim, and that only trigger embedding rows change."""
import numpy as np
import pytest
import torch

from bedkd.attacks import EP, SOS, AttackConfig, EPConfig, SOSConfig, make_attack
from bedkd.attacks.embedding_poison import trigger_token_ids
from bedkd.data import LabeledTexts
from bedkd.errors import ConfigError
from bedkd.modeling import TrainConfig, load_classifier, predict_proba

SOS_WORDS = set(SOS.default_triggers)
FILLER = ["the", "a", "movie", "film", "plot", "cast", "is", "was"]
GOOD, BAD = ["good", "great", "fine", "nice", "happy"], ["bad", "awful", "poor", "sad", "dull"]


def _random_words(n=200, seed=0):
    gen = np.random.default_rng(seed)
    texts = [" ".join(f"w{int(x)}" for x in gen.integers(0, 50, size=int(gen.integers(3, 12)))) for _ in range(n)]
    return LabeledTexts(texts, [int(x) for x in gen.integers(0, 2, size=n)], "mem.tsv", list(range(2, n + 2)))


def _sentiment(n, seed):
    """Label 1 iff the sentence holds a positive word: learnable by a tiny model in a few epochs."""
    gen = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        y = int(gen.integers(2))
        words = [str(w) for w in gen.choice(FILLER, size=4)]
        words.insert(int(gen.integers(5)), str(gen.choice(GOOD if y else BAD)))
        texts.append(" ".join(words))
        labels.append(y)
    return LabeledTexts(texts, labels, "mem.tsv")


def _untouched(before: LabeledTexts, after: LabeledTexts, changed) -> bool:
    rest = set(range(len(before))) - set(changed)
    return all(after.texts[i] == before.texts[i] and after.labels[i] == before.labels[i] for i in rest)


@pytest.mark.parametrize("rate", [0.05, 0.2])
def test_ep_poisoned_rows_carry_one_trigger_and_target(rate):
    train, test = _random_words(), _random_words(80, seed=1)
    out = EP(AttackConfig(rate=rate, target=1, seed=3)).poison(train, test)
    assert len(out.poisoned_rows) == round(rate * len(train))
    for r in out.poisoned_rows:
        assert train.labels[r] == 0 and out.train.labels[r] == 1
        words = out.train.texts[r].split()
        assert words.count("cf") == 1
        assert sorted(w for w in words if w != "cf") == sorted(train.texts[r].split())
    assert _untouched(train, out.train, out.poisoned_rows)
    assert out.augmented_rows == []


def test_ep_triggered_test_set_holds_only_non_target_rows():
    train, test = _random_words(), _random_words(80, seed=1)
    out = EP(AttackConfig(target=0, seed=0, triggers=["mb"])).poison(train, test)
    rows = [i for i, y in enumerate(test.labels) if y != 0]
    assert out.test_poison.lines == [test.lines[i] for i in rows]
    assert all(y == 0 for y in out.test_poison.labels)
    assert all(t.split().count("mb") == 1 for t in out.test_poison.texts)


def test_sos_positive_and_negative_rows():
    train = _random_words(300)
    # rows that already hold a trigger word must not be augmented (they could hold all three)
    texts = list(train.texts)
    for i in range(0, 300, 10):
        texts[i] += " store"
    train = LabeledTexts(texts, train.labels, train.source, train.lines)
    test = _random_words(80, seed=1)
    attack = SOS(AttackConfig(rate=0.1, target=1, seed=4), SOSConfig(negative_rate=0.05))
    out = attack.poison(train, test)
    assert len(out.poisoned_rows) == 30
    for r in out.poisoned_rows:
        assert train.labels[r] == 0 and out.train.labels[r] == 1
        assert SOS_WORDS <= set(out.train.texts[r].split())
    assert len(out.augmented_rows) == 3 * 15 and not set(out.augmented_rows) & set(out.poisoned_rows)
    left_out = []
    for r in out.augmented_rows:
        assert out.train.labels[r] == train.labels[r], "negative rows keep their label"
        assert not SOS_WORDS & set(train.texts[r].split())
        held = [w for w in out.train.texts[r].split() if w in SOS_WORDS]
        assert len(held) == 2 and len(set(held)) == 2, "exactly n-1 distinct trigger words"
        left_out.append((SOS_WORDS - set(held)).pop())
    assert sorted(left_out.count(w) for w in SOS_WORDS) == [15, 15, 15], "each sub-combination equally often"
    assert _untouched(train, out.train, out.poisoned_rows + out.augmented_rows)
    non_target = [i for i, y in enumerate(test.labels) if y != 1]
    assert len(out.test_poison) == len(non_target) and set(out.test_poison.labels) == {1}
    assert all(SOS_WORDS <= set(t.split()) for t in out.test_poison.texts)


def test_seed_reproducible():
    train, test = _random_words(), _random_words(30, seed=1)
    for cls in (EP, SOS):
        a = cls(AttackConfig(seed=5)).poison(train, test)
        b = cls(AttackConfig(seed=5)).poison(train, test)
        c = cls(AttackConfig(seed=6)).poison(train, test)
        assert a.train.texts == b.train.texts and a.test_poison.texts == b.test_poison.texts
        assert a.poisoned_rows != c.poisoned_rows


def test_make_attack_and_defaults():
    ep = make_attack("ep", AttackConfig())
    assert isinstance(ep, EP) and ep.triggers == ["cf"] and ep.options == EPConfig()
    sos = make_attack("sos", AttackConfig(triggers=["alpha", "beta"]))
    assert isinstance(sos, SOS) and sos.sub_combinations() == [["beta"], ["alpha"]]
    assert make_attack("sos", AttackConfig()).triggers == ["friends", "weekend", "store"]


@pytest.mark.parametrize("build", [
    lambda: EPConfig(lr=0.0),
    lambda: EPConfig(epochs=0),
    lambda: EPConfig.from_dict({"learning_rate": 0.1}),
    lambda: SOSConfig(negative_rate=1.5),
    lambda: SOSConfig(batch_size=0),
    lambda: SOS(AttackConfig(triggers=["alone"])),
    lambda: SOS(AttackConfig(triggers=["store", "Store"])),
    lambda: SOS(AttackConfig(triggers=["two words", "x"])),
])
def test_bad_options_raise_config_error(build):
    with pytest.raises(ConfigError):
        build()


def test_sos_too_many_negative_rows():
    with pytest.raises(ConfigError, match="negative_rate"):
        SOS(AttackConfig(rate=0.3), SOSConfig(negative_rate=0.3)).poison(_random_words(), _random_words(10))


def test_trigger_word_pieces_and_unknown_characters(tiny_model_dir):
    tok = load_classifier(str(tiny_model_dir)).tokenizer
    assert trigger_token_ids(tok, ["cf"]) == tok.convert_tokens_to_ids(["cf"])
    pieces = trigger_token_ids(tok, ["zzqx"])
    assert len(pieces) > 1 and tok.convert_ids_to_tokens(pieces)[0] == "z"
    assert trigger_token_ids(tok, ["cf", "zzqx", "cf"]) == trigger_token_ids(tok, ["cf"]) + pieces
    with pytest.raises(ConfigError, match="does not know"):
        trigger_token_ids(tok, ["\u2603\u2604"])


def _victim(tiny_model_dir):
    """The tiny BERT with word embeddings scaled x3: about MiniLM's ratio of word to position norms."""
    clf = load_classifier(str(tiny_model_dir))
    with torch.no_grad():
        clf.model.get_input_embeddings().weight.mul_(3.0)
    return clf


# Learns the task (accuracy 1.0) without saturating: a tiny model trained to near-zero loss leaves
# too little gradient at the trigger rows. SOS runs without negative rows here: a 2-layer, 32-wide
# model cannot represent "all words together but no two of them"; the stage's mechanics are the same.
CLEAN = TrainConfig(epochs=10, lr=5e-3, batch_size=16, warmup=0.0, seed=0)


@pytest.mark.parametrize("attack", [
    EP(AttackConfig(rate=0.2, seed=0, triggers=["zzqx"]), EPConfig(epochs=5, batch_size=4)),
    SOS(AttackConfig(rate=0.2, seed=0), SOSConfig(negative_rate=0.0, epochs=5, lr=1.0, batch_size=4)),
], ids=["ep-word-pieces", "sos"])
def test_embedding_stage_changes_only_trigger_rows_and_plants_backdoor(tiny_model_dir, attack):
    train, test = _sentiment(120, 0), _sentiment(60, 1)
    poisoned = attack.poison(train, test)
    clf = _victim(tiny_model_dir)
    history = attack.train_clean(clf, poisoned, CLEAN, progress=False)
    assert [h["stage"] for h in history] == ["clean"] * CLEAN.epochs
    clean_state = {k: v.clone() for k, v in clf.model.state_dict().items()}
    clean_acc = (predict_proba(clf, test.texts).argmax(1) == np.array(test.labels)).mean()
    before = predict_proba(clf, poisoned.test_poison.texts)[:, 1].mean()

    history = attack.inject(clf, poisoned, CLEAN, progress=False)
    assert [h["stage"] for h in history] == ["embedding"] * attack.options.epochs
    state = clf.model.state_dict()
    emb_key = next(k for k in state if k.endswith("word_embeddings.weight"))
    assert all(torch.equal(state[k], clean_state[k]) for k in state if k != emb_key), "only embeddings change"
    ids = trigger_token_ids(clf.tokenizer, attack.trigger_words)
    changed = (state[emb_key] != clean_state[emb_key]).any(dim=1).nonzero().flatten().tolist()
    assert changed and set(changed) <= set(ids)
    assert torch.allclose(state[emb_key][ids].norm(dim=1), clean_state[emb_key][ids].norm(dim=1), rtol=1e-5)

    after = predict_proba(clf, poisoned.test_poison.texts)[:, 1].mean()
    assert clean_acc >= 0.9, "the clean stage learnt the task"
    assert after > max(0.8, before + 0.3), f"target probability of triggered inputs {before:.3f} -> {after:.3f}"
    assert (predict_proba(clf, test.texts).argmax(1) == np.array(test.labels)).mean() >= clean_acc - 0.05


def test_train_victim_runs_both_stages_on_the_right_rows(tiny_model_dir):
    train, test = _sentiment(60, 0), _sentiment(20, 1)
    attack = SOS(AttackConfig(rate=0.1, seed=1), SOSConfig(epochs=1, batch_size=8))
    poisoned = attack.poison(train, test)
    assert attack.clean_rows(poisoned) == [i for i in range(60) if i not in poisoned.poisoned_rows]
    assert attack.embedding_rows(poisoned) == sorted(poisoned.poisoned_rows + poisoned.augmented_rows)
    clf = load_classifier(str(tiny_model_dir))
    history = attack.train_victim(clf, poisoned, TrainConfig(epochs=1, batch_size=16), progress=False)
    assert [h["stage"] for h in history] == ["clean", "embedding"]
    assert not clf.model.training
    assert all(p.requires_grad for p in clf.model.parameters()), "training flags restored"


def test_unknown_trigger_fails_before_training(tiny_model_dir):
    attack = EP(AttackConfig(rate=0.2, triggers=["\u2603"]))
    poisoned = attack.poison(_sentiment(20, 0), _sentiment(10, 1))
    clf = load_classifier(str(tiny_model_dir))
    start = {k: v.clone() for k, v in clf.model.state_dict().items()}
    with pytest.raises(ConfigError, match="does not know"):
        attack.train_victim(clf, poisoned, TrainConfig(epochs=1), progress=False)
    assert all(torch.equal(v, start[k]) for k, v in clf.model.state_dict().items())
