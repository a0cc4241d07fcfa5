"""Backdoor evidence from the labels: suspicious rows whose text a clean-data classifier puts elsewhere.

An addition of this project to BeDKD (Wu et al., AAAI 2026, arXiv:2508.01595). Dirty-label
poisoning gives rows of other classes the target label. When the trigger is a paraphrase
(SynBkd, StyleBkd), DMM's flipped copy moves those rows with the clean ones and its scores
show no excess (``docs/results/dmm_scores/``), and there is no trigger word to search for. The
rows' content still belongs to their source class.

The reference classifier has seen neither the suspicious model nor the suspicious data: logistic
regression (scikit-learn's defaults) on a frozen sentence encoder's mean-pooled, L2-normalised
embeddings, fitted on the defender's clean rows. Per label ``c``:

* ``t_c`` is the ``quantile`` of the clean rows' own cross-fitted probability of ``c`` (up to
  ``MAX_FOLDS`` stratified folds), so that about that share of clean rows of ``c`` fall below it on any task,
  balanced or not;
* ``k`` of the ``n`` suspicious rows labelled ``c`` have a probability of ``c`` below ``t_c``,
  ``j`` of the ``m`` clean rows do; the statistic is the one-sided Fisher exact test of
  "suspicious rows fall below more often", as -log10 p, and ``excess = k - n·j/m`` estimates the
  rows labelled ``c`` against their content (the same :class:`.LabelEvidence` as DMM's);
* a suspicious row is flagged when it falls below ``t_c``; the lower its probability, the surer;
* with more than two classes and ``sources="most"`` (the default), the flagged rows of ``c`` are
  also split by the other class the reference classifier puts them in most, and the same test is
  made per such source class ``c'`` (``k_c'`` of the ``n`` suspicious rows, ``j_c'`` of the ``m``
  clean rows); the label's statistic is the value that more than half of the other classes reach.
  Dirty-label poison as BadNets, AddSent and the paraphrase attacks make it takes rows of every
  other class; a training split that a classifier reads less accurately than the clean rows, or
  more label noise in it, raises one label's excess without that spread. On AG News the whole-label
  test found "evidence" on most clean training draws, the split test on none, while poisoned
  draws keep their evidence (``docs/results/label_check_agnews_sources/``). A poison drawn from a minority
  of the other classes is missed. On two classes the single source is the whole label: the same test.

A second test, the *shift test* (opt-in, ``shift=True``), asks per label whether a classifier can
tell the suspicious rows of ``c`` from the clean rows of ``c`` on the same embeddings: logistic
regression (classes balanced), its probability of "suspicious" cross-fitted on the union of the
two (up to ``MAX_FOLDS`` stratified folds); ``k`` of the ``n`` suspicious rows are above the
clean rows' ``1 - quantile`` quantile of it, ``j`` of the ``m`` clean rows are; the same Fisher test
and excess. A paraphrase trigger puts a few hundred rows of one style or template into the
target label, whatever class their content reads as: on OLID the reference classifier reads
StyleBkd's poison as its target's content, so the first test misses it, and the shift test does
not (``docs/results/label_check_shift_test/``). A training split that differs from the clean rows
as a whole raises every label; poison, one. A label's shift statistic therefore also has to be a multiple of
every other label's (``ScanConfig.label_check_shift_ratio``). Its flagged rows rank by
that probability (higher is surer).

The first test can be run again on a part of a label's rows (:func:`residual_evidence`, same clean
rows and line): the scan's ``label_check_unexplained`` asks whether the evidence holds on the rows that
hold no found trigger word.

It needs no trigger and no model access, so it sees any dirty-label poison whatever the trigger;
it cannot see clean-label poisoning (the labels agree with the content) and, with a few hundred
clean rows per class, not a poison of a few dozen rows.

The test assumes that the clean rows and the clean rows of the suspicious set come from one
distribution. Where the training split is harder for the reference classifier than the clean
rows (AG News, whose training split it reads less accurately than the dev split), clean labels
show an excess at any quantile (``docs/results/label_check_shift/``); ``suspect_accuracy`` well
under ``clean_accuracy`` is the sign (poison lowers it too). The split by source class above
answers that on more than two classes; on two there is no such split. ``guarded`` runs the check
(since the thirty-first session): it found no evidence on any clean SST-2 or OLID draw or clean
model measured (``docs/results/label_check/``, ``docs/results/robustness/``), but a binary task
whose training split the reference classifier reads much less accurately than the clean rows can
show evidence without poison.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ...data import LabeledTexts
from ...modeling import Classifier
from ...modeling.representations import representations
from .dmm_evidence import LabelEvidence, fisher_log10_p

MAX_FOLDS = 5
SOURCES = ("most", "any")


@dataclass
class LabelCheck:
    evidence: list[LabelEvidence]
    own_prob: np.ndarray         # per suspicious row: the reference classifier's probability of its label
    flagged: np.ndarray          # bool per suspicious row: below its label's clean quantile
    thresholds: list[float]      # t_c per label
    clean_accuracy: float        # cross-fitted, on the clean rows
    suspect_accuracy: float      # on the suspicious rows: well under clean_accuracy on every label hints at a
                                 # shift between the two sets (a harder or noisier training split), not poison
    source_log10_p: list[list[float]] | None = None   # sources="most", more than 2 classes: per label, the test
                                                      # per other class (in class order, the label left out)
    other: np.ndarray | None = None    # per suspicious row: the class other than its label it is most likely
    shift: list[LabelEvidence] | None = None   # the shift test per label (``shift=True``)
    shift_prob: np.ndarray | None = None       # per suspicious row: the shift test's probability of "suspicious"
    shift_flagged: np.ndarray | None = None    # bool per suspicious row: above its label's clean quantile
    shift_qvalue: np.ndarray | None = None     # per suspicious row: the estimated false-discovery rate of the
                                               # smallest top set of its label (by shift_prob) that holds it
    top_poisoned: list[float] | None = None    # per label: poisoned rows estimated among the first test's top
                                               # rows, as many as its excess (:func:`top_poisoned`)
    shift_top_poisoned: list[float] | None = None   # ... among the shift test's
    clean_source_below: list[list[int]] | None = None   # sources="most", more than 2 classes: per label, per other
                                                        # class (in class order), its clean rows below the line
                                                        # that the reference classifier puts there most
    probs: np.ndarray | None = None    # per suspicious row: the reference classifier's class probabilities

    def report(self) -> dict:
        return {"evidence": [e.to_dict() for e in self.evidence], "thresholds": self.thresholds,
                "clean_accuracy": self.clean_accuracy, "suspect_accuracy": self.suspect_accuracy,
                "flagged": int(self.flagged.sum()),
                **({"source_log10_p": self.source_log10_p} if self.source_log10_p is not None else {}),
                **({"top_poisoned": self.top_poisoned} if self.top_poisoned is not None else {}),
                **({"shift": [e.to_dict() for e in self.shift],
                    "shift_flagged": int(self.shift_flagged.sum())} if self.shift is not None else {}),
                **({"shift_top_poisoned": self.shift_top_poisoned} if self.shift_top_poisoned is not None else {})}

    def shift_rows(self, fdr: float) -> np.ndarray:
        """Bool per suspicious row: in its label's largest top set whose estimated false-discovery rate
        is at most ``fdr`` (none without the shift test)."""
        if self.shift_qvalue is None:
            return np.zeros(len(self.flagged), dtype=bool)
        return self.shift_qvalue <= fdr


def embed(encoder: Classifier, texts: list[str]) -> np.ndarray:
    x = representations(encoder, texts, pooling="mean").astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def label_check(encoder: Classifier, clean: LabeledTexts, suspect: LabeledTexts, num_labels: int,
                quantile: float, seed: int, sources: str = "most", shift: bool = False) -> LabelCheck:
    """Fit the reference classifier on ``clean`` (every class needs at least 2 rows) and test each
    label; with ``shift``, the shift test too."""
    clean_x, clean_y = embed(encoder, list(clean.texts)), np.asarray(clean.labels)
    suspect_x, suspect_y = embed(encoder, list(suspect.texts)), np.asarray(suspect.labels)
    check = check_embeddings(clean_x, clean_y, suspect_x, suspect_y, num_labels, quantile, seed, sources)
    return with_shift(check, clean_x, clean_y, suspect_x, suspect_y, num_labels, quantile, seed) if shift else check


def with_shift(check: LabelCheck, clean_x: np.ndarray, clean_y: np.ndarray, suspect_x: np.ndarray,
               suspect_y: np.ndarray, num_labels: int, quantile: float, seed: int) -> LabelCheck:
    """``check`` with the shift test's results filled in."""
    check.shift, check.shift_prob, check.shift_flagged, check.shift_qvalue, check.shift_top_poisoned = shift_test(
        clean_x, clean_y, suspect_x, suspect_y, num_labels, quantile, seed)
    return check


def shift_test(clean_x: np.ndarray, clean_y: np.ndarray, suspect_x: np.ndarray, suspect_y: np.ndarray,
               num_labels: int, quantile: float, seed: int) -> tuple[list[LabelEvidence], np.ndarray, np.ndarray,
                                                                     np.ndarray, list[float]]:
    """Per label: can the suspicious rows of it be told from its clean rows (module doc)? The evidence
    per label, per suspicious row the cross-fitted probability of "suspicious", the flag and the
    q-value (:func:`qvalues`), and per label the poisoned rows estimated among its top rows
    (:func:`top_poisoned`)."""
    evidence, prob, estimates = [], np.zeros(len(suspect_y)), []
    flagged, qvalue = np.zeros(len(suspect_y), dtype=bool), np.ones(len(suspect_y))
    for c in range(num_labels):
        s, r = suspect_y == c, clean_y == c
        n, m = int(s.sum()), int(r.sum())
        if n < 2 or m < 2:
            evidence.append(LabelEvidence(c, n, 0, m, 0, 0.0, 0.0))
            estimates.append(0.0)
            continue
        x = np.vstack([suspect_x[s], clean_x[r]])
        is_suspect = np.r_[np.ones(n, dtype=int), np.zeros(m, dtype=int)]
        folds = StratifiedKFold(int(min(MAX_FOLDS, n, m)), shuffle=True, random_state=seed)
        p = cross_val_predict(LogisticRegression(max_iter=2000, class_weight="balanced"), x, is_suspect, cv=folds,
                              method="predict_proba")[:, 1]
        t = float(np.quantile(p[n:], 1 - quantile))
        prob[s], flagged[s], qvalue[s] = p[:n], p[:n] > t, qvalues(p[:n], p[n:])
        k, j = int(flagged[s].sum()), int((p[n:] > t).sum())
        evidence.append(LabelEvidence.counted(c, n, k, m, j))
        estimates.append(top_poisoned(p[:n], p[n:], k - n * j / m))
    return evidence, prob, flagged, qvalue, estimates


def top_poisoned(suspect_score: np.ndarray, clean_score: np.ndarray, excess: float) -> float:
    """Poisoned rows estimated among one label's ``excess`` (rounded) suspicious rows of highest score:
    their number less the clean rows expected at or above the lowest of their scores, ``n`` times the
    share of the label's clean rows (cross-fitted) that reach it, every suspicious row taken as clean
    (so, where the clean suspicious rows score like the clean rows, it errs low, as a
    Benjamini-Hochberg estimate does; a training split unlike the clean rows makes it err high). It compares two tests' rows on the same
    label without knowing which are poisoned: on OLID the shift test's top rows held 2 to 4.4 times the
    first test's poisoned rows, on SST-2 paraphrase sets mostly fewer; the estimates erred by up to
    68 % low (the first test's) and 40 % high (the shift test's) (docs/results/label_check_rows/)."""
    size = int(round(excess))
    if size <= 0 or len(suspect_score) == 0:
        return 0.0
    cut = np.sort(suspect_score)[::-1][min(size, len(suspect_score)) - 1]
    return float(min(size, len(suspect_score)) - len(suspect_score) * np.mean(clean_score >= cut))


def qvalues(suspect_p: np.ndarray, clean_p: np.ndarray) -> np.ndarray:
    """Per suspicious row, its Benjamini-Hochberg q-value over conformal p-values: a row's p-value is
    the share of clean rows (one more counted) at or above its probability; the q-value is the
    smallest estimated false-discovery rate, ``n * p / rank``, of a top set that holds it. BH on
    conformal p-values controls the false-discovery rate when clean suspicious rows and clean rows
    are exchangeable (Bates et al., "Testing for outliers with conformal p-values", Ann. Statist.
    2023); cross-fitted probabilities are nearly so when both come from one distribution."""
    n, m = len(suspect_p), len(clean_p)
    order = np.argsort(-suspect_p, kind="stable")
    ranked = np.sort(clean_p)
    p = (1 + m - np.searchsorted(ranked, suspect_p[order], side="left")) / (m + 1)
    fdr = np.minimum(1.0, n * p / np.arange(1, n + 1))
    out = np.empty(n)
    out[order] = np.minimum.accumulate(fdr[::-1])[::-1]
    return out


def check_embeddings(clean_x: np.ndarray, clean_y: np.ndarray, suspect_x: np.ndarray, suspect_y: np.ndarray,
                     num_labels: int, quantile: float, seed: int, sources: str = "most") -> LabelCheck:
    if sources not in SOURCES:
        raise ValueError(f"sources must be one of {SOURCES}, got {sources!r}")
    counts = np.bincount(clean_y, minlength=num_labels)
    if counts.min() < 2:
        raise ValueError(f"the label check needs at least 2 clean rows of every class, got {counts.tolist()}")
    folds = StratifiedKFold(int(min(MAX_FOLDS, counts.min())), shuffle=True, random_state=seed)
    model = LogisticRegression(max_iter=2000)
    clean_p = cross_val_predict(model, clean_x, clean_y, cv=folds, method="predict_proba")
    suspect_p = model.fit(clean_x, clean_y).predict_proba(suspect_x)
    split = sources == "most" and num_labels > 2
    own = suspect_p[np.arange(len(suspect_y)), suspect_y]
    flagged = np.zeros(len(suspect_y), dtype=bool)
    evidence, thresholds, per_source, estimates, clean_counts = [], [], [], [], []
    for c in range(num_labels):
        s, r = suspect_y == c, clean_y == c
        t = float(np.quantile(clean_p[r, c], quantile))
        flagged[s] = own[s] < t
        clean_below = r & (clean_p[:, c] < t)
        n, m = int(s.sum()), int(r.sum())
        k, j = int(flagged[s].sum()), int(clean_below.sum())
        thresholds.append(t)
        if n == 0:
            evidence.append(LabelEvidence(c, n, k, m, j, 0.0, 0.0))
            per_source.append([0.0] * (num_labels - 1))
            clean_counts.append([0] * (num_labels - 1))
            estimates.append(0.0)
            continue
        statistic = fisher_log10_p(k, n, j, m)
        if split:
            suspect_src, clean_src = _elsewhere(suspect_p, c), _elsewhere(clean_p, c)
            clean_counts.append([int((clean_below & (clean_src == o)).sum()) for o in range(num_labels) if o != c])
            cells = [fisher_log10_p(int((s & flagged & (suspect_src == o)).sum()), n, j_o, m)
                     for o, j_o in zip((o for o in range(num_labels) if o != c), clean_counts[-1])]
            per_source.append(cells)
            statistic = sorted(cells, reverse=True)[(num_labels - 1) // 2]    # reached by more than half
        evidence.append(LabelEvidence(c, n, k, m, j, k - n * j / m, statistic))
        estimates.append(top_poisoned(-own[s], -clean_p[r, c], k - n * j / m))
    return LabelCheck(evidence, own, flagged, thresholds, float((clean_p.argmax(axis=1) == clean_y).mean()),
                      float((suspect_p.argmax(axis=1) == suspect_y).mean()), per_source if split else None,
                      _elsewhere_rows(suspect_p, suspect_y), top_poisoned=estimates,
                      clean_source_below=clean_counts if split else None, probs=suspect_p)


def residual_evidence(check: LabelCheck, suspect_y: np.ndarray, label: int, keep: np.ndarray,
                      shift: bool = False) -> LabelEvidence:
    """The first test (with ``shift``, the shift test) on the suspicious rows of ``label`` that ``keep``
    (bool per suspicious row) holds, against the same clean rows and line, the first test split by
    source class as the check was: is the label's excess still there among the rows something else
    (a found trigger word) does not explain?"""
    e, flagged = (check.shift[label], check.shift_flagged) if shift else (check.evidence[label], check.flagged)
    s = (np.asarray(suspect_y) == label) & keep
    n, k, m, j = int(s.sum()), int((flagged & s).sum()), e.clean_rows, e.clean_flagged
    if n == 0 or m == 0:
        return LabelEvidence(label, n, k, m, j, 0.0, 0.0)
    statistic = fisher_log10_p(k, n, j, m)
    if check.clean_source_below is not None and not shift:
        others = [o for o in range(len(check.evidence)) if o != label]
        cells = [fisher_log10_p(int((s & check.flagged & (check.other == o)).sum()), n, j_o, m)
                 for o, j_o in zip(others, check.clean_source_below[label])]
        statistic = sorted(cells, reverse=True)[len(others) // 2]
    return LabelEvidence(label, n, k, m, j, k - n * j / m, statistic)


def _elsewhere_rows(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row, the class other than the row's own label with the highest probability."""
    masked = probs.copy()
    masked[np.arange(len(labels)), labels] = -np.inf
    return masked.argmax(axis=1)


def _elsewhere(probs: np.ndarray, label: int) -> np.ndarray:
    """Per row, the class other than ``label`` with the highest probability."""
    return _elsewhere_rows(probs, np.full(len(probs), label))
