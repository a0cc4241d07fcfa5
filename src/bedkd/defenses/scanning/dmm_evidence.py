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

:func:`dmm_student` distils one flipped student and runs this test with it; the scan may distil
several on disjoint flipped rows (:func:`student_flip_rows`) and keep the strongest.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import fisher_exact

from ...data import LabeledTexts
from ...modeling import Classifier
from ...seeding import rng
from ..clean_split import CleanSplit
from ..data_filters.dmm import Detection, DMMDetector


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

    @classmethod
    def counted(cls, label: int, n: int, k: int, m: int, j: int) -> "LabelEvidence":
        """``k`` of ``n`` suspicious rows flagged against ``j`` of ``m`` clean rows: the excess and the
        one-sided Fisher test (both 0 where either side has no rows)."""
        if n == 0 or m == 0:
            return cls(label, n, k, m, j, 0.0, 0.0)
        return cls(label, n, k, m, j, k - n * j / m, fisher_log10_p(k, n, j, m))


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
        out.append(LabelEvidence.counted(c, n, k, m, j))
    return out


def fisher_log10_p(k: int, n: int, j: int, m: int) -> float:
    """-log10 of the one-sided Fisher exact p-value of "k of n more often than j of m"."""
    p = fisher_exact([[k, n - k], [j, m - j]], alternative="greater").pvalue
    return float(-np.log10(max(p, 1e-300)))


def held_out_rows(split: CleanSplit, flip: list[int] | None = None) -> list[int]:
    """The budget's clean rows DMM (the student on ``flip``, default DMM's own rows) did not train
    on: what the scan compares the suspicious rows with."""
    return sorted((set(split.trust) | set(split.val)) - set(split.flip if flip is None else flip))


def student_flip_rows(clean: LabeledTexts, split: CleanSplit, flip_per_class: int, students: int,
                      seed: int) -> list[list[int]]:
    """Each DMM student's flipped rows: DMM's own for the first; for the others, disjoint draws of
    ``flip_per_class`` rows per class from the trust rows that no earlier student flipped (a seeded
    order; a class that runs out gives what is left, and a draw with no row of some class is not made)."""
    draws = [list(split.flip)]
    left: dict[int, list[int]] = {}
    for row in rng(seed + 13).permutation(sorted(set(split.trust) - set(split.flip))).tolist():
        left.setdefault(clean.labels[row], []).append(row)
    classes = sorted(set(clean.labels[i] for i in split.flip))
    for j in range(1, students):
        chunk = [rows[(j - 1) * flip_per_class:j * flip_per_class] for rows in (left.get(c, []) for c in classes)]
        if not all(chunk):
            break
        draws.append(sorted(r for rows in chunk for r in rows))
    return draws


@dataclass
class DMMStudent:
    detection: Detection           # every suspicious row scored by this student
    evidence: list[LabelEvidence]
    flip: list[int]
    seconds: tuple[float, float]   # distillation, scoring

    @property
    def strongest(self) -> float:
        return max(e.log10_p for e in self.evidence)


def dmm_student(detector: DMMDetector, teacher: Classifier, clean: LabeledTexts, suspect: LabeledTexts,
                 split: CleanSplit, flip: list[int], progress: bool) -> DMMStudent:
    """One student on ``flip``: every suspicious row scored, and the test against the budget's clean
    rows it did not train on."""
    t0 = time.perf_counter()
    student = detector.fit_student(teacher, clean, flip, progress)
    t1 = time.perf_counter()
    detection = detector.scan(teacher, student, suspect, progress=progress)
    reference = held_out_rows(split, flip)
    ref_scores, ref_pred = detector.score(teacher, student, [clean.texts[i] for i in reference])
    evidence = label_evidence(detection.scores, detection.labels, detection.teacher_pred, ref_scores,
                              np.asarray([clean.labels[i] for i in reference]), ref_pred, detector.cfg.threshold,
                              teacher.num_labels)
    return DMMStudent(detection, evidence, flip, (t1 - t0, time.perf_counter() - t1))
