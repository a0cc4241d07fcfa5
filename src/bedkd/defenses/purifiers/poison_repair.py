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

Trained alone, rows of one label move the decision threshold: on that OLID victim all of them
towards label 1 sent almost every held-out row there after one cycle (each batch's weights are
normalised within the batch, so the class weights cannot hold the prior when a batch is all one
class). So a seeded draw of at most ``max_rows`` of them is used, each beside a clean trust row of
the label it leaves (its own label, trained as the other repair rows are), so that the pass
teaches which content belongs where rather than a new prior. On that victim it still moves the
threshold past the clean model's and no epoch passes the accuracy guard; on OLID with the minority
class as the target it removes what `guarded` leaves (``docs/results/ablation_repair_poison/``).

Clean-label poison adds the trigger to rows that belong to the target; relabelling them would teach
the model a wrong mapping. The two are told apart on the whole set, not row by row: the rows are
used only when the suspicious model, on the rows without the trigger, puts at least ``min_share``
of them in another label (dirty-label rows read as their own class once the trigger is gone;
clean-label rows stay in the target).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...data import LabeledTexts
from ...modeling.batching import encode
from ...modeling.inference import predict_proba_ids
from ...seeding import rng
from ..scanning import Trigger


@dataclass
class PoisonRepair:
    """The stripped rows, what they are trained towards, and whether they are used."""
    found: int                   # suspicious rows of a found trigger's target holding it (not left empty)
    other_share: float           # share of them the suspicious model puts outside their label, stripped
    min_share: float
    used: bool
    rows: list[int] = field(default_factory=list)        # the drawn rows (when used)
    ids: list[list[int]] = field(default_factory=list)   # those rows without the found triggers, tokenised
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))   # trained towards
    counter: list[int] = field(default_factory=list)     # clean trust rows of the labels they leave, one each

    def report(self) -> dict:
        return {"rows": self.found, "other_share": self.other_share, "min_share": self.min_share,
                "used": self.used, "drawn": len(self.rows), "counter_rows": len(self.counter),
                "relabelled_to": np.bincount(self.labels).tolist() if self.used else []}


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


def poison_repair(teacher, suspect: LabeledTexts, triggers: list[Trigger], max_length: int, min_share: float,
                  clean: LabeledTexts, trust_rows: list[int], max_rows: int, seed: int) -> PoisonRepair:
    """The set-level decision (module doc) and, when used, a seeded draw of at most ``max_rows``
    stripped rows with their new labels and one clean trust row of each one's own label."""
    stripped = stripped_rows(suspect, triggers)
    if not stripped:
        return PoisonRepair(0, 0.0, min_share, False)
    ids = encode(teacher.tokenizer, [text for _, text in stripped], max_length)
    own = np.asarray([suspect.labels[row] for row, _ in stripped], dtype=int)
    proba = predict_proba_ids(teacher.model, ids, teacher.tokenizer.pad_token_id)
    other_share = float((proba.argmax(axis=1) != own).mean())
    if other_share < min_share:
        return PoisonRepair(len(stripped), other_share, min_share, False)
    proba[np.arange(len(own)), own] = -1.0
    gen = rng(seed)
    pick = np.sort(gen.permutation(len(stripped))[:max_rows])
    counter = one_trust_row_each(gen, clean, trust_rows, own[pick])
    return PoisonRepair(len(stripped), other_share, min_share, True, [stripped[i][0] for i in pick],
                        [ids[i] for i in pick], proba.argmax(axis=1)[pick], counter)


def one_trust_row_each(gen, clean: LabeledTexts, trust_rows: list[int], labels) -> list[int]:
    """For each of ``labels`` in turn, a clean trust row of that label not drawn before (a seeded
    draw), while there are any: the counter rows that keep a relabelling pass's classes balanced."""
    pools = {y: [r for r in gen.permutation(trust_rows).tolist() if clean.labels[r] == y] for y in set(labels)}
    return [pools[y].pop() for y in labels if pools[y]]
