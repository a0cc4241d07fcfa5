"""BKI: Backdoor Keyword Identification, a training-data filter.

Chen and Dai, "Mitigating backdoor attacks in LSTM-based text classification systems by Backdoor
Keyword Identification", Neurocomputing 2021 (arXiv:2007.12070).

Every word of a training sample is scored by how much deleting it moves the suspicious model's
internal representation. Each sample contributes its most salient words to a dictionary that keeps,
per word, how many samples chose it and their mean score; words are ranked by
``f(w) = mean_score(w) * log10(count(w))``; the top word(s) are taken as backdoor keywords and the
samples containing them are removed.

Transformer adaptation and defaults, as in OpenBackdoor's ``BKIDefender`` (thunlp/OpenBackdoor,
``openbackdoor/defenders/bki_defender.py``, the reference implementation of Cui et al., NeurIPS 2022):

* the representation is the last layer's hidden state at the first token ([CLS]) of the encoder;
  the score of word ``i`` is ``||h(x) - h(x without word i)||_inf``. The paper's LSTM score also
  adds the change of the hidden state at the word's own step (``||h_i - h_{i-1}||_inf``), which has
  no counterpart in a bidirectional transformer; OpenBackdoor drops it, and so does this file.
* words are whitespace tokens; 5 top words per sample (``top_words``); 1 keyword (``keywords``).

Deviations: (1) a word that occurs several times in a sample is scored once per occurrence and
enters that sample's top words at most once, with its highest score (OpenBackdoor counts each
occurrence); (2) by default every row whose words include a keyword is removed, as the paper
describes (``remove="contains"``); OpenBackdoor removes only the rows whose own top words include
it (``remove="top_words"``); (3) ``max_rows`` builds the dictionary from a seeded random subset
for speed (default: all rows). All single-word deletions of a group of rows are scored in one
batched pass.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ...data import LabeledTexts
from ...data.sampling import random_limit
from ...modeling import Classifier
from ...modeling.inference import MAX_LENGTH
from ...modeling.representations import representations
from ...options import Options, option
from ..base import DataFilter, Filtered

# (classifier, texts) -> float array [len(texts), dim]; tests may pass a stub
Represent = Callable[[Classifier, list[str]], np.ndarray]

ROWS_PER_PASS = 64   # rows whose deletions are scored together


@dataclass
class BKIConfig(Options):
    """BKI data-filter options (OpenBackdoor defaults)"""
    top_words: int = option(5, "most salient words each sample contributes to the dictionary", low=1)
    keywords: int = option(1, "backdoor keywords taken from the top of the ranking", low=1)
    norm: str = option("inf", "norm of the representation change", choices=("inf", "l2"))
    remove: str = option("contains", "remove rows containing a keyword (paper), or only scored rows whose top "
                         "words include one (OpenBackdoor)", choices=("contains", "top_words"))
    max_rows: int | None = option(None, "build the dictionary from a seeded random subset of this many rows",
                                  low=1)
    batch_size: int = option(64, "inference batch size", low=1)
    max_length: int = option(MAX_LENGTH, "tokens kept per text", low=8)
    seed: int = option(0, "random seed (the max_rows subset)", low=0)


@dataclass
class KeywordStat:
    """One dictionary entry: how many samples chose the word, their mean score, and f = mean * log10(count)."""
    word: str
    count: int
    mean_score: float

    @property
    def f(self) -> float:
        return self.mean_score * math.log10(self.count)

    def to_dict(self) -> dict:
        return {"word": self.word, "count": self.count, "mean_score": self.mean_score, "f": self.f}


@dataclass
class RowSalience:
    """The top words of one scored row, most salient first, with their scores."""
    row: int
    words: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def deletion_variants(words: list[str]) -> list[str]:
    """The sentence, then the sentence without each word in turn."""
    return [" ".join(words)] + [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]


def top_distinct(row: int, words: list[str], deltas: np.ndarray, k: int) -> RowSalience:
    """The ``k`` highest-scoring distinct words of a row (a repeated word keeps its highest score)."""
    best: dict[str, float] = {}
    for w, d in zip(words, deltas.tolist()):
        if w not in best or d > best[w]:
            best[w] = d
    ranked = sorted(best.items(), key=lambda kv: -kv[1])[:k]   # stable: ties keep sentence order
    return RowSalience(row, [w for w, _ in ranked], [d for _, d in ranked])


def rank_keywords(saliences: list[RowSalience]) -> list[KeywordStat]:
    """Dictionary of top words, ranked by f = mean score * log10(count), then count, then word."""
    counts: dict[str, int] = {}
    sums: dict[str, float] = {}
    for s in saliences:
        for w, d in zip(s.words, s.scores):
            counts[w] = counts.get(w, 0) + 1
            sums[w] = sums.get(w, 0.0) + d
    stats = [KeywordStat(w, counts[w], sums[w] / counts[w]) for w in counts]
    return sorted(stats, key=lambda s: (-s.f, -s.count, s.word))


class BKI(DataFilter):
    """Data-filter role: drop the rows that carry the backdoor keyword(s) found by BKI."""
    name = "bki"

    def __init__(self, cfg: BKIConfig | None = None, represent: Represent | None = None):
        self.cfg = cfg or BKIConfig()
        self.represent = represent or self._cls

    def _cls(self, clf: Classifier, texts: list[str]) -> np.ndarray:
        return representations(clf, texts, batch_size=self.cfg.batch_size, max_length=self.cfg.max_length)

    def _norm(self, delta: np.ndarray) -> np.ndarray:
        return np.abs(delta).max(axis=1) if self.cfg.norm == "inf" else np.linalg.norm(delta, axis=1)

    def salience(self, clf: Classifier, data: LabeledTexts, rows: list[int], progress: bool = False
                 ) -> list[RowSalience]:
        """Top words of each of ``rows`` (rows without words are skipped)."""
        out: list[RowSalience] = []
        bar = tqdm(total=len(rows), desc="BKI: word deletions", disable=not progress, unit="row")
        for start in range(0, len(rows), ROWS_PER_PASS):
            chunk = rows[start:start + ROWS_PER_PASS]
            split = [(r, data.texts[r].split()) for r in chunk]
            split = [(r, words) for r, words in split if words]
            variants, offsets = [], []
            for _, words in split:
                offsets.append(len(variants))
                variants.extend(deletion_variants(words))
            reps = np.asarray(self.represent(clf, variants), dtype=np.float64) if variants else None
            for (r, words), o in zip(split, offsets):
                deltas = self._norm(reps[o + 1:o + 1 + len(words)] - reps[o])
                out.append(top_distinct(r, words, deltas, self.cfg.top_words))
            bar.update(len(chunk))
        bar.close()
        return out

    def filter(self, suspect_model: Classifier, suspect_data: LabeledTexts, clean: LabeledTexts | None = None,
               progress: bool = False) -> Filtered:
        cfg = self.cfg
        t0 = time.perf_counter()
        rows = random_limit(suspect_data, cfg.max_rows, cfg.seed)
        saliences = self.salience(suspect_model, suspect_data, rows, progress)
        ranking = rank_keywords(saliences)
        keywords = [s.word for s in ranking[:cfg.keywords]]
        f_of = {s.word: s.f for s in ranking}
        keyset = set(keywords)
        if cfg.remove == "contains":
            removed = [i for i, t in enumerate(suspect_data.texts) if keyset & set(t.split())]
        else:
            removed = sorted(s.row for s in saliences if keyset & set(s.words))
        scores = [max((f_of.get(w, 0.0) for w in set(t.split())), default=0.0) for t in suspect_data.texts]
        report = {"method": self.name, "config": cfg.to_dict(), "rows": len(suspect_data),
                  "scored_rows": len(saliences), "keywords": [s.to_dict() for s in ranking[:cfg.keywords]],
                  "top_ranked": [s.to_dict() for s in ranking[:20]], "removed": len(removed),
                  "seconds": time.perf_counter() - t0}
        return Filtered(removed, scores, report)
