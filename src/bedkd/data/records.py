"""Labelled text as read from a user file, with the line each row came from."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class LabeledTexts:
    texts: list[str]
    labels: list[int]
    source: str = "<memory>"
    lines: list[int] = field(default_factory=list)  # 1-based file line of each row

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise ValueError("texts and labels differ in length")
        if not self.lines:
            object.__setattr__(self, "lines", [0] * len(self.texts))

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_empty(self) -> int:
        return sum(1 for t in self.texts if not t.strip())

    def class_counts(self) -> dict[int, int]:
        return dict(sorted(Counter(self.labels).items()))

    def subset(self, indices: Sequence[int]) -> "LabeledTexts":
        idx = list(indices)
        return LabeledTexts([self.texts[i] for i in idx], [self.labels[i] for i in idx],
                            self.source, [self.lines[i] for i in idx])

    def with_labels(self, labels: Sequence[int]) -> "LabeledTexts":
        return LabeledTexts(list(self.texts), list(labels), self.source, list(self.lines))

    def line_of(self, row: int) -> int | None:
        return self.lines[row] or None
