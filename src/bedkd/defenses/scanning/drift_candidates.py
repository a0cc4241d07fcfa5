"""Trigger candidates from the model itself: words made of the input-embedding rows that moved most
from the pre-trained model (this project's addition; not in BeDKD, Wu et al., AAAI 2026).

The trigger search's other candidates come from the suspicious data: a word over-represented
there. A backdoor whose poisoned rows are not in the data the defender holds (EP edits one
embedding with the attacker's own data; a model from a hub comes with clean or no training data)
leaves no such word, but it leaves its trace in the model: the edited rows moved by about their
whole norm, and a BadNets trigger's pieces are among the rows that moved most
(``docs/results/ablation_reset_measured/embedding_drift.md``). The words tried are the rows among
the ``top`` that moved most which start a word, alone and followed by each continuation piece
among them (``w`` + ``##z``: ``wz``), that no clean row holds (a natural word moves in
fine-tuning too, but the defender's clean text uses it; a word of the clean rows that moved
``OUTLIER`` times as far as the clean words that moved most was edited, and is tried alone too),
best first by the drift of their least-moved piece; a word whose least-moved piece moved less
than ``DRIFT_SHARE`` of the best word's is not tried (an EP trigger's pieces stand out by two orders of magnitude). Each is then
inserted into held-out clean rows of every other class, as any candidate is; a word whose first
piece is a natural word of the clean rows (``liar`` + ``##fa`` in a clean OLID model) counts only
when it flips at least half the threshold more rows than that word alone: a word that speaks for
the label flips rows whatever piece follows it. Several edited words (each a whole token that moved
``OUTLIER`` times as far) are also tried together, each at its own place (SOS edits its words' rows
so that only all of them act).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...modeling import Classifier
from ...modeling.drift import row_drift

DRIFT_SHARE = 0.5     # a word is tried when its least-moved piece moved at least this share of the best word's
OUTLIER = 10.0        # a clean word's row that moved this many times as far as the clean words' rows that moved
NATURAL_ROWS = 20     # most (the median of the top this many) was edited, not fine-tuned


@dataclass(frozen=True)
class DriftWord:
    word: str
    pieces: tuple[str, ...]
    drift: float          # the relative drift of its least-moved piece
    clean_start: str = ""   # its first piece, when that is a word of the clean rows (a natural word + a moved piece)
    together: bool = False  # the edited words together, each inserted at its own place (``word``: them, space-joined)

    def to_dict(self) -> dict:
        return {"word": self.word, "pieces": list(self.pieces), "drift": self.drift,
                **({"clean_start": self.clean_start} if self.clean_start else {}),
                **({"together": True} if self.together else {})}


def drift_words(clf: Classifier, base: torch.Tensor, clean_words: set[str], top: int) -> list[DriftWord]:
    """The words to try (see the module doc), best first; ``clean_words``: every word of the clean rows."""
    tok = clf.tokenizer
    drift = row_drift(clf.model.get_input_embeddings().weight.detach().cpu(), base)
    special = set(tok.all_special_ids)
    rows = [int(i) for i in drift.argsort(descending=True).tolist() if int(i) not in special][:top]
    rows = [i for i in rows if drift[i] > 0]           # a row that did not move is no candidate
    pieces = [(tok.convert_ids_to_tokens(i), float(drift[i])) for i in rows]
    starts = [(p, d) for p, d in pieces if not p.startswith("##") and p.isalnum()]
    tails = [(p[2:], d) for p, d in pieces if p.startswith("##") and p[2:].isalnum()]
    line = OUTLIER * natural_drift(tok, drift, clean_words)
    natural = {s for s, d in starts if s.lower() in clean_words and d < line}
    words = {s: DriftWord(s, (s,), d) for s, d in starts if s not in natural}
    for s, d in starts:
        for t, e in tails:
            words.setdefault(s + t, DriftWord(s + t, (s, "##" + t), min(d, e), s if s in natural else ""))
    found = sorted((w for w in words.values() if (w.word.lower() not in clean_words or len(w.pieces) == 1)
                    and _pieces_of(tok, w)), key=lambda w: -w.drift)      # a start of the clean rows here: edited
    found = [w for w in found if w.drift >= DRIFT_SHARE * found[0].drift] if found else []
    edited = [w for w in found if len(w.pieces) == 1 and w.drift >= line > 0]
    if len(edited) > 1:        # SOS: several edited words act only together
        found.append(DriftWord(" ".join(w.word for w in edited), tuple(w.word for w in edited),
                               min(w.drift for w in edited), together=True))
    return found


def natural_drift(tok, drift: torch.Tensor, clean_words: set[str]) -> float:
    """How far fine-tuning moved the words of the clean rows that moved most: the median drift of the
    ``NATURAL_ROWS`` rows of single-token clean words that moved most (a few edited ones do not move it)."""
    vocab = tok.get_vocab()
    rows = torch.tensor(sorted({vocab[w] for w in clean_words if w in vocab}), dtype=torch.long)
    if not len(rows):
        return 0.0
    return float(drift[rows].sort(descending=True).values[:NATURAL_ROWS].median())


def _pieces_of(tok, word: DriftWord) -> bool:
    """Whether the tokenizer splits the word into exactly its pieces (else inserting it tests something else)."""
    return tuple(tok.tokenize(word.word)) == word.pieces
