"""Rows of earlier bench outputs (their results.json) that a new run can take as they are.

A row is taken when the earlier run's setup equals this one's, the row names its victim's key (the
runner takes it only if that equals this run's key) and it was computed by this code version
(bedkd version + git commit, see ``bedkd.provenance``), unless any version is allowed."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import BedkdError
from .report import in_percent


def reusable_rows(rows: list[dict]) -> dict:
    """Finished rows of an earlier run, by (dataset, attack, defense)."""
    return {(r["dataset"], r["attack"], r["defense"]): r for r in rows if r.get("status") == "ok"}


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# Setup entries that only choose which rows run, or which clean models' floors are reported beside
# them (refilled on every run); every other entry must match for a row to be reused.
MATRIX_KEYS = ("datasets", "attacks", "defenses", "clean_row", "floor_seeds")


def same_setup_rows(earlier_meta: dict, earlier_rows: list[dict], setup: dict) -> dict:
    """Finished rows of an earlier run whose setup equals ``setup`` (the defense's own options included)."""
    def common(s: dict) -> str:
        return _canonical({k: v for k, v in s.items() if k not in MATRIX_KEYS})

    before = earlier_meta.get("setup") or {}
    if not earlier_rows or common(before) != common(setup):
        return {}
    same_options = {name for name, opts in setup["defenses"].items()
                    if _canonical(before.get("defenses", {}).get(name)) == _canonical(opts)}
    return {k: r for k, r in reusable_rows(earlier_rows).items() if k[2] in same_options}


def same_version_rows(rows: dict, code: str | None) -> tuple[dict, dict]:
    """(rows that name their victim key and were computed by code version ``code``, or by any
    version when ``code`` is None; the others, each with the reason)."""
    keep, refused = {}, {}
    for k, r in rows.items():
        if not r.get("victim_key"):
            refused[k] = "no victim key (written before bedkd recorded one)"
        elif code is not None and r.get("code_version") != code:
            refused[k] = f"code version {r.get('code_version') or 'unknown'}"
        else:
            keep[k] = r
    return keep, refused


def reusable(out: Path, others: list[Path], setup: dict, log=print, code: str | None = None) -> tuple[dict, list[dict]]:
    """Rows of earlier runs (``out`` first, then ``others``) with this setup and code version
    ``code`` (None: any version), and those runs' provenance."""
    reuse, runs = {}, []
    for source in [out, *others]:
        path = source / "results.json"
        if source != out and not path.is_file():
            raise BedkdError(f"{path}: not found (--reuse-from takes bench output directories)")
        earlier_meta, earlier_rows = read_results(path)
        same = {k: r for k, r in same_setup_rows(earlier_meta, earlier_rows, setup).items() if k not in reuse}
        found, refused = same_version_rows(same, code)
        for why in dict.fromkeys(refused.values()):
            n = sum(1 for v in refused.values() if v == why)
            hint = " (--reuse-any-version takes them)" if why.startswith("code version") else ""
            log(f"{n} finished rows of the run of {earlier_meta.get('date')} in {source} not reused: {why}{hint}")
        if not found:
            continue
        log(f"{len(found)} finished rows of the run of {earlier_meta.get('date')} in {source} have this setup: reused")
        reuse.update(found)
        for run in [*earlier_meta.get("earlier_runs", []),
                    {k: earlier_meta.get(k) for k in ("command", "date", "machine", "code_version")}]:
            if run not in runs:
                runs.append(run)
    return reuse, runs


def read_results(path: Path) -> tuple[dict, list[dict]]:
    """(meta, rows in percent) of a bench results.json; ({}, []) when there is none."""
    if not path.is_file():
        return {}, []
    try:
        saved = json.loads(path.read_text())
        meta = saved["meta"]
        return meta, [in_percent(r, meta.get("units")) for r in saved["rows"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise BedkdError(f"{path}: not a results file of bedkd bench ({exc}); "
                         "move it away or choose another --out")
