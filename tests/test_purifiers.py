"""The baseline purifiers (fine-tuning, fine-pruning, KD, NAD) on a tiny random BERT and tiny data."""
import numpy as np
import pytest
import torch
from torch import nn

from bedkd.data import LabeledTexts
from bedkd.defenses.base import Purified
from bedkd.defenses.purifiers.bedkd import AKDConfig
from bedkd.defenses.clean_split import CleanBudget
from bedkd.defenses.data_filters.dmm import DMMConfig
from bedkd.defenses.purifiers.fine_pruning import FinePruning, FinePruningConfig, find_ffn_blocks, mean_activations, \
    prune_ratios
from bedkd.defenses.purifiers.finetuning import FineTuning, FineTuningConfig
from bedkd.defenses.purifiers.kd import KDConfig, KnowledgeDistillation
from bedkd.defenses.purifiers.nad import NAD, NADConfig, attention_loss, attention_map
from bedkd.errors import BedkdError, ConfigError, InputError
from bedkd.modeling import load_classifier
from bedkd.modeling.batching import collate, encode

POS = ["good", "great", "fine", "nice", "happy", "love"]
NEG = ["bad", "awful", "poor", "sad", "hate", "boring"]
FILL = ["the", "movie", "plot", "was", "a", "story", "and", "actor", "film", "it"]

FAST = dict(trust_per_class=8, val_per_class=4, epochs=2, lr=1e-3, seed=3)
PURIFIERS = {
    "finetune": lambda **kw: FineTuning(FineTuningConfig(**{**FAST, **kw})),
    "fineprune": lambda **kw: FinePruning(FinePruningConfig(**{**FAST, "prune_ratio": 0.5, "prune_step": 0.25,
                                                                **kw})),
    "kd": lambda **kw: KnowledgeDistillation(KDConfig(**{**FAST, **kw})),
    "nad": lambda **kw: NAD(NADConfig(**{**FAST, "teacher_epochs": 1, **kw})),
}


def sentiment(n_per_class, seed=0, k=2):
    """Class c texts hold words of sentiment list c (n_per_class rows per class, shuffled)."""
    gen = np.random.default_rng(seed)
    lexicons = [NEG, POS, ["world", "war", "nation"]][:k]
    labels = [y for y in range(k) for _ in range(n_per_class)]
    gen.shuffle(labels)
    texts = []
    for y in labels:
        words = list(gen.choice(FILL, size=3)) + list(gen.choice(lexicons[y], size=2))
        gen.shuffle(words)
        texts.append(" ".join(words))
    return LabeledTexts(texts, [int(y) for y in labels], f"clean-{seed}.tsv")


@pytest.fixture(scope="module")
def suspect(tiny_model_dir):
    return load_classifier(str(tiny_model_dir))


def _state(clf):
    return {k: v.detach().clone() for k, v in clf.model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", PURIFIERS)
def test_purifier_returns_a_new_model_and_leaves_the_input_alone(name, suspect):
    clean = sentiment(20, seed=1)
    before = _state(suspect)
    purifier = PURIFIERS[name]()
    assert purifier.name == name
    result = purifier.purify(suspect, clean, progress=False)
    assert isinstance(result, Purified)
    assert result.classifier is not suspect and result.classifier.model is not suspect.model
    assert _same(before, _state(suspect))
    assert not _same(before, _state(result.classifier)), "the purifier trained nothing"
    rep = result.report
    assert rep["data"]["trust_rows"] == 8 * 2 and rep["data"]["val_rows"] == 4 * 2
    assert rep["data"]["clean_budget"] == CleanBudget.of(purifier.config).to_dict()   # the rows' one record
    assert rep["config"] == purifier.config.to_dict()
    assert rep["seconds"]["total"] > 0
    assert 1 <= rep["selected_epoch"] <= 2 and len(rep["epochs"]) == 2


@pytest.mark.parametrize("name", PURIFIERS)
def test_same_seed_gives_identical_weights(name, suspect):
    clean = sentiment(12, seed=2)
    first = PURIFIERS[name]().purify(suspect, clean).classifier
    second = PURIFIERS[name]().purify(suspect, clean).classifier
    assert _same(_state(first), _state(second))


def test_budget_is_capped_by_the_rows_there_are(suspect):
    clean = sentiment(6, seed=4)          # 6 per class: 4 held out leave 2 to train on
    rep = FineTuning(FineTuningConfig(**{**FAST, "trust_per_class": 320, "epochs": 1})).purify(suspect, clean).report
    assert rep["data"]["trust_rows"] == 2 * 2 and rep["data"]["val_rows"] == 4 * 2


@pytest.mark.parametrize("name", PURIFIERS)
def test_too_little_clean_data_is_refused(name, suspect):
    with pytest.raises(InputError, match="class 0 has 4 clean rows"):
        PURIFIERS[name](val_per_class=4).purify(suspect, sentiment(4, seed=5))
    one_class = LabeledTexts(["good film", "great plot"] * 6, [1] * 12, "clean.tsv")
    with pytest.raises(InputError, match="class 0"):
        PURIFIERS[name]().purify(suspect, one_class)


def test_invalid_options_are_refused():
    for make in (lambda: FineTuningConfig(lr=0.0), lambda: FineTuningConfig(val_per_class=0),
                 lambda: FinePruningConfig(prune_ratio=1.5), lambda: FinePruningConfig(prune_step=0.0),
                 lambda: FinePruningConfig(layers=0), lambda: KDConfig(temperature=0.0),
                 lambda: KDConfig(ce_weight=1.5), lambda: NADConfig(beta=-1.0), lambda: NADConfig(power=0.0),
                 lambda: NADConfig(selection="best"), lambda: NADConfig.from_dict({"betta": 1.0})):
        with pytest.raises(ConfigError):
            make()


def test_fine_pruning_zeroes_the_least_active_neurons_and_keeps_them_zero(suspect):
    clean = sentiment(20, seed=6)
    cfg = FinePruningConfig(**{**FAST, "prune_ratio": 0.5, "prune_step": 0.5, "prune_acc_drop": 100.0})
    result = FinePruning(cfg).purify(suspect, clean)
    pruning = result.report["pruning"]
    size = suspect.model.config.intermediate_size
    assert pruning["pruned_per_layer"] == [size // 2]
    last = find_ffn_blocks(result.classifier.model)[-1]
    assert pruning["layers"] == [last.name]
    pruned = torch.tensor(pruning["pruned_neurons"][last.name])

    # The pruned neurons are the least active of the suspicious model on the training rows.
    split = CleanBudget.of(cfg).split(clean)
    ids = encode(suspect.tokenizer, [clean.texts[i] for i in split.trust], cfg.max_length)
    means = mean_activations(suspect.model, find_ffn_blocks(suspect.model)[-1:], ids, suspect.tokenizer.pad_token_id)[0]
    assert set(pruned.tolist()) == set(torch.argsort(means, stable=True)[:size // 2].tolist())

    # After fine-tuning, their weights and activations are still exactly zero, the others are not.
    assert torch.all(last.up.weight[pruned] == 0) and torch.all(last.up.bias[pruned] == 0)
    assert torch.all(last.down.weight[:, pruned] == 0)
    acts = mean_activations(result.classifier.model, [last], ids, suspect.tokenizer.pad_token_id)[0]
    kept = torch.ones(size, dtype=torch.bool)
    kept[pruned] = False
    assert torch.all(acts[pruned] == 0) and torch.any(acts[kept] != 0)
    assert not torch.equal(last.down.weight[:, kept], find_ffn_blocks(suspect.model)[-1].down.weight[:, kept])


@pytest.mark.parametrize("scripted, ratio", [((0.9, 0.9, 0.88, 0.8, 0.9), 0.5),   # stops at 0.75
                                              ((0.9, 0.85, 0.9, 0.9, 0.9), 0.0),   # first step too costly
                                              ((0.9, 0.9, 0.9, 0.9, 0.87), 0.8)])  # reaches prune_ratio
def test_fine_pruning_stops_before_the_accuracy_threshold(scripted, ratio, suspect, monkeypatch):
    import bedkd.defenses.purifiers.fine_pruning as fp
    values = iter(scripted)       # the unpruned model's validation accuracy, then one per step
    monkeypatch.setattr(fp, "accuracy", lambda *args: next(values))
    cfg = FinePruningConfig(**{**FAST, "prune_ratio": 0.8, "prune_step": 0.25, "prune_acc_drop": 4.0, "epochs": 1})
    rep = FinePruning(cfg).purify(suspect, sentiment(12, seed=6)).report
    pruning = rep["pruning"]
    assert pruning["ratio"] == ratio and pruning["base_val_acc"] == 0.9
    assert pruning["pruned_per_layer"] == [round(ratio * suspect.model.config.intermediate_size)]
    stopped = ratio < 0.8
    assert [s["ratio"] for s in pruning["steps"]] == [0.25, 0.5, 0.75, 0.8][:len(pruning["steps"])]
    assert len(pruning["steps"]) == (int(ratio / 0.25) + 1 if stopped else 4)
    assert ("warning" in rep) == (ratio == 0.0)
    assert prune_ratios(0.5, 0.5) == [0.5]


def test_fine_pruning_needs_feed_forward_blocks():
    with pytest.raises(BedkdError, match="no feed-forward block"):
        find_ffn_blocks(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))


def test_kd_distils_on_bedkds_trust_rows(suspect, monkeypatch):
    import bedkd.defenses.purifiers.kd as kd
    seen = {}
    real = kd.teacher_targets

    def spy(model, ids, labels, pad_id, batch_size=64):
        seen["ids"], seen["labels"] = ids, list(labels)
        return real(model, ids, labels, pad_id, batch_size)

    monkeypatch.setattr(kd, "teacher_targets", spy)
    clean = sentiment(30, seed=7)
    akd = AKDConfig(trust_per_class=12, val_per_class=5, epochs=1, seed=11)
    KnowledgeDistillation(KDConfig.matching(akd)).purify(suspect, clean)
    bedkd_rows = CleanBudget.of(akd, DMMConfig().flip_per_class).split(clean).trust
    assert seen["ids"] == encode(suspect.tokenizer, [clean.texts[i] for i in bedkd_rows], akd.max_length)
    assert seen["labels"] == [clean.labels[i] for i in bedkd_rows]
    other_seed = CleanBudget.of(akd.replace(seed=akd.seed + 1)).split(clean).trust
    assert other_seed != bedkd_rows
    assert KDConfig.matching(akd).temperature == akd.temperature and KDConfig.matching(akd).lr == akd.lr


def test_nad_attention_loss_is_zero_for_the_same_model_and_positive_otherwise(suspect):
    texts = sentiment(4, seed=8).texts + ["a much longer review that goes on and on about the plot and the cast"]
    batch = collate(encode(suspect.tokenizer, texts, 32), suspect.tokenizer.pad_token_id,
                    suspect.model.device)
    other = suspect.copy()
    with torch.no_grad():
        other.model.bert.encoder.layer[-1].output.dense.weight.mul_(3.0)
        a = suspect.model(**batch, output_hidden_states=True).hidden_states
        b = suspect.model(**batch, output_hidden_states=True).hidden_states
        c = other.model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"]
    assert attention_loss(a, b, mask, layers=2, power=2.0).item() == 0.0
    assert attention_loss(a, c, mask, layers=1, power=2.0).item() > 0.0
    am = attention_map(a[-1], mask, 2.0).cpu()
    mask = mask.cpu()
    assert (mask == 0).any() and torch.all(am[mask == 0] == 0)
    assert torch.allclose(am.norm(dim=1), torch.ones(len(texts)), atol=1e-4)


def test_nad_reports_teacher_and_attention_term(suspect):
    rep = PURIFIERS["nad"]().purify(suspect, sentiment(12, seed=9)).report
    assert rep["teacher"]["selected_epoch"] == 1
    assert all(e["attention_loss"] >= 0 and abs(e["loss"] - e["ce_loss"] - e["attention_loss"]) < 1e-4
               for e in rep["epochs"])
    with pytest.raises(ConfigError, match="layers"):
        NAD(NADConfig(**{**FAST, "layers": 5})).purify(suspect, sentiment(12, seed=9))
