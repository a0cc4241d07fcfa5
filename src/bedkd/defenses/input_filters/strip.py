"""STRIP (text version): reject inputs whose prediction stays certain under heavy perturbation.

Gao, Kim, Doan, Zhang, Nepal, Ranasinghe, Kim, "Design and Evaluation of a Multi-Domain Trojan
Detection Method on Deep Neural Networks" (STRIP-ViTA), IEEE TDSC 2021 (arXiv:1911.10312); text
procedure and defaults as in OpenBackdoor's ``STRIPDefender``.

Each input is perturbed ``repeat`` times: ``swap_ratio`` of its words (at least one) are replaced
by the highest-TF-IDF words of a randomly drawn clean sample. The mean prediction entropy (bits)
over the copies is the input's randomness; a trigger keeps the prediction fixed, so low entropy
means trojaned. The threshold is the ``frr`` quantile of the clean fitting rows' entropies; an
input with entropy below it is rejected.

Published defaults (OpenBackdoor): repeat 5, swap ratio 0.5, FRR 1 %, TF-IDF with English stop
words removed (scikit-learn ``TfidfVectorizer(use_idf, smooth_idf, norm=None)``). The RAP authors'
STRIP-ViTA script used 20 copies and ratio 0.7; set ``repeat``/``swap_ratio`` for that.

Deviations: replaced positions are drawn without replacement (OpenBackdoor: with replacement; the
RAP authors' script: without); when a clean sample has fewer non-zero TF-IDF words than positions
to fill, its ranked words are reused in turn (OpenBackdoor fell through to arbitrary zero-TF-IDF
words). Each text's perturbations come from a generator seeded by (seed, CRC32 of the text), so a
verdict never depends on the other texts in the batch.

``Screened.scores`` is the negated mean entropy (higher = more suspicious); texts are unchanged.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from ...data import LabeledTexts
from ...errors import BedkdError
from ...modeling import Classifier
from ...modeling.inference import MAX_LENGTH, predict_proba
from ...options import Options, option
from ...seeding import seed_everything
from ..base import InputFilter, Screened


@dataclass
class STRIPConfig(Options):
    """STRIP options"""
    repeat: int = option(5, "perturbed copies per input", low=1)
    swap_ratio: float = option(0.5, "share of words replaced in each copy", above=0.0, high=1.0)
    frr: float = option(0.01, "false rejection rate allowed on the clean fitting rows", low=0.0, high=0.5)
    batch_size: int = option(64, "inference batch size", low=1)
    max_length: int = option(MAX_LENGTH, "tokens kept per text", low=8)
    seed: int = option(0, "random seed", low=0)


@dataclass
class Donors:
    """Clean samples' words ranked by TF-IDF (highest first), one list per sample that has any."""
    ranked: list[list[str]]

    @classmethod
    def from_texts(cls, texts: list[str]) -> "Donors":
        vectorizer = TfidfVectorizer(use_idf=True, smooth_idf=True, norm=None, stop_words="english")
        try:
            matrix = vectorizer.fit_transform(texts).toarray()
        except ValueError:  # empty vocabulary
            raise BedkdError("STRIP: the clean texts have no words left after removing English stop words") from None
        vocab = vectorizer.get_feature_names_out()
        ranked = []
        for row in matrix:
            nonzero = np.flatnonzero(row)
            order = nonzero[np.argsort(-row[nonzero], kind="stable")]
            if order.size:
                ranked.append([str(vocab[j]) for j in order])
        return cls(ranked)


def perturb(text: str, donors: Donors, swap_ratio: float, gen: np.random.Generator) -> str:
    words = text.split()
    if not words:
        return text
    m = max(int(len(words) * swap_ratio), 1)
    donor = donors.ranked[int(gen.integers(len(donors.ranked)))]
    for i, pos in enumerate(gen.choice(len(words), size=m, replace=False)):
        words[int(pos)] = donor[i % len(donor)]
    return " ".join(words)


def text_rng(seed: int, text: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(text.encode("utf-8"))])


def entropy_bits(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    return -(probs * np.log2(p)).sum(axis=-1)


class STRIP(InputFilter):
    """Input filter that rejects inputs of abnormally low perturbed-prediction entropy."""
    name, options = "strip", STRIPConfig

    def __init__(self, cfg: STRIPConfig | None = None):
        super().__init__(cfg)
        self.donors: Donors | None = None

    def mean_entropy(self, texts: list[str], progress: bool = False) -> np.ndarray:
        cfg = self.cfg
        copies = []
        for text in texts:
            gen = text_rng(cfg.seed, text)
            copies.extend(perturb(text, self.donors, cfg.swap_ratio, gen) for _ in range(cfg.repeat))
        if not copies:
            return np.zeros(0)
        probs = predict_proba(self.model, copies, cfg.batch_size, "STRIP" if progress else None, cfg.max_length)
        return entropy_bits(probs).reshape(len(texts), cfg.repeat).mean(axis=1)

    def fit(self, suspect_model: Classifier, clean: LabeledTexts, progress: bool = False) -> "STRIP":
        if len(clean) == 0:
            raise BedkdError("STRIP.fit needs clean rows")
        seed_everything(self.cfg.seed)
        self.model = suspect_model
        self.donors = Donors.from_texts(clean.texts)
        clean_entropy = self.mean_entropy(clean.texts, progress)
        self.threshold = float(np.quantile(clean_entropy, self.cfg.frr))
        self.fit_report = {"threshold": self.threshold, "clean_rows": len(clean),
                           "clean_frr": 100.0 * float((clean_entropy < self.threshold).mean()),
                           "clean_entropy_mean": float(clean_entropy.mean())}
        return self

    def screen(self, texts: list[str], progress: bool = False) -> Screened:
        if self.threshold is None:
            raise BedkdError("STRIP.screen called before fit(): call fit(suspect_model, clean) first")
        texts = list(texts)
        entropy = self.mean_entropy(texts, progress)
        return Screened(texts, [bool(e < self.threshold) for e in entropy], [float(-e) for e in entropy])
