"""How a defender's clean pool is divided between the stages, per class.

The rows of each class are taken in file order (``order="file"``, as the authors slice their clean
file) or in a seeded random order (``"shuffled"``). The last ``val`` rows are held out for choosing
the epoch and never trained on; DMM takes the first ``flip`` rows of the rest. The trust rows are
either the first ``trust`` rows of the rest (``layout="nested"``: the DMM rows are a subset) or
the ``trust`` rows after the DMM rows (``"disjoint"``: the authors' separate slices, 80 and 320
rows per class). ``val_extra`` adds up to that many of the rows no stage uses to the held-out ones.
A class with fewer rows gets fewer, as a Python slice does; a class left with no trust row is an
error.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ..data import LabeledTexts
from ..data.sampling import rows_by_class
from ..errors import InputError

LAYOUTS = ("nested", "disjoint")
ORDERS = ("shuffled", "file")


@dataclass(frozen=True)
class CleanSplit:
    flip: list[int]
    trust: list[int]
    val: list[int]

    @property
    def budget(self) -> list[int]:
        """Every clean row some stage reads."""
        return sorted(set(self.flip) | set(self.trust) | set(self.val))


def _rows_in_order(labels, order: str, seed: int) -> dict[int, list[int]]:
    if order == "shuffled":
        return rows_by_class(labels, seed)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        groups[y].append(i)
    return dict(sorted(groups.items()))


@dataclass(frozen=True)
class CleanBudget:
    """How many clean rows of each class each stage reads, and in which order they are taken: the
    one record every defense splits the clean pool with. A method's options name these fields
    (``--akd-trust-per-class`` ...); :meth:`of` builds the record from them."""
    flip_per_class: int = 0
    trust_per_class: int = 0
    val_per_class: int = 0
    seed: int = 0
    layout: str = "nested"
    order: str = "shuffled"
    val_extra: int = 0

    @classmethod
    def of(cls, cfg, flip_per_class: int = 0) -> "CleanBudget":
        """The budget of an options record with ``trust_per_class``, ``val_per_class`` and ``seed``
        (and, where it has them, ``clean_layout``, ``clean_order`` and ``val_extra``); DMM's rows
        come from ``flip_per_class``."""
        return cls(flip_per_class, cfg.trust_per_class, cfg.val_per_class, cfg.seed,
                   getattr(cfg, "clean_layout", "nested"), getattr(cfg, "clean_order", "shuffled"),
                   getattr(cfg, "val_extra", 0))

    def to_dict(self) -> dict:
        return dict(vars(self))

    def split(self, clean: LabeledTexts) -> CleanSplit:
        """The rows of ``clean`` for DMM, trust and validation (an InputError naming the clean file
        when a class has too few)."""
        flip_per_class, trust_per_class, val_per_class = self.flip_per_class, self.trust_per_class, self.val_per_class
        layout = self.layout
        flip, trust, val = [], [], []
        for label, rows in _rows_in_order(clean.labels, self.order, self.seed).items():
            room = len(rows) - val_per_class
            start = min(flip_per_class, room) if layout == "disjoint" else 0
            if room < 1 or (trust_per_class and start >= room):
                need = val_per_class + 1 + (flip_per_class if layout == "disjoint" else 0)
                raise InputError(clean.source, f"class {label} has {len(rows)} clean rows; at least {need} are needed "
                                               f"({val_per_class} held out for validation"
                                               + (f", {flip_per_class} for DMM" if layout == "disjoint" else "")
                                               + ", 1 for trust)")
            flip.extend(rows[:min(flip_per_class, room)])
            trust.extend(rows[start:min(start + trust_per_class, room)])
            val.extend(rows[len(rows) - val_per_class:] if val_per_class else [])
            unused = rows[max(min(flip_per_class, room), start + trust_per_class):room]
            val.extend(unused[:self.val_extra])
        return CleanSplit(sorted(flip), sorted(trust), sorted(val))
