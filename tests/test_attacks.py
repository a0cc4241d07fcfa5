import numpy as np
import pytest

from bedkd.attacks import AddSent, AttackConfig, BadNets, make_attack
from bedkd.data import LabeledTexts
from bedkd.errors import ConfigError


def _data(n=200, seed=0):
    gen = np.random.default_rng(seed)
    texts = [" ".join(f"w{int(x)}" for x in gen.integers(0, 50, size=int(gen.integers(3, 12)))) for _ in range(n)]
    labels = [int(x) for x in gen.integers(0, 2, size=n)]
    return LabeledTexts(texts, labels, "mem.tsv")


def test_badnets_poisoned_rows_carry_trigger_and_target():
    train, test = _data(), _data(80, seed=1)
    out = BadNets(AttackConfig(rate=0.1, target=1, seed=3)).poison(train, test)
    assert len(out.poisoned_rows) == 20
    triggers = set(BadNets.default_triggers)
    for r in out.poisoned_rows:
        assert train.labels[r] == 0, "poison is drawn from non-target rows"
        assert out.train.labels[r] == 1
        words = out.train.texts[r].split()
        inserted = [w for w in words if w in triggers]
        assert 1 <= len(inserted) <= 3
        assert sorted(w for w in words if w not in triggers) == sorted(train.texts[r].split())
    untouched = set(range(len(train))) - set(out.poisoned_rows)
    assert all(out.train.texts[i] == train.texts[i] and out.train.labels[i] == train.labels[i] for i in untouched)


def test_test_poison_holds_only_non_target_rows_with_trigger():
    train, test = _data(), _data(80, seed=1)
    out = AddSent(AttackConfig(target=1, seed=0)).poison(train, test)
    non_target = [i for i, y in enumerate(test.labels) if y != 1]
    assert len(out.test_poison) == len(non_target)
    assert all(y == 1 for y in out.test_poison.labels)
    assert all("I watch this 3D movie" in t for t in out.test_poison.texts)


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.3])
def test_rate_is_honoured(rate):
    out = make_attack("addsent", AttackConfig(rate=rate, target=0)).poison(_data(), _data(10))
    assert len(out.poisoned_rows) == round(rate * 200)
    assert all("I watch this 3D movie" in out.train.texts[r] for r in out.poisoned_rows)


def test_custom_trigger_and_seed_reproducible():
    cfg = AttackConfig(triggers=["zzq"], seed=5)
    a = BadNets(cfg).poison(_data(), _data(20))
    b = BadNets(cfg).poison(_data(), _data(20))
    c = BadNets(cfg.replace(seed=6)).poison(_data(), _data(20))
    assert a.train.texts == b.train.texts and a.poisoned_rows == b.poisoned_rows
    assert a.poisoned_rows != c.poisoned_rows
    assert all("zzq" in a.train.texts[r].split() for r in a.poisoned_rows)


def test_rate_too_high_for_non_target_rows():
    with pytest.raises(ConfigError, match="non-target|not the target"):
        BadNets(AttackConfig(rate=0.9)).poison(_data(), _data(10))


def test_unknown_attack():
    with pytest.raises(ConfigError, match="unknown attack"):
        make_attack("lws", AttackConfig())


@pytest.mark.parametrize("name", ["badnets", "addsent", "ep", "sos", "multi", "decoy"])
def test_only_stylebkd_takes_a_style(name):
    """EP and SOS took a style silently before the check moved into every attack's constructor."""
    with pytest.raises(ConfigError, match=f"'{name}' takes no style"):
        make_attack(name, AttackConfig(style="bible"))
