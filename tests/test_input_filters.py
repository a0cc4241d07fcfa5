"""ONION, STRIP, RAP input filters and evaluate_screened, on tiny models (offline, CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bedkd.data import LabeledTexts
from bedkd.defenses.base import InputFilter, Screened
from bedkd.defenses.input_filters.onion import ONION, ONIONConfig, word_scores
from bedkd.defenses.input_filters.rap import RAP, RAPConfig
from bedkd.defenses.input_filters.screening_eval import evaluate_screened
from bedkd.defenses.input_filters.strip import STRIP, STRIPConfig
from bedkd.errors import BedkdError, ConfigError, InputError
from bedkd.modeling import load_classifier, predict
from bedkd.modeling.language_model import load_language_model

WORDS = ("a gripping and beautifully acted film dull lifeless far too long one of the best movies year plot "
         "makes no sense warm funny full heart wanted my two hours back joy from start finish tedious badly "
         "written smart moving surprising mess noise cast wonderful boring beyond belief").split()


def make_texts(n: int, seed: int, length: int = 8) -> list[str]:
    gen = np.random.default_rng(seed)
    return [" ".join(gen.choice(WORDS, size=length)) for _ in range(n)]


def make_clean(n: int, seed: int = 0) -> LabeledTexts:
    gen = np.random.default_rng(seed + 1)
    return LabeledTexts(make_texts(n, seed), [int(x) for x in gen.integers(0, 2, n)])


@pytest.fixture(scope="module")
def clf(make_tiny_model_dir):
    return load_classifier(str(make_tiny_model_dir(2)))


# ---------------------------------------------------------------- ONION

class StubLM:
    """Perplexity 10 + 50 per outlier word - 0.1 per word: removing an outlier lowers it by ~50,
    removing a normal word raises it by 0.1."""

    def __init__(self, outliers=("cf", "mn")):
        self.outliers = set(outliers)
        self.calls = 0

    def perplexity(self, texts, progress=False):
        self.calls += 1
        out = []
        for t in texts:
            words = t.split()
            out.append(10.0 + 50.0 * sum(w in self.outliers for w in words) - 0.1 * len(words))
        return np.asarray(out)


def test_onion_word_scores_are_leave_one_out_perplexity_drops():
    (scored,) = word_scores(StubLM(), ["the cf movie"])
    assert scored.words == ["the", "cf", "movie"]
    np.testing.assert_allclose(scored.scores, [-0.1, 49.9, -0.1])


def test_onion_removes_planted_outlier_and_keeps_clean_texts(clf):
    onion = ONION(lm=StubLM()).fit(clf, make_clean(4))
    assert onion.threshold == 0.0
    texts = ["the movie cf is great", "mn a  fine cf film", "a plain clean sentence", "single", ""]
    out = onion.screen(texts)
    assert out.texts == ["the movie is great", "a fine film", "a plain clean sentence", "single", ""]
    assert out.rejected == [False] * 5
    assert out.scores[0] == pytest.approx(49.9) and out.scores[2] == pytest.approx(-0.1)


def test_onion_threshold_above_scores_removes_nothing(clf):
    onion = ONION(ONIONConfig(threshold=60.0), lm=StubLM()).fit(clf, make_clean(4))
    assert onion.screen(["the movie cf is great"]).texts == ["the movie cf is great"]


def test_onion_calibration_uses_clean_data_only(clf):
    clean = make_clean(20)
    onion = ONION(ONIONConfig(calibrate=True, max_cacc_drop=100.0), lm=StubLM()).fit(clf, clean)
    first = onion.threshold
    assert onion.fit_report["calibrated"] and onion.fit_report["tried"]
    onion.screen(make_texts(5, seed=9))
    again = ONION(ONIONConfig(calibrate=True, max_cacc_drop=100.0), lm=StubLM()).fit(clf, clean)
    assert onion.threshold == first == again.threshold


def test_onion_needs_a_language_model_and_fit(clf):
    with pytest.raises(ConfigError, match="language model"):
        ONION().fit(clf, make_clean(4))
    with pytest.raises(BedkdError, match="before fit"):
        ONION(lm=StubLM()).screen(["a text"])


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    """A 1-layer, 32-wide random GPT-2 saved with the MiniLM tokenizer (safetensors)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from conftest import minilm_dir
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=128))
    out = tmp_path_factory.mktemp("tiny_gpt2") / "lm"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def test_onion_smoke_with_tiny_gpt2(clf, tiny_gpt2_dir):
    lm = load_language_model(tiny_gpt2_dir)
    ppl = lm.perplexity(["a good film", "film", ""])
    assert np.all(np.isfinite(ppl[:2])) and np.all(ppl[:2] > 1.0) and np.isnan(ppl[2])
    # padding never changes a text's perplexity (computed without the memo)
    alone = lm._perplexity(["a good film"], False)[0]
    assert alone == pytest.approx(lm._perplexity(["a good film", WORDS[0] * 3 + " x y z w"], False)[0], rel=1e-4)
    onion = ONION(ONIONConfig(lm_dir=str(tiny_gpt2_dir))).fit(clf, make_clean(4))
    texts = ["the cast cf is wonderful", "boring beyond belief"]
    out = onion.screen(texts)
    assert len(out.texts) == 2 and out.rejected == [False, False]
    for before, after in zip(texts, out.texts):
        assert set(after.split()) <= set(before.split())


def test_language_model_scores_each_text_once(tiny_gpt2_dir, monkeypatch):
    lm = load_language_model(tiny_gpt2_dir)
    first = lm.perplexity(["a good film", "a bad film", "a good film"])
    assert first[0] == first[2]
    seen = []
    compute = lm._perplexity
    monkeypatch.setattr(lm, "_perplexity", lambda texts, progress: seen.append(list(texts)) or compute(texts, progress))
    again = lm.perplexity(["a bad film", "dull", "a good film", "dull"])
    assert seen == [["dull"]]                      # only the new text, once
    assert again[0] == first[1] and again[2] == first[0] and again[1] == again[3]


def test_bench_onion_cells_share_one_language_model(tiny_gpt2_dir):
    from bedkd.bench.defenses import make_spec
    spec = make_spec("onion", (ONIONConfig(lm_dir=str(tiny_gpt2_dir)),))
    first, second = spec.build(), spec.build()
    assert isinstance(first, ONION) and first is not second
    assert first.lm is second.lm and first.lm.source == str(tiny_gpt2_dir)


def test_language_model_refuses_pickle(tmp_path, tiny_gpt2_dir):
    lm = load_language_model(tiny_gpt2_dir)
    out = tmp_path / "pickled"
    out.mkdir()
    torch.save(lm.model.state_dict(), out / "pytorch_model.bin")
    lm.model.config.save_pretrained(out)
    with pytest.raises(InputError, match="pickle"):
        load_language_model(out)


# ---------------------------------------------------------------- STRIP

def test_strip_threshold_from_clean_data_only(clf):
    clean = make_clean(60)
    strip = STRIP(STRIPConfig(frr=0.1, repeat=3)).fit(clf, clean)
    threshold = strip.threshold
    assert strip.fit_report["clean_frr"] == pytest.approx(10.0, abs=5.0)
    # screening the fitting rows gives the same verdicts as in fit
    assert 100.0 * np.mean(strip.screen(clean.texts).rejected) == pytest.approx(strip.fit_report["clean_frr"])
    strip.screen(make_texts(7, seed=5))
    assert strip.threshold == threshold
    assert STRIP(STRIPConfig(frr=0.1, repeat=3)).fit(clf, clean).threshold == threshold


def test_strip_one_verdict_per_input_independent_of_batch(clf):
    strip = STRIP(STRIPConfig(repeat=3)).fit(clf, make_clean(20))
    texts = make_texts(5, seed=3) + [""]
    out = strip.screen(texts)
    assert out.texts == texts and len(out.rejected) == len(out.scores) == 6
    assert all(isinstance(r, bool) for r in out.rejected)
    assert strip.screen(texts[:1]).scores[0] == pytest.approx(out.scores[0])
    with pytest.raises(BedkdError, match="before fit"):
        STRIP().screen(["a"])


# ---------------------------------------------------------------- RAP

def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_rap_never_changes_the_given_classifier(clf):
    before = state(clf.model)
    rap = RAP(RAPConfig(epochs=2, frr=0.1)).fit(clf, make_clean(40))
    after = state(clf.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    tid = clf.tokenizer("cf", add_special_tokens=False)["input_ids"][0]
    emb_new = rap.rap_model.model.get_input_embeddings().weight[tid]
    emb_old = clf.model.get_input_embeddings().weight[tid]
    assert not torch.equal(emb_new, emb_old)
    assert emb_new.norm().item() == pytest.approx(emb_old.norm().item(), rel=1e-4)
    assert all(p.requires_grad for p in clf.model.parameters())


def test_rap_threshold_from_clean_data_only_and_one_verdict_per_input(clf):
    clean = make_clean(40)
    cfg = RAPConfig(epochs=2, frr=0.1, protect_label=1)
    rap = RAP(cfg).fit(clf, clean)
    threshold = rap.threshold
    assert rap.fit_report["clean_frr"] == pytest.approx(10.0, abs=8.0)
    texts = make_texts(6, seed=4)
    out = rap.screen(texts)
    assert out.texts == texts and len(out.rejected) == len(out.scores) == 6
    pred = predict(rap.rap_model, texts)
    assert not any(r for r, p in zip(out.rejected, pred) if p != 1)  # only the protected label is checked
    assert rap.threshold == threshold == RAP(cfg).fit(clf, clean).threshold
    with pytest.raises(BedkdError, match="before fit"):
        RAP().screen(["a"])


def test_rap_construction_lowers_its_loss(clf):
    rap = RAP(RAPConfig(epochs=4, lr=1.0)).fit(clf, make_clean(24))
    losses = [c["loss"] for c in rap.fit_report["construction"]]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_rap_rejects_bad_trigger_and_label(clf):
    with pytest.raises(ConfigError, match="one token"):
        RAP(RAPConfig(trigger="xqzvwkj")).fit(clf, make_clean(8))
    with pytest.raises(ConfigError, match="protect_label"):
        RAP(RAPConfig(protect_label=5)).fit(clf, make_clean(8))


# ---------------------------------------------------------------- options, names

@pytest.mark.parametrize("make", [
    lambda: STRIPConfig(repeat=0), lambda: STRIPConfig(swap_ratio=0.0), lambda: STRIPConfig(frr=0.7),
    lambda: RAPConfig(min_drop=0.3, max_drop=0.1), lambda: RAPConfig(trigger="two words"),
    lambda: RAPConfig(lr=0.0), lambda: ONIONConfig(lm_batch_size=0), lambda: ONIONConfig(max_cacc_drop=-1.0),
    lambda: ONIONConfig(threshold="high"),
])
def test_invalid_options_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_filter_names():
    assert (ONION.name, STRIP.name, RAP.name) == ("onion", "strip", "rap")


# ---------------------------------------------------------------- evaluate_screened

class MarkFilter(InputFilter):
    """Rejects texts containing 'REJECT'; rewrites nothing."""
    name = "mark"

    def screen(self, texts, progress=False):
        return Screened(list(texts), ["REJECT" in t for t in texts], [0.0] * len(texts))


def test_evaluate_screened_hand_made_case(clf):
    clean_texts = ["good film", "REJECT bad film", "a fine cast", "tedious plot"]
    poison_texts = ["REJECT cf film", "cf bad plot", "cf good cast"]
    cp, pp = predict(clf, clean_texts), predict(clf, poison_texts)
    # clean: rows 0, 2 correct and accepted; row 1 correct but rejected; row 3 wrong
    clean = LabeledTexts(clean_texts, [int(cp[0]), int(cp[1]), int(cp[2]), int(1 - cp[3])])
    # poison: row 0 would hit but is rejected; row 1 hits; row 2 misses
    poison = LabeledTexts(poison_texts, [int(pp[0]), int(pp[1]), int(1 - pp[2])])
    out = evaluate_screened(clf, MarkFilter(), clean, poison)
    assert out["cacc"] == pytest.approx(50.0)
    assert out["frr"] == pytest.approx(25.0)
    assert out["asr"] == pytest.approx(100.0 / 3)
    assert out["detection_rate"] == pytest.approx(100.0 / 3)
    assert (out["clean_rows"], out["poison_rows"], out["filter"]) == (4, 3, "mark")
