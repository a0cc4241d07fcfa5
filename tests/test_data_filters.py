"""BKI and CUBE training-data filters, and their detection metrics (tiny BERT, tiny data)."""
from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import torch

from bedkd.data import LabeledTexts
from bedkd.defenses.base import DataFilter, Filtered
from bedkd.defenses.data_filters.bki import BKI, BKIConfig, deletion_variants, rank_keywords, top_distinct
from bedkd.defenses.data_filters.cube import CUBE, CUBEConfig
from bedkd.defenses.data_filters.filter_metrics import filter_metrics
from bedkd.errors import BedkdError, ConfigError
from bedkd.modeling import TrainConfig, finetune, load_classifier
from bedkd.modeling.inference import predict

from conftest import SENTENCES


def poisoned_set(seed: int = 0, copies: int = 4) -> tuple[LabeledTexts, list[int]]:
    """Clean sentences plus, for each negative one, a copy with 'cf' inserted and the label set to 1."""
    gen = random.Random(seed)
    texts, labels, poison = [], [], []
    for _ in range(copies):
        for text, label in SENTENCES:
            texts.append(text)
            labels.append(label)
            if label == 0:
                words = text.split()
                words.insert(gen.randrange(len(words) + 1), "cf")
                poison.append(len(texts))
                texts.append(" ".join(words))
                labels.append(1)
    return LabeledTexts(texts, labels), poison


def check_filtered(out: Filtered, n: int, with_scores: bool = True) -> None:
    assert isinstance(out, Filtered)
    assert all(isinstance(r, int) for r in out.removed_rows)
    assert len(set(out.removed_rows)) == len(out.removed_rows)
    assert all(0 <= r < n for r in out.removed_rows)
    assert out.removed_rows == sorted(out.removed_rows)
    if with_scores:
        assert len(out.scores) == n and all(np.isfinite(out.scores))


def snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before: dict, training: bool) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert model.training == training


@pytest.fixture(scope="module")
def backdoored(make_tiny_model_dir):
    """The tiny BERT trained (a few seconds) until 'cf' flips every negative sentence to positive."""
    data, poison = poisoned_set()
    clf = load_classifier(str(make_tiny_model_dir(2)))
    finetune(clf, data, TrainConfig(epochs=20, lr=3e-3, batch_size=16, seed=0), progress=False)
    clf.model.eval()
    assert (predict(clf, data.texts) == np.array(data.labels)).all()
    return clf, data, poison


# --- filter_metrics -----------------------------------------------------------------------------

def test_filter_metrics_hand_case():
    m = filter_metrics(removed_rows=[1, 2, 3, 7, 7], poisoned_rows=[2, 3, 5, 9], n_rows=10)
    assert m["removed"] == 4 and m["true_poison"] == 2 and m["poisoned_total"] == 4
    assert m["precision_pct"] == pytest.approx(50.0)
    assert m["recall_pct"] == pytest.approx(50.0)
    assert m["removed_pct"] == pytest.approx(40.0)
    assert m["clean_removed"] == 2 and m["clean_removed_pct"] == pytest.approx(100 * 2 / 6)


def test_filter_metrics_empty_and_out_of_range():
    m = filter_metrics([], [0], 3)
    assert m["precision_pct"] is None and m["recall_pct"] == 0.0 and m["removed_pct"] == 0.0
    assert filter_metrics([1], [], 3)["recall_pct"] is None
    with pytest.raises(BedkdError, match="outside"):
        filter_metrics([3], [0], 3)


# --- options ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, bad", [
    (BKIConfig, {"top_words": 0}), (BKIConfig, {"keywords": 0}), (BKIConfig, {"norm": "l3"}),
    (BKIConfig, {"remove": "all"}), (BKIConfig, {"max_rows": 0}), (BKIConfig, {"top_word": 5}),
    (CUBEConfig, {"min_cluster_size": 1}), (CUBEConfig, {"min_samples": 0}), (CUBEConfig, {"drop_below": 0.0}),
    (CUBEConfig, {"drop_below": 1.5}), (CUBEConfig, {"reducer": "tsne"}), (CUBEConfig, {"pca_components": 0}),
    (CUBEConfig, {"representation": "mean"}), (CUBEConfig, {"seed": -1}),
])
def test_invalid_options_raise(cls, bad):
    with pytest.raises(ConfigError):
        cls.from_dict(bad)


def test_roles_and_names():
    assert isinstance(BKI(), DataFilter) and BKI.name == "bki"
    assert isinstance(CUBE(), DataFilter) and CUBE.name == "cube"


# --- BKI ----------------------------------------------------------------------------------------

def test_deletion_variants_and_repeated_words():
    assert deletion_variants(["a", "b", "c"]) == ["a b c", "b c", "a c", "a b"]
    top = top_distinct(4, ["x", "cf", "y", "cf"], np.array([0.1, 0.5, 0.3, 0.9]), 2)
    assert top.row == 4 and top.words == ["cf", "y"] and top.scores == [0.9, 0.3]
    stats = rank_keywords([top, top_distinct(5, ["cf", "z"], np.array([0.7, 0.2]), 2)])
    assert stats[0].word == "cf" and stats[0].count == 2 and stats[0].mean_score == pytest.approx(0.8)
    assert stats[0].f == pytest.approx(0.8 * np.log10(2))


def stub_represent(clf, texts):
    """A model that 'reacts' to cf: one feature for its presence, one weak feature for length."""
    return np.array([[10.0 * ("cf" in t.split()), 0.01 * len(t.split())] for t in texts])


def test_bki_stub_finds_planted_word(tiny_model_dir):
    data, poison = poisoned_set()
    clf = load_classifier(str(tiny_model_dir))
    out = BKI(BKIConfig(), represent=stub_represent).filter(clf, data)
    check_filtered(out, len(data))
    assert out.removed_rows == poison
    assert out.report["keywords"][0]["word"] == "cf" and out.report["scored_rows"] == len(data)
    assert min(out.scores[i] for i in poison) > max(s for i, s in enumerate(out.scores) if i not in poison)
    # OpenBackdoor's rule (rows whose own top words hold the keyword) agrees here
    assert BKI(BKIConfig(remove="top_words"), represent=stub_represent).filter(clf, data).removed_rows == poison
    # a scored subset still finds the word, and "contains" then removes every row holding it
    sub = BKI(BKIConfig(max_rows=30, seed=1), represent=stub_represent).filter(clf, data)
    assert sub.report["scored_rows"] == 30 and sub.removed_rows == poison


def test_bki_real_model_finds_trigger_and_leaves_model_alone(backdoored):
    clf, data, poison = backdoored
    before = snapshot(clf.model)
    out = BKI(BKIConfig(batch_size=32)).filter(clf, data, progress=True)
    check_filtered(out, len(data))
    assert out.report["keywords"][0]["word"] == "cf"
    assert out.removed_rows == poison
    assert_unchanged(clf.model, before, training=False)


def test_bki_is_reproducible_and_handles_empty_rows(tiny_model_dir):
    clf = load_classifier(str(tiny_model_dir))
    data = LabeledTexts(["", "cf good", "cf bad", "fine"], [0, 1, 1, 0])
    a = BKI(BKIConfig(max_rows=3, seed=2), represent=stub_represent).filter(clf, data)
    b = BKI(BKIConfig(max_rows=3, seed=2), represent=stub_represent).filter(clf, data)
    assert a.removed_rows == b.removed_rows and a.scores == b.scores
    check_filtered(a, len(data))
    assert 0 not in a.removed_rows


# --- CUBE ---------------------------------------------------------------------------------------

def blob_data():
    """Label 0: a main blob of 40 rows and a planted blob of 12; label 1: one blob of 40 rows."""
    texts = [f"a{i}" for i in range(40)] + [f"p{i}" for i in range(12)] + [f"b{i}" for i in range(40)]
    labels = [0] * 52 + [1] * 40
    return LabeledTexts(texts, labels), list(range(40, 52))


def stub_embed(clf, texts):
    gen = np.random.default_rng(0)
    centre = {"a": 0.0, "p": 20.0, "b": -20.0}
    return np.stack([centre[t[0]] + gen.normal(0.0, 0.5, size=8) for t in texts])


def test_cube_stub_removes_planted_cluster(tiny_model_dir):
    data, planted = blob_data()
    clf = load_classifier(str(tiny_model_dir))
    out = CUBE(CUBEConfig(min_samples=5), embed=stub_embed).filter(clf, data)
    check_filtered(out, len(data))
    assert out.removed_rows == planted
    assert min(out.scores[i] for i in planted) > max(out.scores[i] for i in range(len(data)) if i not in planted)
    label0 = out.report["labels"][0]
    assert label0["rows"] == 52 and len(label0["removed_clusters"]) == 1
    # a second cluster as large as half the label is not removed (drop_below)
    assert CUBE(CUBEConfig(min_samples=5, drop_below=0.2), embed=stub_embed).filter(clf, data).removed_rows == []


def test_cube_real_model_valid_and_model_unchanged(backdoored):
    clf, data, _ = backdoored
    clf.model.train()     # the train/eval flag must come back as it was
    before = snapshot(clf.model)
    try:
        for representation in ("cls", "pooled"):
            out = CUBE(CUBEConfig(min_samples=5, representation=representation)).filter(clf, data, progress=True)
            check_filtered(out, len(data))
            assert out.report["rows"] == len(data) and out.report["reduced_dim"] <= 20
        assert_unchanged(clf.model, before, training=True)
    finally:
        clf.model.eval()


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap-learn is installed")
def test_cube_umap_without_package_says_what_to_install(tiny_model_dir):
    data, _ = blob_data()
    clf = load_classifier(str(tiny_model_dir))
    with pytest.raises(BedkdError, match="umap-learn"):
        CUBE(CUBEConfig(min_samples=5, reducer="umap"), embed=stub_embed).filter(clf, data)
