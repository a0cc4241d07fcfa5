"""Seeded, per-class sampling of row indices."""
from __future__ import annotations

from collections import defaultdict

from ..seeding import rng
from .records import LabeledTexts


def rows_by_class(labels, seed: int) -> dict[int, list[int]]:
    """Row indices of each class, in a seeded random order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        groups[y].append(i)
    gen = rng(seed)
    return {y: [rows[j] for j in gen.permutation(len(rows))] for y, rows in sorted(groups.items())}


def per_class_split(data: LabeledTexts, sizes: list[int | None], seed: int) -> list[list[int]]:
    """Consecutive disjoint per-class slices: ``sizes[k]`` rows per class for part k (None: the rest)."""
    parts: list[list[int]] = [[] for _ in sizes]
    for rows in rows_by_class(data.labels, seed).values():
        start = 0
        for k, size in enumerate(sizes):
            stop = len(rows) if size is None else min(len(rows), start + size)
            parts[k].extend(rows[start:stop])
            start = stop
    return [sorted(p) for p in parts]


def random_limit(data: LabeledTexts, limit: int | None, seed: int) -> list[int]:
    """A seeded random subset of at most ``limit`` rows (all rows when limit is None), in file order."""
    n = len(data)
    if limit is None or limit >= n:
        return list(range(n))
    order = rng(seed).permutation(n)
    return sorted(int(i) for i in order[:limit])
