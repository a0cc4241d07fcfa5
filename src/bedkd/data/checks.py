"""Checks on loaded data against the model it is used with."""
from __future__ import annotations

from ..errors import InputError
from .records import LabeledTexts


def check_labels(data: LabeledTexts, num_labels: int) -> None:
    """Every label must be a class of the model: 0 <= label < num_labels."""
    for row, label in enumerate(data.labels):
        if not 0 <= label < num_labels:
            raise InputError(data.source, f"label {label} is outside the model's classes 0..{num_labels - 1}",
                             data.line_of(row))


def require_all_classes(data: LabeledTexts, num_labels: int, purpose: str) -> None:
    """The label flip maps every class onto another, so each class must be present."""
    counts = data.class_counts()
    missing = [c for c in range(num_labels) if counts.get(c, 0) == 0]
    if missing:
        raise InputError(data.source, f"class {', '.join(map(str, missing))} has no sample; {purpose} "
                                      f"needs every class 0..{num_labels - 1}")


def check_rows(rows: list[int], n: int, source) -> None:
    for row in rows:
        if row >= n:
            raise InputError(source, f"row {row} is past the end of the data ({n} rows)")
