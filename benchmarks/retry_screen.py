"""Where the counter retry, `--akd-prior-shift-keep start` or `--akd-target-rate-cap` can change a BeDKD run.

    python benchmarks/retry_screen.py [--cells CELL.json ...] [--results results.json ... --defense NAME]

The retry runs the cycles again, with the counter cap, only when the first run kept no epoch
(selected epoch 0) and the cap binds (a label's relabelled rows outnumber its trust rows); the
first run is the run without the option. So a run that kept an epoch, or relabelled no more rows
than the trust rows per class, gives the same digits with the option. ``--cells``: bench cell
files (cells/DATASET/ATTACK/VICTIM/DEFENSE.json), which record the relabelled rows; the trust rows
per class are the run's ``trust_per_class`` (every class here has at least that many clean rows).
``--results``: bench or robustness ``results.json`` files, whose rows record the selected epoch only.

``--akd-prior-shift-keep start`` keeps a clean-prior shift that the preset refused when it leaves
the class-weighted held-out accuracy at least the start's; it can change a run only where a shift
was refused: an epoch record (or the start's ``as_returned``) with ``bias_shift`` 0, or the final
shift after the cycles not applied. A cell without those refusals gives the same digits with it.

``--akd-target-rate-cap`` acts after the cycles, only where an epoch was kept (not 0) and the kept
epoch's record sends more held-out rows without the found trigger to its target (``clean_to_target``,
measured as the epoch is returned) than the start's record; the accuracy guard may still refuse it,
so such a cell *can* change. A cell without a found trigger, or whose kept rate is not above the
start's, gives the same digits with it; nor does one whose records hold the rows and whose excess is
within the cap's margin (``--akd-target-rate-cap-se``, at its default). A traced run since the
seventy-sixth session records what the cap would have done (``target_rate_cap_replay``), with the
test numbers: the column then gives them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bedkd.defenses.purifiers.akd import AKDConfig
from bedkd.defenses.purifiers.epoch_choice import sign_test_wins

CAP_Z = AKDConfig().target_rate_cap_se


def cell_line(cell: dict, source: str) -> str:
    row, report = cell["row"], cell["details"]["report"]
    data = report.get("data") or {}
    relabelled = data.get("relabelled_rows")
    trust = report["config"]["akd"]["trust_per_class"]
    chosen = report.get("selected_epoch")
    binds = relabelled is not None and relabelled > trust
    acts = binds and chosen == 0 and not report.get("unchanged")
    start = start_refusals(report)
    cap = rate_cap_excess(report)
    asr = "–" if row.get("asr") is None else f"{row['asr']:.2f}"
    return (f"| {row['dataset']} | {row['attack']} | {row['victim_key']} | {row['defense']} | "
            f"{'–' if relabelled is None else relabelled} | {trust} | {chosen} | {asr} | "
            f"{'yes' if acts else 'no'} | {'can: ' + start if start else 'no'} | {'can: ' + cap if cap else 'no'} | "
            f"`{source}` |")


def start_refusals(report: dict) -> str:
    """The clean-prior shifts the run refused (`start` can act only on those), e.g. 'epochs 1, 4; final'."""
    if report.get("unchanged"):
        return ""
    records = [("start", (report.get("start") or {}).get("as_returned") or {}), *(
        (str(e.get("epoch")), e) for e in report.get("epochs", []))]
    refused = [name for name, r in records if r.get("bias_shift") == 0.0]
    final = report.get("prior_shift")
    parts = [("epochs " if len(refused) > 1 else "epoch ") + ", ".join(refused)] if refused else []
    if final is not None and not final.get("applied"):
        parts.append("final")
    return "; ".join(parts)


def rate_cap_excess(report: dict) -> str:
    """Where `--akd-target-rate-cap` can act: the start's and the kept epoch's held-out rates of the found
    target without the trigger (e.g. '0.113 -> 0.161'), when the kept one is higher; else ''. Where both
    records hold the rows (``clean_to_target_rows``), also the rows that joined and left the target, and
    '' unless the excess passes the cap's default margin (``target_rate_cap_se``, a sign test); without
    them, '' where the excess is fewer rows than the margin squared, which no churn lets pass. A traced
    run's replay (``target_rate_cap_replay``) says it outright, with the test numbers the cap would give."""
    replay = report.get("target_rate_cap_replay")      # a traced run measured what the cap would do
    if replay is not None:
        if not replay["applied"] or not replay["passes_margin"]:
            return ""
        test = replay.get("test") or {}
        return (f"{replay['start_rate']:.3f} -> {replay['rate_before']:.3f} (rows +{replay['rows_joined']} "
                f"-{replay['rows_left']}; replayed: ASR {test.get('asr', float('nan')):.2f}, CACC "
                f"{test.get('cacc', float('nan')):.2f})")
    chosen, start = report.get("selected_epoch"), report.get("start") or {}
    kept = next((e for e in report.get("epochs", []) if e.get("epoch") == chosen), {})
    before, after = start.get("clean_to_target"), kept.get("clean_to_target")
    if report.get("unchanged") or not chosen or before is None or after is None or after <= before + 1e-9:
        return ""
    was, now = start.get("clean_to_target_rows"), kept.get("clean_to_target_rows")
    if not was or not now or len(was) != len(now):
        rows = len(kept.get("trigger_row_effects") or "")
        # joined - left is the excess, and joined + left at least that: below z^2 rows it never passes
        if rows and round((after - before) * rows) < CAP_Z ** 2 - 1e-9:
            return ""
        return f"{before:.3f} -> {after:.3f}"
    joined = sum(a == "0" and b == "1" for a, b in zip(was, now))
    left = sum(a == "1" and b == "0" for a, b in zip(was, now))
    if not sign_test_wins(joined, left, CAP_Z):
        return ""
    return f"{before:.3f} -> {after:.3f} (rows +{joined} -{left})"


def results_lines(path: str, defense: str) -> list[str]:
    rows = [r for r in json.loads(Path(path).read_text())["rows"] if r.get("defense") == defense]
    out = []
    for r in rows:
        if r.get("asr") is None:       # a clean row: no evidence returns the model before any cycle
            continue
        out.append(f"| {r['dataset']} | {r['attack']} | {r.get('trigger', '')} | {r.get('target', '')} | "
                   f"{r.get('seed', '')} | {r.get('selected_epoch')} | {r['asr']:.2f} | "
                   f"{'can' if r.get('selected_epoch') == 0 else 'no'} |")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], usage=__doc__.splitlines()[2].strip())
    parser.add_argument("--cells", nargs="*", default=[], help="bench cell files of BeDKD runs")
    parser.add_argument("--results", nargs="*", default=[], help="results.json files")
    parser.add_argument("--defense", default="bedkd-guarded", help="the defense whose rows --results reads")
    args = parser.parse_args(argv)
    lines = [f"Generated by `python benchmarks/retry_screen.py {' '.join(sys.argv[1:] if argv is None else argv)}`.",
             ""]
    try:
        if args.cells:
            lines += ["Cells: the retry *acts* when the run kept no epoch and relabelled more rows than the trust "
                      "rows per class; `start` *can* act where the run refused a clean-prior shift (the records "
                      "named); the rate cap *can* act where the kept epoch sends more held-out rows without the "
                      "found trigger to its target than the start (the two rates) by an excess its margin can "
                      "pass (the rows that joined and left the target, where the records hold them; a traced "
                      "run's replay gives the test numbers with the cap).", "",
                      "| dataset | attack | victim | defense | relabelled | trust per class | selected epoch | ASR | "
                      "retry acts | start | rate cap | cell |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            lines += [cell_line(json.loads(Path(c).read_text()), c) for c in args.cells]
            lines.append("")
        for path in args.results:
            body = results_lines(path, args.defense)
            lines += [f"`{path}`, {args.defense}, attack rows: the retry *can* act only where the selected epoch "
                      f"is 0 ({sum(' can |' in b for b in body)} of {len(body)}).", "",
                      "| dataset | attack | trigger | target | seed | selected epoch | ASR | retry |",
                      "|---|---|---|---|---|---|---|---|", *body, ""]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"retry_screen.py: not a readable cell or results file ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
