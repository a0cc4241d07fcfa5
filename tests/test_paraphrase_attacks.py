"""SynBkd / StyleBkd alignment and poisoning, checked against the real data pack (text files only)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bedkd.attacks import AttackConfig, StyleBkd, SynBkd, make_attack
from bedkd.attacks.paraphrase import MERGED_RUNS, monotone_with_merges, read_cached
from bedkd.data import random_limit, read_labeled
from bedkd.datasets import DATASETS, available_styles, clean_path, load_dataset, register_dataset
from bedkd.errors import BedkdError, ConfigError, InputError

DATA = Path(os.environ.get("BEDKD_DATA_DIR") or "/work/shared/data")
pytestmark = pytest.mark.skipif(not (DATA / "sst2" / "clean" / "train.tsv").is_file(),
                                reason=f"data pack not found at {DATA}")

# Row counts of the monotone files, from the pack README (section 4 / A1).
MONOTONE_ROWS = {("sst2", "train"): 6805, ("sst2", "test"): 1808, ("olid", "train"): 11631, ("olid", "dev"): 1315,
                 ("olid", "test"): 851, ("agnews", "train"): 10941, ("agnews", "dev"): 9745, ("agnews", "test"): 7392}
STOP = set("a an the and or of to in on at for is are was were be it its this that with as by from i you he she "
           "we they not n't 's".split())


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in STOP}


def jaccard(a: str, b: str) -> float:
    x, y = content_words(a), content_words(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def overlap_vs_shifted(pairs: dict[int, str], clean_texts: list[str]) -> tuple[float, float]:
    """Mean Jaccard of (paraphrase, its clean row) against (paraphrase, the next clean row).

    At most about 1500 evenly spaced pairs are scored, to keep the test fast."""
    rows = [r for r in sorted(pairs) if r + 1 < len(clean_texts)]
    rows = rows[::max(1, len(rows) // 1500)]
    aligned = sum(jaccard(pairs[r], clean_texts[r]) for r in rows) / len(rows)
    shifted = sum(jaccard(pairs[r], clean_texts[r + 1]) for r in rows) / len(rows)
    return aligned, shifted


def style_files():
    for ds in ("sst2", "olid", "agnews"):
        for style in available_styles(ds, DATA):
            for split in ("train", "dev", "test"):
                if (DATA / ds / f"style-{style}" / f"{split}.tsv").is_file():
                    yield ds, style, split


def data_rows(path: Path) -> int:
    return path.read_bytes().count(b"\n") - 1    # LF-terminated, one header line


def clean(ds: str, split: str):
    return read_cached(clean_path(ds, split, DATA))


def attack(name="stylebkd", ds="sst2", style=None, **cfg):
    return make_attack(name, AttackConfig(**cfg, style=style), ds, DATA)


# -- datasets -------------------------------------------------------------------------------------
def test_datasets_registry_and_styles(monkeypatch):
    d = load_dataset("olid", DATA)
    assert (d.name, d.num_labels, len(d.train), len(d.dev), len(d.test)) == ("olid", 2, 11915, 1323, 859)
    assert DATASETS["agnews"].num_labels == 4 and DATASETS["agnews"].syntactic_target == 0
    assert DATASETS["sst2"].label_names == ("negative", "positive")
    # the pack skipped some splits (its README, section 6): SST-2's tweets has no test file, OLID's poetry dev only
    assert available_styles("sst2", DATA) == ["bible", "lyrics", "poetry", "shakespeare"]
    assert available_styles("olid", DATA) == ["bible", "lyrics", "shakespeare", "tweets"]
    monkeypatch.setenv("BEDKD_DATA_DIR", str(DATA))
    assert load_dataset("sst2").train.source == str(DATA / "sst2" / "clean" / "train.tsv")
    monkeypatch.setenv("BEDKD_DATA_DIR", str(DATA / "nowhere"))
    with pytest.raises(BedkdError, match="nowhere"):
        load_dataset("sst2")
    monkeypatch.delenv("BEDKD_DATA_DIR")
    with pytest.raises(BedkdError, match="BEDKD_DATA_DIR"):
        load_dataset("sst2")
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_dataset("imdb", DATA)


def test_register_user_dataset():
    files = [DATA / "sst2" / "clean" / f"{s}.tsv" for s in ("train", "dev", "test")]
    try:
        register_dataset("my_sst", *files)
        d = load_dataset("my_sst")
        assert d.num_labels == 2 and len(d.test) == 1821
        with pytest.raises(ConfigError, match="already registered"):
            register_dataset("my_sst", *files)
        with pytest.raises(ConfigError, match="user dataset"):
            attack("synbkd", "my_sst")
    finally:
        DATASETS.pop("my_sst", None)


# -- alignment against the files -----------------------------------------------------------------
def test_merged_run_rule_reproduces_monotone_row_counts():
    for (ds, split), rows in MONOTONE_ROWS.items():
        sources, merged = monotone_with_merges(ds, split, len(clean(ds, split)))
        assert len(sources) == rows and len(merged) == len(MERGED_RUNS[(ds, split)])
        assert sources == tuple(sorted(sources)), "monotone"
    assert data_rows(DATA / "sst2" / "style-lyrics" / "train.tsv") == 6805
    for ds, style, split in style_files():
        n = data_rows(DATA / ds / f"style-{style}" / f"{split}.tsv")
        assert n in (len(clean(ds, split)), MONOTONE_ROWS.get((ds, split))), (ds, style, split)


@pytest.mark.parametrize("ds,style,split", list(style_files()))
def test_style_alignment_labels_and_overlap(ds, style, split):
    al = StyleBkd(AttackConfig(), DATA, ds, style).alignment(split)
    ref = read_labeled(DATA / ds / f"style-{style}" / f"{split}.tsv")   # independent read
    c = clean(ds, split)
    assert ref.texts == al.file.texts and len(al.sources) == len(ref)
    for row, src in enumerate(al.sources):
        last = al.merged[row][1] if row in al.merged else src
        assert ref.labels[row] == c.labels[last]
    pairs = {r: t for r, t in enumerate(al.paraphrases(len(c))) if t}
    aligned, shifted = overlap_vs_shifted(pairs, c.texts)
    assert aligned > 0.15 and aligned > 4 * shifted, (aligned, shifted)


def test_merged_rows_left_out_unless_asked():
    al = StyleBkd(AttackConfig(), DATA, "olid", "lyrics").alignment("train")
    n = len(clean("olid", "train"))
    default, with_merged = al.paraphrases(n), al.paraphrases(n, include_merged=True)
    assert default[0] is None, "olid clean row 0 is lost"
    for row, (a, b) in al.merged.items():
        assert default[a] is None and with_merged[a] == al.file.texts[row]
        assert all(x is None for x in with_merged[a + 1:b + 1])
    assert default[1] == al.file.texts[0]


def test_sst2_syntactic_all_matches_hiddenkiller_train():
    full = read_labeled(DATA / "sst2" / "syntactic-all" / "train.tsv")
    hk = read_labeled(DATA / "sst2" / "syntactic" / "train.tsv")
    assert full.texts[:1383] == hk.texts[:1383]
    assert full.labels == clean("sst2", "train").labels
    al = SynBkd(AttackConfig(), DATA, "sst2").alignment("train")
    assert al.file.texts == full.texts and al.sources == tuple(range(6920))


def test_olid_syntactic_train_mapping():
    raw = (DATA / "olid" / "syntactic" / "train.tsv").read_bytes().split(b"\n")[1:]
    clean_raw = (DATA / "olid" / "clean" / "train.tsv").read_bytes().split(b"\n")[1:]
    assert all(raw[j] == clean_raw[j - 1] for j in range(2383, 11916))
    al = SynBkd(AttackConfig(), DATA, "olid").alignment("train")
    assert al.sources[0] is None and al.sources[1] == 0 and al.sources[2382] == 2381
    assert all(s is None for s in al.sources[2383:])
    c = clean("olid", "train")
    aligned, shifted = overlap_vs_shifted({al.sources[j]: al.file.texts[j] for j in range(1, 2383)}, c.texts)
    assert aligned > 0.15 and aligned > 4 * shifted


@pytest.mark.parametrize("ds,split", [("sst2", "test"), ("olid", "test"), ("agnews", "test"),
                                      ("sst2", "dev"), ("olid", "dev")])
def test_syntactic_eval_mapping(ds, split):
    al = SynBkd(AttackConfig(), DATA, ds).alignment(split)
    c, target = clean(ds, split), DATASETS[ds].syntactic_target
    assert all(y == target for y in al.file.labels)
    pairs = {s: al.file.texts[j] for j, s in enumerate(al.sources) if s is not None}
    if split == "test":
        assert all(c.labels[s] != target for s in pairs), "test paraphrases come from non-target rows"
    aligned, shifted = overlap_vs_shifted(pairs, c.texts)
    assert aligned > 0.15 and aligned > 4 * shifted, (aligned, shifted)
    if ds == "olid" and split == "test":
        assert al.sources[4] is None and len(pairs) == 619
    if ds == "agnews":
        assert 0 not in pairs and len(pairs) == 5699


# -- poisoning ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,ds,style,target", [("synbkd", "sst2", None, 1), ("synbkd", "olid", None, 1),
                                                  ("stylebkd", "sst2", None, 1), ("stylebkd", "agnews", "lyrics", 2),
                                                  ("stylebkd", "olid", "tweets", 0)])
def test_poisoned_rows_carry_target_and_paraphrase(name, ds, style, target):
    d = load_dataset(ds, DATA)
    att = attack(name, ds, style, rate=0.1, target=target, seed=3)
    out = att.poison(d.train, d.test)
    assert len(out.poisoned_rows) == round(0.1 * len(d.train))
    para = att.paraphrases("train")
    for r in out.poisoned_rows:
        assert d.train.labels[r] != target and out.train.labels[r] == target
        assert out.train.texts[r] == para[r] and out.train.texts[r] != d.train.texts[r] and out.train.texts[r].strip()
    untouched = set(range(len(d.train))) - set(out.poisoned_rows)
    assert all(out.train.texts[i] == d.train.texts[i] and out.train.labels[i] == d.train.labels[i]
               for i in untouched)
    src = [line - 2 for line in out.test_poison.lines]
    assert src and all(d.test.labels[s] != target for s in src)
    assert all(y == target for y in out.test_poison.labels)
    test_para = att.paraphrases("test")
    assert out.test_poison.texts == [test_para[s] for s in src]


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2])
def test_rate_honoured_on_a_random_subset(rate):
    d = load_dataset("sst2", DATA)
    train = d.train.subset(random_limit(d.train, 1000, seed=1))
    test = d.test.subset(random_limit(d.test, 300, seed=2))
    out = attack("stylebkd", rate=rate).poison(train, test)
    assert len(out.poisoned_rows) == round(rate * 1000)
    para = attack("stylebkd").paraphrases("train")
    assert all(out.train.texts[r] == para[train.lines[r] - 2] for r in out.poisoned_rows)
    assert len(out.test_poison) <= sum(y != 1 for y in test.labels)


def test_same_seed_same_result():
    d = load_dataset("olid", DATA)
    a = attack("synbkd", "olid", rate=0.05, seed=7).poison(d.train, d.test)
    b = attack("synbkd", "olid", rate=0.05, seed=7).poison(d.train, d.test)
    c = attack("synbkd", "olid", rate=0.05, seed=8).poison(d.train, d.test)
    assert a.poisoned_rows == b.poisoned_rows and a.train.texts == b.train.texts
    assert a.test_poison.texts == b.test_poison.texts
    assert a.poisoned_rows != c.poisoned_rows


# -- errors ---------------------------------------------------------------------------------------
def test_agnews_synbkd_training_raises_clear_error():
    d = load_dataset("agnews", DATA)
    att = attack("synbkd", "agnews", target=0)
    with pytest.raises(ConfigError, match="no syntactic training paraphrases for agnews"):
        att.poison(d.train, d.test)
    assert len(att.alignment("test").sources) == 5699   # test paraphrases still usable


def test_missing_style_files_and_bad_inputs():
    d = load_dataset("sst2", DATA)
    with pytest.raises(ConfigError, match="style-tweets/test.tsv is missing"):    # refused before any read
        attack("stylebkd", style="tweets")
    with pytest.raises(ConfigError, match="style-poetry/train.tsv is missing .*: bible, lyrics, shakespeare, tweets$"):
        attack("stylebkd", "olid", "poetry")
    with pytest.raises(ConfigError, match="no style 'gothic'"):
        attack("stylebkd", style="gothic")
    with pytest.raises(InputError, match="clean sst2 train"):
        attack().poison(d.dev, d.test)
    with pytest.raises(InputError, match="clean sst2 train"):
        attack().poison(load_dataset("olid", DATA).train, d.test)
    with pytest.raises(ConfigError, match="only .* rows"):
        attack("synbkd", "olid", rate=0.2).poison(load_dataset("olid", DATA).train, load_dataset("olid", DATA).test)
    with pytest.raises(ConfigError, match="name the dataset"):
        make_attack("synbkd", AttackConfig())
    with pytest.raises(ConfigError, match="no style"):
        make_attack("synbkd", AttackConfig(style="bible"), "sst2", DATA)
    with pytest.raises(ConfigError, match="trigger"):
        attack(triggers=["cf"])
    with pytest.raises(ConfigError, match="not a class"):
        attack(target=2)


# -- a word trigger beside a paraphrase trigger (multi) -----------------------------------------------
@pytest.mark.parametrize("second,style", [("synbkd", None), ("stylebkd", "lyrics")])
def test_multi_word_and_paraphrase_backdoors(second, style):
    """BadNets of target 0 beside a paraphrase backdoor of target 1: disjoint rows, each with its
    own trigger, label and triggered test rows; the paraphrase files join the files read."""
    from bedkd.attacks import MultiConfig
    d = load_dataset("sst2", DATA)
    train = d.train.subset(random_limit(d.train, 1500, seed=0))
    own = MultiConfig(second=second, second_target=1, second_rate=0.05, second_style=style)
    att = make_attack("multi", AttackConfig(rate=0.1, target=0, seed=2), "sst2", DATA, own)
    out = att.poison(train, d.test)
    first, two = out.backdoors
    assert (first.name, first.target, two.name, two.target) == ("badnets", 0, second, 1)
    assert len(first.poisoned_rows) == 150 and len(two.poisoned_rows) == 75
    assert not set(first.poisoned_rows) & set(two.poisoned_rows)
    para = att.second_attack(2).paraphrases("train")
    for r in two.poisoned_rows:
        assert train.labels[r] == 0 and out.train.labels[r] == 1
        assert out.train.texts[r] == para[train.lines[r] - 2] != train.texts[r]
    for r in first.poisoned_rows:
        assert train.labels[r] == 1 and out.train.labels[r] == 0 and out.train.texts[r] != train.texts[r]
    test_para = att.second_attack(2).paraphrases("test")
    assert two.test_poison.texts == [test_para[line - 2] for line in two.test_poison.lines]
    assert set(two.test_poison.labels) == {1}
    folder = f"style-{style}" if style else "syntactic"     # sst2's syntactic training file: syntactic-all
    read = att.files_read()
    assert sorted(read) == ["second_test", "second_train"] and all(Path(p).parent.name.startswith(folder)
                                                                   for p in read.values())
    assert make_attack("multi", AttackConfig(), "sst2", DATA).files_read() == {}


def test_multi_paraphrase_second_errors():
    from bedkd.attacks import Multi, MultiConfig
    with pytest.raises(ConfigError, match="name the dataset"):
        Multi(AttackConfig(), MultiConfig(second="stylebkd"))
    with pytest.raises(ConfigError, match="no trigger words"):
        MultiConfig(second="synbkd", second_triggers=["cf"])
    with pytest.raises(ConfigError, match="second_style is for second stylebkd"):
        MultiConfig(second="synbkd", second_style="lyrics")
    with pytest.raises(ConfigError, match="no style 'gothic'"):
        Multi(AttackConfig(), MultiConfig(second="stylebkd", second_style="gothic"), "sst2", DATA)
    with pytest.raises(ConfigError, match="synbkd on olid supports target 1 only"):
        Multi(AttackConfig(target=1), MultiConfig(second="synbkd", second_target=0), "olid", DATA)
