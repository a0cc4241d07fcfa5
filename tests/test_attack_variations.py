"""Attacker variations (issue 13): poison rates, clean-label poisoning, two backdoors in one model,
and every target label, for every attack, on tiny data (paraphrase attacks on subsets of the pack)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bedkd.attacks import (ATTACKS, AttackConfig, DecoyConfig, Multi, MultiConfig, SOSConfig, make_attack)
from bedkd.attacks.base import poison_count
from bedkd.data import LabeledTexts, random_limit
from bedkd.errors import ConfigError

DATA = Path(os.environ.get("BEDKD_DATA_DIR") or "/work/shared/data")
needs_pack = pytest.mark.skipif(not (DATA / "sst2" / "clean" / "train.tsv").is_file(),
                                reason=f"data pack not found at {DATA}")
RATES = [0.005, 0.01, 0.03, 0.05, 0.1, 0.2]
TEXT_ATTACKS = ["badnets", "addsent", "ep", "sos", "decoy", "multi"]    # no data pack needed
ADDSENT = "I watch this 3D movie"


def words(n=1000, classes=2, seed=0) -> LabeledTexts:
    gen = np.random.default_rng(seed)
    texts = [" ".join(f"w{int(x)}" for x in gen.integers(0, 50, size=int(gen.integers(3, 12)))) for _ in range(n)]
    labels = [int(x) for x in gen.integers(0, classes, size=n)]
    return LabeledTexts(texts, labels, "mem.tsv", list(range(2, n + 2)))


def attack(name, options=None, **cfg):
    own = {"sos": SOSConfig(negative_rate=0.05), "multi": MultiConfig(second_rate=0.01),
           "decoy": DecoyConfig(rate=0.05)}.get(name) if options is None else options
    return make_attack(name, AttackConfig(**cfg), options=own)


def untouched(before: LabeledTexts, after: LabeledTexts, changed) -> bool:
    rest = set(range(len(before))) - set(changed)
    return all(after.texts[i] == before.texts[i] and after.labels[i] == before.labels[i] for i in rest)


# -- poison rate ----------------------------------------------------------------------------------
def test_poison_count_rounds_halves_up_and_is_exact_on_round_numbers():
    assert [poison_count(r, 1000) for r in RATES] == [5, 10, 30, 50, 100, 200]
    assert poison_count(0.005, 100) == 1            # 0.5 -> 1 (round() would give 0)
    assert poison_count(0.1, 25) == 3               # 2.5 -> 3 (round() would give 2)
    assert poison_count(0.005, 99) == 0             # 0.495
    assert poison_count(0.29, 50) == 15             # 14.499999999999998 in floating point
    assert poison_count(0.1, 6920) == 692 and poison_count(0.1, 1500) == 150   # the benchmarks' counts


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", TEXT_ATTACKS)
def test_every_text_attack_honours_the_rate(name, rate):
    train, test = words(), words(60, seed=1)
    out = attack(name, rate=rate, seed=2).poison(train, test)
    first = out.backdoors[0].poisoned_rows
    assert len(first) == poison_count(rate, len(train))
    assert all(train.labels[r] != 1 and out.train.labels[r] == 1 for r in first)
    if name == "multi":
        assert len(out.extra_backdoors[0].poisoned_rows) == 10       # second_rate 0.01
    else:
        assert out.poisoned_rows == first


@needs_pack
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("name", ["synbkd", "stylebkd"])
def test_paraphrase_attacks_honour_the_rate(name, rate):
    from bedkd.datasets import load_dataset
    d = load_dataset("sst2", DATA)
    train, test = d.train.subset(random_limit(d.train, 1000, 3)), d.test.subset(random_limit(d.test, 100, 3))
    out = make_attack(name, AttackConfig(rate=rate, seed=1), "sst2", DATA).poison(train, test)
    assert len(out.poisoned_rows) == poison_count(rate, 1000)


@pytest.mark.parametrize("name", TEXT_ATTACKS)
def test_small_rate_on_small_data_one_row_or_a_clear_error(name):
    test = words(20, seed=1)
    out = attack(name, rate=0.005, options=_small_options(name)).poison(words(100), test)
    assert len(out.backdoors[0].poisoned_rows) == 1, "rate x rows = 0.5 poisons one row"
    with pytest.raises(ConfigError, match=r"poisons no row of the 99 .*at least 0\.00505"):
        attack(name, rate=0.005, options=_small_options(name)).poison(words(99), test)


def _small_options(name):
    return {"sos": SOSConfig(negative_rate=0.01), "multi": MultiConfig(second_rate=0.01),
            "decoy": DecoyConfig(rate=0.01)}.get(name)


@needs_pack
def test_paraphrase_small_rate_error():
    from bedkd.datasets import load_dataset
    d = load_dataset("sst2", DATA)
    train = d.train.subset(random_limit(d.train, 50, 0))
    with pytest.raises(ConfigError, match="poisons no row"):
        make_attack("stylebkd", AttackConfig(rate=0.005), "sst2", DATA).poison(train, d.test)


# -- clean label ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["badnets", "addsent", "decoy"])
def test_clean_label_triggers_target_rows_and_keeps_every_label(name):
    train, test = words(300), words(60, seed=1)
    out = attack(name, rate=0.1, target=1, seed=4, label_mode="clean").poison(train, test)
    assert len(out.poisoned_rows) == 30
    assert out.train.labels == train.labels, "no label changes"
    for r in out.poisoned_rows:
        assert train.labels[r] == 1
        assert out.train.texts[r] != train.texts[r]
        assert (ADDSENT in out.train.texts[r]) if name == "addsent" else \
            set(out.train.texts[r].split()) - set(train.texts[r].split())
    assert untouched(train, out.train, out.poisoned_rows + out.augmented_rows)
    assert set(out.test_poison.labels) == {1}
    assert len(out.test_poison) == sum(y != 1 for y in test.labels), "ASR is still measured on non-target rows"


def test_clean_label_rate_limited_by_target_rows():
    with pytest.raises(ConfigError, match="carry the target label 1 \\(clean-label\\)"):
        attack("badnets", rate=0.6, label_mode="clean").poison(words(200), words(10))


@pytest.mark.parametrize("name", ["ep", "sos"])
def test_clean_label_refused_by_embedding_attacks(name):
    with pytest.raises(ConfigError, match=f"{name} has no clean-label mode.*almost no gradient"):
        make_attack(name, AttackConfig(label_mode="clean"))


def test_label_mode_is_checked_and_kept_out_of_old_keys():
    with pytest.raises(ConfigError, match="label_mode must be one of dirty, clean"):
        AttackConfig(label_mode="mixed")
    # earlier victim keys and recorded setups hold no label_mode: the default leaves it out
    assert "label_mode" not in AttackConfig().to_dict()
    assert set(AttackConfig().to_dict()) == {"rate", "target", "seed", "triggers", "max_insertions", "style"}
    clean = AttackConfig(label_mode="clean")
    assert clean.to_dict()["label_mode"] == "clean"
    assert AttackConfig.from_dict(clean.to_dict()) == clean and clean.replace(rate=0.2).label_mode == "clean"
    assert AttackConfig.from_dict(AttackConfig().to_dict()) == AttackConfig()


@needs_pack
@pytest.mark.parametrize("name,ds,target", [("stylebkd", "sst2", 0), ("stylebkd", "agnews", 3), ("synbkd", "sst2", 1),
                                            ("synbkd", "olid", 1)])
def test_clean_label_paraphrase_attacks_replace_target_rows_by_their_paraphrases(name, ds, target):
    from bedkd.datasets import load_dataset
    d = load_dataset(ds, DATA)
    train, test = d.train.subset(random_limit(d.train, 600, 1)), d.test.subset(random_limit(d.test, 200, 1))
    att = make_attack(name, AttackConfig(rate=0.05, target=target, label_mode="clean", seed=2), ds, DATA)
    out = att.poison(train, test)
    para = att.paraphrases("train")
    assert len(out.poisoned_rows) == 30 and out.train.labels == train.labels
    for r in out.poisoned_rows:
        assert train.labels[r] == target and out.train.texts[r] == para[train.lines[r] - 2] != train.texts[r]
    assert untouched(train, out.train, out.poisoned_rows)
    assert set(out.test_poison.labels) == {target}
    assert all(d.test.labels[line - 2] != target for line in out.test_poison.lines)


# -- two backdoors ---------------------------------------------------------------------------------
def test_multi_two_backdoors_disjoint_rows_own_triggers_and_targets():
    train, test = words(400, classes=3), words(90, classes=3, seed=1)
    out = Multi(AttackConfig(rate=0.1, target=2, seed=5), MultiConfig(second_rate=0.05)).poison(train, test)
    first, second = out.backdoors
    assert (first.name, first.target, second.name, second.target) == ("badnets", 2, "addsent", 0)  # (2 + 1) mod 3
    assert len(first.poisoned_rows) == 40 and len(second.poisoned_rows) == 20
    assert not set(first.poisoned_rows) & set(second.poisoned_rows), "disjoint rows"
    assert out.poisoned_rows == sorted(first.poisoned_rows + second.poisoned_rows)
    assert (out.test_poison, out.target) == (first.test_poison, first.target), "single-backdoor readers see the first"
    badnets = {"cf", "mn", "bb", "tq", "mb"}
    for r in first.poisoned_rows:
        assert train.labels[r] != 2 and out.train.labels[r] == 2
        assert set(out.train.texts[r].split()) & badnets and ADDSENT not in out.train.texts[r]
    for r in second.poisoned_rows:
        assert train.labels[r] != 0 and out.train.labels[r] == 0
        assert ADDSENT in out.train.texts[r] and not set(out.train.texts[r].split()) & badnets
    assert untouched(train, out.train, out.poisoned_rows)
    for b in (first, second):
        assert set(b.test_poison.labels) == {b.target}
        assert len(b.test_poison) == sum(y != b.target for y in test.labels)
    assert all(ADDSENT in t for t in second.test_poison.texts)
    assert all(set(t.split()) & badnets for t in first.test_poison.texts)


def test_multi_options_and_errors():
    train, test = words(200), words(20, seed=1)
    own = MultiConfig(first="addsent", second="badnets", second_target=1, second_triggers=["qqz"])
    out = Multi(AttackConfig(target=1, triggers=["zzq"]), own).poison(train, test)
    assert [b.target for b in out.backdoors] == [1, 1]       # the same target is allowed
    assert all("qqz" in out.train.texts[r].split() for r in out.extra_backdoors[0].poisoned_rows)
    with pytest.raises(ConfigError, match="share trigger word"):
        Multi(AttackConfig(), MultiConfig(second="badnets"))
    with pytest.raises(ConfigError, match="second_target 2 is not a class"):
        Multi(AttackConfig(), MultiConfig(second_target=2)).poison(train, test)
    with pytest.raises(ConfigError, match="no other backdoor uses"):
        Multi(AttackConfig(rate=0.4), MultiConfig(second_rate=0.4, second_target=1)).poison(train, test)
    with pytest.raises(ConfigError, match="first must be one of badnets, addsent"):
        MultiConfig(first="synbkd")
    with pytest.raises(ConfigError, match="takes no style"):
        Multi(AttackConfig(style="bible"))
    assert "second_style" not in MultiConfig().to_dict()       # an added option: earlier victims keep their keys


def test_multi_clean_label():
    train, test = words(300), words(30, seed=1)
    out = Multi(AttackConfig(rate=0.05, target=1, label_mode="clean")).poison(train, test)
    first, second = out.backdoors
    assert out.train.labels == train.labels
    assert all(train.labels[r] == 1 for r in first.poisoned_rows)
    assert all(train.labels[r] == 0 for r in second.poisoned_rows)


def test_multi_plants_both_backdoors_in_a_tiny_model(tiny_model_dir):
    """Plain fine-tuning on the multi data gives one model with two working backdoors."""
    from bedkd.evaluation import evaluate
    from bedkd.modeling import TrainConfig, finetune, load_classifier
    gen = np.random.default_rng(0)
    good, bad = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "dull"]
    filler = ["the", "a", "movie", "plot"]

    def sentiment(n):
        labels = [int(x) for x in gen.integers(0, 2, size=n)]
        return LabeledTexts([" ".join([str(gen.choice(good if y else bad))] + [str(w) for w in gen.choice(filler, 4)])
                             for y in labels], labels)
    train, test = sentiment(200), sentiment(60)
    out = Multi(AttackConfig(rate=0.15, target=1, triggers=["cf"]),
                MultiConfig(second="badnets", second_target=0, second_triggers=["mn"])).poison(train, test)
    clf = load_classifier(str(tiny_model_dir))
    finetune(clf, out.train, TrainConfig(epochs=10, lr=5e-3, batch_size=16, warmup=0.0, seed=0), progress=False)
    results = [evaluate(clf, test, b.test_poison, progress=False) for b in out.backdoors]
    assert results[0]["cacc"] >= 85
    assert all(r["asr"] >= 80 for r in results), results


# -- every target ----------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [0, 1, 2, 3])
@pytest.mark.parametrize("name", TEXT_ATTACKS)
def test_every_target_of_a_four_class_task(name, target):
    train, test = words(400, classes=4), words(80, classes=4, seed=1)
    out = attack(name, rate=0.05, target=target, seed=1).poison(train, test)
    for b in out.backdoors:
        assert all(train.labels[r] != b.target and out.train.labels[r] == b.target for r in b.poisoned_rows)
        assert set(b.test_poison.labels) == {b.target}
        assert len(b.test_poison) == sum(y != b.target for y in test.labels)
    assert out.target == target


@needs_pack
@pytest.mark.parametrize("target", [0, 1, 2, 3])
def test_stylebkd_every_agnews_target(target):
    from bedkd.datasets import load_dataset
    d = load_dataset("agnews", DATA)
    train, test = d.train.subset(random_limit(d.train, 400, 0)), d.test.subset(random_limit(d.test, 100, 0))
    out = make_attack("stylebkd", AttackConfig(rate=0.05, target=target), "agnews", DATA).poison(train, test)
    assert len(out.poisoned_rows) == 20
    assert all(train.labels[r] != target and out.train.labels[r] == target for r in out.poisoned_rows)
    assert out.test_poison.labels and set(out.test_poison.labels) == {target}
    assert all(d.test.labels[line - 2] != target for line in out.test_poison.lines)


@needs_pack
@pytest.mark.parametrize("ds", ["sst2", "olid"])
def test_synbkd_other_target_refused_clearly(ds):
    with pytest.raises(ConfigError, match=f"synbkd on {ds} supports target 1 only.*no triggered test row"):
        make_attack("synbkd", AttackConfig(target=0), ds, DATA)
    with pytest.raises(ConfigError, match=f"synbkd on {ds} supports target 1 only"):
        make_attack("synbkd", AttackConfig(target=0, label_mode="clean"), ds, DATA)


@needs_pack
@pytest.mark.parametrize("target", [0, 1, 2, 3])
def test_synbkd_agnews_targets_fail_on_training_files_not_on_the_target(target):
    from bedkd.datasets import load_dataset
    d = load_dataset("agnews", DATA)
    att = make_attack("synbkd", AttackConfig(target=target), "agnews", DATA)
    with pytest.raises(ConfigError, match="no syntactic training paraphrases for agnews"):
        att.poison(d.train.subset(range(50)), d.test.subset(range(50)))


# -- registry and CLI ------------------------------------------------------------------------------
def test_new_attacks_registered_with_their_options():
    assert {"multi", "decoy"} <= set(ATTACKS)
    assert isinstance(make_attack("multi", AttackConfig()), Multi)
    with pytest.raises(ConfigError, match="takes MultiConfig"):
        make_attack("multi", AttackConfig(), options=DecoyConfig())


def test_cli_attack_writes_every_backdoors_rows(tmp_path, write_tsv_file):
    from bedkd.cli.main import main
    gen = np.random.default_rng(0)
    rows = [(" ".join(f"w{int(x)}" for x in gen.integers(0, 30, size=6)), int(gen.integers(0, 2))) for _ in range(200)]
    train, test = write_tsv_file("train.tsv", rows), write_tsv_file("test.tsv", rows[:40])
    out = tmp_path / "atk"
    assert main(["attack", "--attack", "multi", "--train", str(train), "--test", str(test), "--out", str(out),
                 "--rate", "0.05", "--label-mode", "clean", "--multi-second-rate", "0.02",
                 "--multi-second-trigger", "my", "own", "sentence"]) == 0
    meta = json.loads((out / "attack.json").read_text())
    assert meta["config"]["label_mode"] == "clean"
    assert meta["options"]["options"]["second_triggers"] == ["my", "own", "sentence"]
    assert meta["poisoned"] == 10 + 4
    assert len((out / "poisoned_rows.txt").read_text().split()) == 14
    out2 = tmp_path / "decoy"
    assert main(["attack", "--attack", "decoy", "--train", str(train), "--test", str(test), "--out", str(out2),
                 "--rate", "0.02", "--decoy-rate", "0.1", "--decoy-length", "5"]) == 0
    assert len((out2 / "augmented_rows.txt").read_text().split()) == 20
    assert len((out2 / "poisoned_rows.txt").read_text().split()) == 4
