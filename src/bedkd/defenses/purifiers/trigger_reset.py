"""Resetting the input embeddings of found trigger words before AKD's cycles (this project's
addition to BeDKD, Wu et al., AAAI 2026, arXiv:2508.01595; not in the paper): an embedding edited
as EP does is far from where fine-tuning at AKD's learning rate can move it, and a trigger of rare
pieces is carried by their embeddings as one rare token is.

What a reset piece becomes (``AKDConfig.reset_value``): the mean of every row of the matrix, the
mean of the clean rows' tokens, the piece's own row in the pre-trained model the suspicious one
was fine-tuned from (``base``), or (``measured``) whichever of these, of the rows of the clean
text's most frequent tokens, or of no reset at all makes an inserted trigger change the fewest
predictions of clean rows at the least cost in their accuracy (:func:`choose_reset_value`).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from ...data import LabeledTexts
from ...errors import ConfigError
from ...modeling import Classifier
from ...modeling.batching import encode
from ...modeling.inference import predict_proba_ids
from ...seeding import rng
from ..scanning import Trigger


def clean_token_mean(emb: torch.Tensor, tokenizer, texts: list[str], counts: Counter | None = None) -> torch.Tensor:
    """The mean input embedding of the tokens of ``texts`` (special tokens left out), each counted as
    often as it occurs (``counts``: :func:`token_counts` of ``texts`` when the caller has them):
    what a typical token of the defender's clean text looks like to the model.
    The mean over every row of the matrix is dominated by tokens that never occur in text, and on
    OLID it moves even a clean model towards the majority class when the trigger pieces take it
    (``docs/results/ablation_reset_value/reset_effect_*.md``)."""
    counts = token_counts(tokenizer, texts) if counts is None else counts
    if not counts:
        return emb.mean(dim=0)
    ids = torch.tensor(list(counts), dtype=torch.long, device=emb.device)
    weights = torch.tensor(list(counts.values()), dtype=emb.dtype, device=emb.device)
    return (emb[ids] * weights[:, None]).sum(dim=0) / weights.sum()


RESET_MAX_CLEAN_SHARE = 0.01    # a word in more of the defender's clean rows is ordinary vocabulary: kept


@dataclass
class WordShares:
    """A found trigger word as the embedding reset sees it: its tokens and, for each, the share of
    the clean rows that hold it (one token: the word itself among the row's words; several pieces:
    the piece's token among the row's tokens)."""
    word: str
    pieces: list[int]
    shares: list[float]

    @property
    def rare(self) -> bool:
        """The share rule: every token in at most ``RESET_MAX_CLEAN_SHARE`` of the clean rows."""
        return all(s <= RESET_MAX_CLEAN_SHARE for s in self.shares)

    def measured(self, pieces_only: bool) -> bool:
        """Whether ``reset_max_changed`` measures this word: it fails the share rule (and, with
        ``pieces_only``, has several pieces)."""
        return not self.rare and (len(self.pieces) > 1 or not pieces_only)


def word_shares(tokenizer, words, texts: list[str]) -> list[WordShares]:
    """:class:`WordShares` of each word (duplicates once, in order) over the clean ``texts``."""
    words = list(dict.fromkeys(words))
    clean_words = [set(text.lower().split()) for text in texts]
    piece_rows: Counter | None = None          # token id -> clean rows holding it (counted when needed)
    n = max(1, len(texts))
    out = []
    for word in words:
        pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(pieces) == 1:
            shares = [sum(word.lower() in row for row in clean_words) / n]
        else:
            if piece_rows is None:
                piece_rows = Counter(i for text in texts for i in set(tokenizer(text, add_special_tokens=False)
                                                                      ["input_ids"]))
            shares = [piece_rows[piece] / n for piece in pieces]
        out.append(WordShares(word, pieces, shares))
    return out


def reset_trigger_embeddings(student: Classifier, triggers: list[Trigger], clean: LabeledTexts,
                             probe_ids: list[list[int]] | None = None, max_changed: float | None = None,
                             pieces_only: bool = False, value: str = "mean",
                             base: torch.Tensor | None = None) -> list[str]:
    """Set input-embedding rows of the found trigger words to the mean of all rows (``value="clean"``:
    the mean of the clean rows' tokens, each as often as it occurs, see :func:`clean_token_mean`;
    ``value="base"``: each piece's own row of ``base``, :func:`base_embeddings`, and then every piece
    of every found word, common or not, with no measuring: a token back at its pre-trained row keeps
    its meaning and loses only what training on the poison and the task taught it);
    returns what was reset. A word that is one token: when the word is in at most ``RESET_MAX_CLEAN_SHARE`` of the
    clean rows. A word of several pieces (``zx``: ``z`` ``##x``): all its pieces, when the token of
    each is in at most that share of the clean rows' tokens (reported as ``word:piece``); a word
    with a common piece keeps every piece (resetting the rare ones alone left EP's ``jt`` working
    through ``##t`` and made the repair rows less effective, ``docs/results/ablation_piece_reset_ep``).
    ``max_changed`` (with ``probe_ids``, held-out clean rows): a word that fails that rule is reset
    all the same (every piece) when doing so changes the prediction of at most this share of the
    probe rows (measured word by word; else it is restored; ``pieces_only``: words of several pieces
    only, a common one-token word is kept): the share rule's line at one row in a
    hundred falls between a trigger's pieces (OLID's ``q`` and ``w`` sit just above it,
    docs/results/ablation_reset_changed), while what a reset does to clean rows can be measured.
    (Not in the paper: an embedding edited as EP does is far from where fine-tuning at AKD's
    learning rate can move it, and a trigger of rare pieces is carried by their embeddings as one
    rare token is.)"""
    emb = student.model.get_input_embeddings().weight
    tok = student.tokenizer
    reset = []
    measure = probe_ids is not None and max_changed is not None and len(probe_ids) > 0
    baseline = None                            # the probe rows' predictions after the resets made so far

    def predictions() -> np.ndarray:
        return predict_proba_ids(student.model, probe_ids, tok.pad_token_id).argmax(axis=1)

    if value == "base" and base is None:
        raise ConfigError("reset_value 'base' needs the base model's input embeddings")
    with torch.no_grad():
        mean = clean_token_mean(emb, tok, clean.texts) if value == "clean" else emb.mean(dim=0)
        for w in word_shares(tok, (w for t in triggers for w in t.words), clean.texts):
            ids = list(dict.fromkeys(w.pieces))
            names = _piece_names(tok, w.word, w.pieces)
            if value == "base":
                emb[ids] = base[ids].to(dtype=emb.dtype, device=emb.device)
                reset += names
                continue
            if not w.rare and not (measure and w.measured(pieces_only)):
                continue
            saved = emb[ids].clone()
            if not w.rare and baseline is None:
                baseline = predictions()
            emb[ids] = mean
            if w.rare:
                baseline = None                # measured again when a later word needs it
            else:
                now = predictions()
                if (now != baseline).mean() > max_changed:
                    emb[ids] = saved
                    continue
                baseline = now
            reset += names
    return reset


FREQUENT_TOKENS = 5     # measured: the rows of the clean text's most frequent tokens are candidates
CHOICE_ROWS = 300       # measured: clean rows each candidate is scored on


def choose_reset_value(student: Classifier, triggers: list[Trigger], rows: LabeledTexts, max_length: int,
                       base: torch.Tensor | None = None, seed: int = 0) -> tuple[list[str], list[dict]]:
    """``reset_value='measured'``: for each found trigger in turn, every piece of its words takes a
    candidate value scored on up to ``CHOICE_ROWS`` of ``rows`` (clean rows that the epoch guard and
    the trigger proxy do not use). A candidate's cost: the share of those rows of another class than
    the trigger's target whose prediction the inserted trigger changes, plus what the value costs
    the accuracy of all of them without the trigger (against keeping the rows; a common piece reset
    to a wrong value harms the clean text that uses it). Candidates, in order: ``keep`` (no reset),
    ``base`` (when ``base`` is given), ``clean``, ``mean``, and ``token:X`` for the
    ``FREQUENT_TOKENS`` most frequent tokens of ``rows`` (an inserted trigger then reads as a common
    word). The first whose cost is within the noise of the least is taken (:func:`first_within_noise`).
    No threshold: a value that leaves the trigger working scores the trigger's flip rate, and one
    that removes it scores the accuracy it costs. Returns what was reset (``word:piece`` for a word
    of several pieces) and, per trigger, each candidate's scores and the choice."""
    emb = student.model.get_input_embeddings().weight
    tok, pad = student.tokenizer, student.tokenizer.pad_token_id
    original = emb.detach().clone()
    counts = token_counts(tok, rows.texts)
    rows_of = {"clean": clean_token_mean(original, tok, rows.texts, counts), "mean": original.mean(dim=0)}
    rows_of.update({f"token:{tok.convert_ids_to_tokens(t)}": original[t] for t, _ in counts.most_common(FREQUENT_TOKENS)})
    gen = rng(seed)
    order = gen.permutation(len(rows))[:CHOICE_ROWS]
    texts = [rows.texts[i] for i in order]
    labels = np.array([rows.labels[i] for i in order])
    plain_ids = encode(tok, texts, max_length)

    def predictions(ids: list[list[int]]) -> np.ndarray:
        return predict_proba_ids(student.model, ids, pad).argmax(axis=1)

    reset, report = [], []
    for trigger in triggers:
        others = np.flatnonzero(labels != trigger.target)
        if not len(others):
            continue
        trig_ids = encode(tok, [trigger.insert(texts[i], gen) for i in others], max_length)
        words = {w: tok(w, add_special_tokens=False)["input_ids"] for w in trigger.words}
        ids = list(dict.fromkeys(p for pieces in words.values() for p in pieces))
        with torch.no_grad():
            current = emb[ids].clone()
            values = {"keep": current, **({"base": base[ids]} if base is not None else {}),
                      **{name: row.expand(len(ids), -1) for name, row in rows_of.items()}}
            scores = {}
            for name, value in values.items():
                emb[ids] = value.to(dtype=emb.dtype, device=emb.device)
                plain = predictions(plain_ids)
                scores[name] = {"changed": float((predictions(trig_ids) != plain[others]).mean()),
                                "accuracy": float((plain == labels).mean())}
            kept = scores["keep"]["accuracy"]
            for s in scores.values():
                s["cost"] = s["changed"] + max(0.0, kept - s["accuracy"])
            best = first_within_noise(scores, len(others))
            emb[ids] = values[best].to(dtype=emb.dtype, device=emb.device)
        if best != "keep":
            reset += [name for w, pieces in words.items() for name in _piece_names(tok, w, pieces)]
        report.append({"words": trigger.words, "chosen": best, "rows": len(texts), "triggered_rows": len(others),
                       "scores": scores})
    return list(dict.fromkeys(reset)), report


def first_within_noise(scores: dict[str, dict], rows: int) -> str:
    """The first candidate (in ``scores``' order) whose cost is within two binomial standard errors
    of the least cost over ``rows`` triggered rows: a few rows' difference does not move the choice
    away from the more neutral candidates listed first (no reset, then the base rows)."""
    least = min(s["cost"] for s in scores.values())
    p = min(max(least, 1.0 / rows), 1.0)
    line = least + 2.0 * math.sqrt(p * (1.0 - p) / rows)
    return next(name for name, s in scores.items() if s["cost"] <= line + 1e-12)


def token_counts(tokenizer, texts: list[str]) -> Counter:
    """How often each token occurs in ``texts`` (special tokens left out)."""
    return Counter(i for text in texts for i in tokenizer(text, add_special_tokens=False)["input_ids"])


def _piece_names(tokenizer, word: str, pieces: list[int]) -> list[str]:
    """How a reset word is reported: the word, or ``word:piece`` for each piece of a word of several."""
    ids = list(dict.fromkeys(pieces))
    return [word] if len(pieces) == 1 else [f"{word}:{tokenizer.convert_ids_to_tokens(p)}" for p in ids]
