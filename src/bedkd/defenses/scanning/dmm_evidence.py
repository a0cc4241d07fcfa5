"""Backdoor evidence from DMM's scores: more suspicious rows survive the label flip than clean ones.

An addition of this project to BeDKD (Wu et al., AAAI 2026, arXiv:2508.01595). DMM flags a row
when the teacher and its label-flipped copy still agree on it (mean |p_t - p_s| < threshold).
Some clean rows survive the flip too, so a flag alone is no evidence. The defender's own clean
rows that DMM did not train on give the survival rate of clean rows of each label, for this very
model; a backdoor shows as an excess of surviving suspicious rows on one label, the target.

Per label ``c``, among rows labelled ``c`` that the teacher also predicts as ``c``:

* ``k`` of the ``n`` suspicious rows survive, ``j`` of the ``m`` clean rows do;
* the statistic is the one-sided Fisher exact test of "suspicious rows survive more often than
  clean rows", as -log10 p. Under no backdoor (and suspicious rows drawn like the clean ones) it is
  small whatever ``n`` and ``m`` are; the target label is the one with the largest statistic;
* ``excess`` = k - n·j/m estimates how many suspicious rows of the label carry a backdoor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import fisher_exact


@dataclass
class LabelEvidence:
    label: int
    suspect_rows: int        # n: suspicious rows labelled and predicted as the label
    suspect_flagged: int     # k
    clean_rows: int          # m: clean rows (not DMM's) labelled and predicted as the label
    clean_flagged: int       # j
    excess: float            # k - n * j / m
    log10_p: float           # -log10 of the one-sided Fisher exact p-value

    def to_dict(self) -> dict:
        return dict(vars(self))


def label_evidence(suspect_scores: np.ndarray, suspect_labels: np.ndarray, suspect_pred: np.ndarray,
                   clean_scores: np.ndarray, clean_labels: np.ndarray, clean_pred: np.ndarray,
                   threshold: float, num_labels: int) -> list[LabelEvidence]:
    out = []
    for c in range(num_labels):
        s = (suspect_labels == c) & (suspect_pred == c)
        r = (clean_labels == c) & (clean_pred == c)
        n, m = int(s.sum()), int(r.sum())
        k = int((suspect_scores[s] < threshold).sum())
        j = int((clean_scores[r] < threshold).sum())
        if n == 0 or m == 0:
            out.append(LabelEvidence(c, n, k, m, j, 0.0, 0.0))
            continue
        out.append(LabelEvidence(c, n, k, m, j, k - n * j / m, fisher_log10_p(k, n, j, m)))
    return out


def fisher_log10_p(k: int, n: int, j: int, m: int) -> float:
    """-log10 of the one-sided Fisher exact p-value of "k of n more often than j of m"."""
    p = fisher_exact([[k, n - k], [j, m - j]], alternative="greater").pvalue
    return float(-np.log10(max(p, 1e-300)))
