"""Detection quality of a data filter (BKI, CUBE), on the same definitions as DMM's.

As in :meth:`bedkd.defenses.dmm.Detection.metrics`: precision = removed rows that are poisoned /
removed rows, recall = removed rows that are poisoned / all poisoned rows of the suspicious set
(DMM's ``recall_all``). Both are in percent, as DMM's are, and None where the denominator is zero.
"""
from __future__ import annotations

from ...errors import BedkdError


def _row_set(rows, n_rows: int, what: str) -> set[int]:
    out = set()
    for row in rows:
        row = int(row)
        if not 0 <= row < n_rows:
            raise BedkdError(f"{what}: row {row} is outside the suspicious data ({n_rows} rows)")
        out.add(row)
    return out


def _pct(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def filter_metrics(removed_rows, poisoned_rows, n_rows: int) -> dict:
    """Precision, recall and amount removed (percentages) of a filter on ``n_rows`` suspicious rows.

    ``removed_rows`` and ``poisoned_rows`` are 0-based row indices; duplicates count once.
    """
    if n_rows < 0:
        raise BedkdError(f"n_rows must be >= 0, got {n_rows}")
    removed = _row_set(removed_rows, n_rows, "removed rows")
    poisoned = _row_set(poisoned_rows, n_rows, "poisoned rows")
    hits = len(removed & poisoned)
    clean_total = n_rows - len(poisoned)
    return {
        "rows": n_rows,
        "removed": len(removed),
        "removed_pct": _pct(len(removed), n_rows),
        "poisoned_total": len(poisoned),
        "true_poison": hits,
        "precision_pct": _pct(hits, len(removed)),
        "recall_pct": _pct(hits, len(poisoned)),
        "clean_removed": len(removed) - hits,
        "clean_removed_pct": _pct(len(removed) - hits, clean_total),   # share of the clean rows lost
    }
