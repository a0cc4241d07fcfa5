"""``--akd-repair-poison``: the poisoned rows themselves, without their trigger, trained towards another label.

Not in BeDKD (Wu et al., AAAI 2026, arXiv:2508.01595); an opt-in of this project. Dirty-label
poison gives rows of other classes the target label. The victim learns the trigger from them, and
also some of their content: on the security table's OLID target-0 victim the test rows without a
trigger go to the target far more often than a clean model sends them (a lean the repair rows,
which teach only that the trigger carries no label, leave in place;
``docs/results/ablation_repair_originals/``). The rows that taught it are in the suspicious data:
the rows of a found trigger's target that hold the trigger. With every found trigger of that target
removed, they are trained towards the label the suspicious model itself gives them among the
other labels (for two classes: the other one).

Clean-label poison adds the trigger to rows that belong to the target; relabelling them would teach
the model a wrong mapping. The two are told apart on the whole set, not row by row: the rows are
used only when the suspicious model, on the rows without the trigger, puts at least ``min_share``
of them in another label (dirty-label rows read as their own class once the trigger is gone;
clean-label rows stay in the target).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...data import LabeledTexts
from ...modeling.batching import encode
from ...modeling.inference import predict_proba_ids
from ..scanning import Trigger


@dataclass
class PoisonRepair:
    """The stripped rows, what they are trained towards, and whether they are used."""
    rows: list[int]              # suspicious rows of a found trigger's target holding it
    ids: list[list[int]]         # those rows without any found trigger of their label, tokenised
    labels: np.ndarray           # the suspicious model's most likely label other than the row's own
    other_share: float           # share of the stripped rows it already puts outside their label
    min_share: float
    used: bool

    def report(self) -> dict:
        return {"rows": len(self.rows), "other_share": self.other_share, "min_share": self.min_share,
                "used": self.used, "relabelled_to": np.bincount(self.labels).tolist() if self.used else []}


def stripped_rows(suspect: LabeledTexts, triggers: list[Trigger]) -> list[tuple[int, str]]:
    """(row, text without every found trigger of its label) for each suspicious row whose label is a
    found trigger's target and that holds that trigger; rows left empty are skipped."""
    out = []
    for row, (text, label) in enumerate(zip(suspect.texts, suspect.labels)):
        mine = [t for t in triggers if t.target == label]
        if not any(t.held_by(text) for t in mine):
            continue
        for t in mine:
            text = t.remove(text)
        if text.strip():
            out.append((row, text))
    return out


def poison_repair(teacher, suspect: LabeledTexts, triggers: list[Trigger], max_length: int,
                  min_share: float) -> PoisonRepair:
    """The rows, their new labels and the set-level decision (module doc)."""
    stripped = stripped_rows(suspect, triggers)
    rows = [row for row, _ in stripped]
    ids = encode(teacher.tokenizer, [text for _, text in stripped], max_length)
    own = np.asarray([suspect.labels[row] for row in rows], dtype=int)
    if not rows:
        return PoisonRepair([], [], own, 0.0, min_share, False)
    proba = predict_proba_ids(teacher.model, ids, teacher.tokenizer.pad_token_id)
    other_share = float((proba.argmax(axis=1) != own).mean())
    proba[np.arange(len(own)), own] = -1.0
    return PoisonRepair(rows, ids, proba.argmax(axis=1), other_share, min_share, other_share >= min_share)
