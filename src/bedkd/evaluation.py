"""CACC, ASR and the untriggered ASR, in percent."""
from __future__ import annotations

import numpy as np

from .data import LabeledTexts, check_labels
from .modeling import Classifier, predict


def attack_success_rate(clf: Classifier, poison_test: LabeledTexts, target: int | None = None,
                        desc: str | None = None) -> float:
    """Share of triggered rows predicted as the target (by default each row's label, as attacks write it)."""
    check_labels(poison_test, clf.num_labels)
    wanted = np.asarray(poison_test.labels) if target is None else np.full(len(poison_test), target)
    pred = predict(clf, poison_test.texts, desc=desc)
    return 100.0 * float((pred == wanted).mean())


def untriggered_rate(pred: np.ndarray, labels, target: int) -> float | None:
    """Share of the clean rows of the other labels predicted as ``target``: the ASR the same rows get
    without a trigger (what the model sends to the target anyway), in percent."""
    other = np.asarray(labels) != target
    return 100.0 * float((pred[other] == target).mean()) if other.any() else None


def _single_target(poison_test: LabeledTexts, target: int | None) -> int | None:
    if target is not None:
        return target
    targets = set(poison_test.labels)
    return targets.pop() if len(targets) == 1 else None


def evaluate(clf: Classifier, clean_test: LabeledTexts, poison_test: LabeledTexts | None = None,
             target: int | None = None, progress: bool = False, second_poison: LabeledTexts | None = None,
             per_class: bool = False) -> dict:
    """CACC; with triggered rows, the ASR and ``untriggered_asr`` (:func:`untriggered_rate`: a
    residual ASR above the clean model's floor is a backdoor only when this one stays at the floor);
    ``second_poison``: a second backdoor's rows (its target from their labels), keys ``second_*``;
    ``per_class``: also ``cacc_per_class``, each class's accuracy (None for a class without rows)."""
    check_labels(clean_test, clf.num_labels)
    pred = predict(clf, clean_test.texts, desc="CACC" if progress else None)
    labels = np.asarray(clean_test.labels)
    out = {"cacc": 100.0 * float((pred == labels).mean()), "clean_rows": len(clean_test)}
    if per_class:
        out["cacc_per_class"] = [100.0 * float((pred[labels == c] == c).mean()) if (labels == c).any() else None
                                 for c in range(clf.num_labels)]
    for prefix, poison, wanted in (("", poison_test, target), ("second_", second_poison, None)):
        if poison is None:
            continue
        out[f"{prefix}asr"] = attack_success_rate(clf, poison, wanted, ("ASR (second)" if prefix else "ASR")
                                                  if progress else None)
        t = _single_target(poison, wanted)
        out[f"{prefix}untriggered_asr"] = None if t is None else untriggered_rate(pred, clean_test.labels, t)
    if poison_test is not None:
        out["poison_rows"] = len(poison_test)
    return out
