"""A token of its own for a found trigger word of several pieces (this project's addition to BeDKD,
Wu et al., AAAI 2026, arXiv:2508.01595; not in the paper).

The embedding reset (:mod:`.trigger_reset`) cannot reset a trigger word whose pieces are common:
EP's ``jt`` is ``j ##t``, and ``##t`` ends many clean words, so resetting it harms clean text and the
share rule keeps the word (on AG News Business vs Sci/Tech three of four misses came from it,
docs/results/new_task_agnews_bs). Here the returned model's tokenizer reads the whole word, where it
stands as a word of its own, as one new token whose input embedding is the mean of the matrix's rows
(``reset_value='clean'``: of the clean rows' tokens): the trigger no longer reaches the pieces that
carry the backdoor, while the clean text that uses those pieces inside other words reads as before.
Only words in at most ``RESET_MAX_CLEAN_SHARE`` of the clean rows (as whole words) and made of
letters and digits (so that the new token matches where the word's pieces did) are given one. The
saved tokenizer carries the new tokens (``added_tokens`` of ``tokenizer.json``): load the purified
model with its own tokenizer.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from transformers import AddedToken

from ...data import LabeledTexts
from ...modeling import Classifier
from ..scanning import Trigger
from .epoch_choice import sign_test_wins
from .trigger_reset import RESET_MAX_CLEAN_SHARE, clean_token_mean

ISOLATE_PAIRED_Z = 2.0      # isolate_keep='paired': standard errors of the sign test the tokens must win by


def words_to_isolate(tokenizer, triggers: list[Trigger], clean_texts: list[str], reset: list[str]) -> list[str]:
    """The found trigger words that get a token of their own: several pieces, none of them reset
    (``reset``: what :func:`.trigger_reset.reset_trigger_embeddings` reports, ``word:piece``), letters
    and digits only, and in at most ``RESET_MAX_CLEAN_SHARE`` of the clean rows as a word."""
    done = {name.split(":", 1)[0] for name in reset if ":" in name}
    rows = [set(text.lower().split()) for text in clean_texts]
    out = []
    for word in dict.fromkeys(w for t in triggers for w in t.words):
        if word in done or not word.isalnum() or len(tokenizer(word, add_special_tokens=False)["input_ids"]) < 2:
            continue
        if sum(word.lower() in row for row in rows) <= RESET_MAX_CLEAN_SHARE * max(1, len(rows)):
            out.append(word)
    return out


def isolate_trigger_words(clf: Classifier, triggers: list[Trigger], clean: LabeledTexts, reset: list[str],
                          value: str = "mean") -> tuple[Classifier, dict]:
    """``clf`` with :func:`words_to_isolate` added to a copy of its tokenizer as whole-word tokens
    (matched after the tokenizer's normalisation, e.g. lower case) and the model's input embeddings
    grown by one row each, set to the mean of the existing rows (``value='clean'``: the mean of the
    clean rows' tokens). The model is changed in place; the tokenizer is a copy (the suspicious
    model's stays as it was). Returns the classifier and a report: each word and its new token id."""
    tok = clf.tokenizer
    words = words_to_isolate(tok, triggers, clean.texts, reset)
    if not words:
        return clf, {}
    emb = clf.model.get_input_embeddings().weight
    with torch.no_grad():
        row = clean_token_mean(emb, tok, clean.texts) if value == "clean" else emb.mean(dim=0)
        row = row.detach().clone()
    new_tok = copy.deepcopy(tok)
    forms = {w: _normalised(tok, w) for w in words}
    new_tok.add_tokens([AddedToken(f, single_word=True, normalized=True) for f in forms.values()])
    clf.model.resize_token_embeddings(len(new_tok))
    ids = {w: new_tok.convert_tokens_to_ids(f) for w, f in forms.items()}
    with torch.no_grad():
        emb = clf.model.get_input_embeddings().weight
        for i in ids.values():
            emb[i] = row.to(dtype=emb.dtype, device=emb.device)
    return Classifier(clf.model, new_tok, clf.source), ids


def _normalised(tokenizer, word: str) -> str:
    """``word`` as the tokenizer's normaliser writes it (lower case for an uncased model), which is
    what a whole-word token added with ``normalized=True`` is matched against."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = backend.normalizer if backend is not None else None
    return normalizer.normalize_str(word) if normalizer is not None else word


def isolate_counts(before: np.ndarray, after: np.ndarray) -> dict:
    """The held-out trigger rows sent to their target without (``before``) and with (``after``) the new
    tokens: both shares and, row by row, how many rows the tokens take off the target and send to it."""
    return {"trigger_proxy_without": float(before.mean()), "trigger_proxy_with": float(after.mean()),
            "proxy_rows": int(len(before)), "rows_off_target": int((before & ~after).sum()),
            "rows_to_target": int((~before & after).sum())}


def isolate_keeps(counts: dict, rule: str) -> bool:
    """Whether ``rule`` keeps the new tokens on :func:`isolate_counts`: 'lower' when more rows leave the
    target than join it; 'paired' only when they do by at least ``ISOLATE_PAIRED_Z`` standard errors of
    a sign test on the rows that change (d >= z * sqrt(n); with none sent to the target, at least four)."""
    off, to = counts["rows_off_target"], counts["rows_to_target"]
    if rule == "lower":
        return off > to
    if rule == "paired":
        return sign_test_wins(off, to, ISOLATE_PAIRED_Z)
    raise ValueError(f"isolate_keeps: unknown rule {rule!r}")
