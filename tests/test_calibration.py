"""Shifting a classifier's decision threshold back to a reference distribution."""
import numpy as np
import pytest
import torch

from bedkd.errors import ConfigError
from bedkd.modeling import load_classifier
from bedkd.modeling.calibration import head_bias, logit_shift, shift_head


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k, target", [(2, [0.72, 0.28]), (2, [0.1, 0.9]), (3, [0.2, 0.5, 0.3]),
                                       (4, [0.25, 0.25, 0.25, 0.25])])
def test_offsets_make_the_mean_prediction_the_target(k, target):
    gen = np.random.default_rng(k)
    proba = _softmax(gen.normal(size=(300, k)) * 4 + gen.normal(size=k) * 3)    # confident and skewed
    d = logit_shift(proba, np.asarray(target))
    shifted = _softmax(np.log(proba) + d).mean(axis=0)
    assert np.allclose(shifted, target, atol=1e-5)
    assert abs(d.sum()) < 1e-9


def test_no_shift_when_the_mean_already_matches():
    gen = np.random.default_rng(0)
    proba = _softmax(gen.normal(size=(100, 3)))
    assert np.allclose(logit_shift(proba, proba.mean(axis=0)), 0.0, atol=1e-6)


def test_weighted_rows_match_the_target_under_their_weights():
    gen = np.random.default_rng(5)
    proba = _softmax(gen.normal(size=(200, 2)) * 3 + np.asarray([1.0, 0.0]))
    w = np.where(np.arange(200) < 50, 3.0, 1.0)          # the first rows count three times
    d = logit_shift(proba, np.asarray([0.6, 0.4]), weights=w)
    shifted = _softmax(np.log(proba) + d)
    assert np.allclose(w @ shifted / w.sum(), [0.6, 0.4], atol=1e-5)
    assert not np.allclose(shifted.mean(axis=0), [0.6, 0.4], atol=1e-3)     # the unweighted mean is not it
    assert np.allclose(logit_shift(proba, np.asarray([0.6, 0.4]), weights=np.ones(200)),
                       logit_shift(proba, np.asarray([0.6, 0.4])))
    with pytest.raises(ValueError, match="weights"):
        logit_shift(proba, np.asarray([0.6, 0.4]), weights=np.ones(3))


def test_bad_target_is_refused():
    proba = np.full((4, 2), 0.5)
    with pytest.raises(ValueError, match="distribution"):
        logit_shift(proba, np.asarray([1.0, 0.0]))
    with pytest.raises(ValueError, match="classes"):
        logit_shift(proba, np.asarray([0.2, 0.3, 0.5]))


def test_shift_head_moves_the_logits_by_the_offsets(tiny_model_dir):
    clf = load_classifier(str(tiny_model_dir))
    batch = clf.tokenizer(["good film", "bad plot"], return_tensors="pt", padding=True)
    with torch.no_grad():
        before = clf.model(**batch).logits
        shift_head(clf.model, np.asarray([0.5, -0.5]))
        after = clf.model(**batch).logits
    assert torch.allclose(after - before, torch.tensor([[0.5, -0.5]] * 2), atol=1e-5)


def test_a_model_without_a_linear_head_is_refused():
    class NoHead(torch.nn.Module):
        config = type("config", (), {"num_labels": 2})()
    with pytest.raises(ConfigError, match="classification head"):
        head_bias(NoHead())
