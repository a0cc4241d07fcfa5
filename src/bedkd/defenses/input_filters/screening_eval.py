"""CACC, ASR, FRR and detection rate of a classifier behind an input filter, in percent.

* CACC: share of clean inputs accepted and predicted as their label (a rejected clean input is an
  error).
* ASR: share of triggered inputs accepted and predicted as their target label (``poison_test``
  labels are the targets, as attacks write them).
* FRR: share of clean inputs rejected.
* detection rate: share of triggered inputs rejected.

Predictions are made on the filter's output texts (ONION rewrites them).
"""
from __future__ import annotations

import numpy as np

from ...data import LabeledTexts, check_labels
from ...errors import BedkdError
from ...modeling import Classifier, predict
from ..base import InputFilter


def _screened_outcome(clf: Classifier, input_filter: InputFilter, data: LabeledTexts, progress: bool,
                      what: str) -> tuple[np.ndarray, np.ndarray]:
    """(accepted and predicted as the row's label, rejected), one boolean per row."""
    check_labels(data, clf.num_labels)
    screened = input_filter.screen(list(data.texts), progress)
    if len(screened.texts) != len(data) or len(screened.rejected) != len(data):
        raise BedkdError(f"{input_filter.name or type(input_filter).__name__}: screened {len(screened.texts)} "
                         f"texts / {len(screened.rejected)} verdicts for {len(data)} {what} rows")
    rejected = np.asarray(screened.rejected, dtype=bool)
    pred = predict(clf, screened.texts, desc=what if progress else None) if len(data) else np.zeros(0, int)
    hit = (pred == np.asarray(data.labels)) & ~rejected
    return hit, rejected


def _percent(mask: np.ndarray) -> float:
    return 100.0 * float(mask.mean()) if mask.size else float("nan")


def evaluate_screened(clf: Classifier, input_filter: InputFilter, clean_test: LabeledTexts,
                      poison_test: LabeledTexts, progress: bool = False) -> dict:
    """The four rates (percent; nan for an empty set) and row counts; ``input_filter`` must be fitted."""
    clean_hit, clean_rejected = _screened_outcome(clf, input_filter, clean_test, progress, "clean")
    poison_hit, poison_rejected = _screened_outcome(clf, input_filter, poison_test, progress, "poison")
    return {"cacc": _percent(clean_hit), "asr": _percent(poison_hit), "frr": _percent(clean_rejected),
            "detection_rate": _percent(poison_rejected), "clean_rows": len(clean_test),
            "poison_rows": len(poison_test), "filter": input_filter.name}


def screened_asr(clf: Classifier, input_filter: InputFilter, poison_test: LabeledTexts, progress: bool = False) -> float:
    """The ASR alone (another backdoor's triggered rows behind the same fitted filter)."""
    return _percent(_screened_outcome(clf, input_filter, poison_test, progress, "poison")[0])
