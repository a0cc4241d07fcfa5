"""Several full-scale bench tables merged into one, newest first (docs/results/bench_full_gpu/merged.md).

    python benchmarks/full_scale_merge.py NEW/results.json [OLDER/results.json ...] > merged.md

Each (dataset, attack, defense) takes the row of the first table that finished it with the options the
newest table gives that defense. A row computed with other options is taken only where they differ in
nothing but an option of ``CARRIES`` and the row records that this option cannot have altered it
(marked ‡, its code version beside it); the others are listed as not taken. Rows of one case must come
from one victim: the same victim key, or (keys that named the backbone by its path, which changed from
run to run before bedkd keyed a backbone folder by its content) the same digits (``victim_digits``:
the victim's CACC and ASR to the last place, as the robustness tables match victims). The bar is
`bedkd bench`'s (``meets_bar``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bedkd.bench.report import meets_bar
from bedkd.bench.reuse import read_results
from bedkd.errors import BedkdError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runs import (fmt, isolate_cannot_act, isolate_screened, report_meta, retry_cannot_act,  # noqa: E402
                        towards_target_cannot_act, towards_target_screened, unexplained_cannot_act,
                        unexplained_screened, victim_digits)

# option (dotted) -> when a row computed without it is what a run with it would have returned:
# the counter retry runs only after a first run that found a backdoor and kept no epoch; the rest
# test acts only on a found trigger's label where it reaches its line, as the row records or a
# committed screen of the run shows; the trigger-word tokens (two options) act only on a found word that a
# candidate of the run's trigger search would give a token, as a committed screen shows; sparing rows
# relabelled towards a found trigger's target acts only where the label check finds another label than
# the found trigger's (a committed screen) or the rest test acts.
SCREENED = unexplained_screened()
ISOLATE_SCREENED = isolate_screened()
TOWARDS_SCREENED = towards_target_screened()
CARRIES = {"scan.label_check_counter_retry": retry_cannot_act,
           "scan.label_check_unexplained": lambda row: unexplained_cannot_act(row, SCREENED),
           "akd.isolate_trigger_words": lambda row: isolate_cannot_act(row, ISOLATE_SCREENED),
           "akd.isolate_keep": lambda row: isolate_cannot_act(row, ISOLATE_SCREENED),
           "scan.label_check_towards_target": lambda row: towards_target_cannot_act(row, TOWARDS_SCREENED, SCREENED)}
CARRIED = "‡"


def _flat(options: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in (options or {}).items():
        if isinstance(v, dict):
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def option_changes(before: dict, now: dict) -> set[str]:
    """The dotted options in which two defenses' option sets differ."""
    a, b = _flat(before), _flat(now)
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def merge(tables: list[tuple[str, dict, list[dict]]]) -> tuple[dict, list[str], dict]:
    """({(dataset, attack, defense): row}, reasons rows were not taken, the newest options by defense)."""
    newest: dict = {}
    for _, meta, _ in tables:
        for name, opts in (meta.get("setup") or {}).get("defenses", {}).items():
            newest.setdefault(name, opts)
    merged, refused, victims = {}, [], {}
    for source, meta, rows in tables:
        options = (meta.get("setup") or {}).get("defenses", {})
        for r in rows:
            key = (r["dataset"], r["attack"], r["defense"])
            if r.get("status") != "ok" or key in merged:
                continue
            where = f"{'/'.join(key)} of {source}"
            first = victims.setdefault(key[:2], r)
            if first.get("victim_key") != r.get("victim_key") and victim_digits(first) != victim_digits(r):
                refused.append(f"{where}: victim {r.get('victim_key')}, not {first.get('victim_key')}, "
                               "and its outcomes differ")
                continue
            changed = option_changes(options.get(key[2]), newest.get(key[2]))
            if not changed:
                merged[key] = r
            elif changed <= CARRIES.keys() and all(CARRIES[c](r) for c in changed):
                merged[key] = {**r, "carried": sorted(changed)}
            else:
                why = f"{where}: options differ in {', '.join(sorted(changed))}"
                refused.append(why + (", and the row does not record that this cannot have altered it"
                                      if changed <= CARRIES.keys() else ""))
    return merged, refused, newest


def _cell(row: dict | None) -> str:
    if row is None:
        return "not run"
    mark = {True: " ✓", False: " ✗", None: ""}[meets_bar(row)] + (f" {CARRIED}" if row.get("carried") else "")
    if row["attack"] == "clean":
        text = "unchanged" if row.get("backdoor_found") is False else "changed"
        return f"{text} ({row['cacc_change']:+.2f}){mark}"
    return f"{fmt(row['asr'])} ({row['cacc_change']:+.2f}){mark}"


def render(tables, merged: dict, refused: list[str], defenses: list[str]) -> str:
    datasets, attacks = {}, {"clean": 0}
    for _, meta, _ in tables:
        for name in (meta.get("setup") or {}).get("attacks", []):
            attacks.setdefault(name, len(attacks))
    for k in merged:
        datasets.setdefault(k[0], len(datasets))
        attacks.setdefault(k[1], len(attacks))
    cases = sorted(dict.fromkeys(k[:2] for k in merged), key=lambda c: (datasets[c[0]], attacks[c[1]]))
    lines = ["# Full-scale tables merged", "", f"Generated by `{report_meta('full_scale_merge.py', [])['command']}`.",
             "", "Inputs, newest first:", ""]
    for source, meta, _ in tables:
        device = (meta.get("machine") or {}).get("device")
        lines.append(f"- `{source}`: {meta.get('date')}, code {meta.get('code_version')}, {device}")
    lines += ["", "Each cell: ASR after the defense (its CACC change); ✓ / ✗ the bar (ASR ≤ max(5, floor + 2) and "
              "ΔCACC ≥ −1; a clean row |ΔCACC| ≤ 0.5); " + CARRIED + " a row of an earlier code version whose options "
              "differ only in one that, as the row records, cannot have altered it (`CARRIES` in "
              "benchmarks/full_scale_merge.py).", "",
              "| dataset | attack | victim ASR | floor | " + " | ".join(defenses) + " |",
              "|---|---|---|---|" + "---|" * len(defenses)]
    for dataset, attack in cases:
        victim = merged.get((dataset, attack, "none")) or {}
        lines.append(f"| {dataset} | {attack} | {fmt(victim.get('asr'))} | {fmt(victim.get('floor_asr'))} | " +
                     " | ".join(_cell(merged.get((dataset, attack, d))) for d in defenses) + " |")
    lines += ["", "| defense | cells | meets the bar | carried " + CARRIED + " | mean ASR (attack rows) | "
              "mean CACC change | code versions |", "|---|---|---|---|---|---|---|"]
    for d in defenses:
        rows = [r for k, r in merged.items() if k[2] == d]
        asr = [r["asr"] for r in rows if r["attack"] != "clean" and r.get("asr") is not None]
        change = [r["cacc_change"] for r in rows]
        versions = ", ".join(sorted({r.get("code_version") or "?" for r in rows}))
        lines.append(f"| {d} | {len(rows)} | {sum(1 for r in rows if meets_bar(r))} | "
                     f"{sum(1 for r in rows if r.get('carried'))} | {fmt(sum(asr) / len(asr) if asr else None)} | "
                     f"{fmt(sum(change) / len(change) if change else None)} | {versions} |")
    if refused:
        lines += ["", "Not taken:", "", *[f"- {why}" for why in refused]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+", type=Path, help="bench results.json files, newest first")
    args = ap.parse_args(argv)
    tables = []
    for path in args.tables:
        if not path.is_file():
            print(f"full_scale_merge.py: {path}: not found", file=sys.stderr)
            return 2
        try:
            meta, rows = read_results(path)
        except BedkdError as exc:
            print(f"full_scale_merge.py: {exc}", file=sys.stderr)
            return 2
        tables.append((str(path), meta, rows))
    merged, refused, newest = merge(tables)
    defenses = [d for d in newest if d != "none"]
    sys.stdout.write(render(tables, merged, refused, defenses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
