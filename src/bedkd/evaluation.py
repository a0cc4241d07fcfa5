"""CACC and ASR, in percent."""
from __future__ import annotations

import numpy as np

from .data import LabeledTexts, check_labels
from .modeling import Classifier, predict


def clean_accuracy(clf: Classifier, clean_test: LabeledTexts, desc: str | None = None) -> float:
    check_labels(clean_test, clf.num_labels)
    pred = predict(clf, clean_test.texts, desc=desc)
    return 100.0 * float((pred == np.asarray(clean_test.labels)).mean())


def attack_success_rate(clf: Classifier, poison_test: LabeledTexts, target: int | None = None,
                        desc: str | None = None) -> float:
    """Share of triggered rows predicted as the target (by default each row's label, as attacks write it)."""
    check_labels(poison_test, clf.num_labels)
    wanted = np.asarray(poison_test.labels) if target is None else np.full(len(poison_test), target)
    pred = predict(clf, poison_test.texts, desc=desc)
    return 100.0 * float((pred == wanted).mean())


def evaluate(clf: Classifier, clean_test: LabeledTexts, poison_test: LabeledTexts | None = None,
             target: int | None = None, progress: bool = False) -> dict:
    out = {"cacc": clean_accuracy(clf, clean_test, "CACC" if progress else None), "clean_rows": len(clean_test)}
    if poison_test is not None:
        out["asr"] = attack_success_rate(clf, poison_test, target, "ASR" if progress else None)
        out["poison_rows"] = len(poison_test)
    return out
