"""How a defender's clean pool is divided between the stages, per class and seeded.

Rows of each class are shuffled once; the first ``flip`` rows feed DMM, the first ``trust`` rows
feed AKD's trust step (so the DMM rows are a subset), and the last ``val`` rows are held out
for choosing the epoch. The held-out rows are never trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..data import LabeledTexts
from ..data.sampling import rows_by_class
from ..errors import InputError


@dataclass(frozen=True)
class CleanSplit:
    flip: list[int]
    trust: list[int]
    val: list[int]


def split_clean(clean: LabeledTexts, flip_per_class: int, trust_per_class: int, val_per_class: int,
                seed: int) -> CleanSplit:
    flip, trust, val = [], [], []
    for label, rows in rows_by_class(clean.labels, seed).items():
        room = len(rows) - val_per_class
        if room < 1:
            raise InputError(clean.source, f"class {label} has {len(rows)} clean rows; at least "
                                           f"{val_per_class + 1} are needed ({val_per_class} held out for validation)")
        flip.extend(rows[:min(flip_per_class, room)])
        trust.extend(rows[:min(trust_per_class, room)])
        val.extend(rows[len(rows) - val_per_class:] if val_per_class else [])
    return CleanSplit(sorted(flip), sorted(trust), sorted(val))
