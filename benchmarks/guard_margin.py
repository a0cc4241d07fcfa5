"""How far AKD's epoch guard lets the held-out accuracy fall, and what the test set then showed.

    python benchmarks/guard_margin.py --workdir ~/.cache/bedkd/sec --out docs/results/guard_margin
    python benchmarks/guard_margin.py --workdir W --records docs/results/guard_margin/records.json --out ...

`guarded` keeps an epoch whose class-weighted accuracy on the held-out clean rows is within
``max_cacc_drop`` (1 point) plus ``guard_se`` (2) standard errors of the model before the cycles.
With few held-out rows (SST-2's clean pool leaves 232) two standard errors are several points.
This reads every cached bench cell of ``--workdir`` whose BeDKD report chose its epoch by that
guard (any option set, ablations included) and lists, per cell, the chosen epoch's held-out drop,
its standard error, and the cell's CACC change on the test set; the summary splits the cells by
whether the held-out drop was within ``max_cacc_drop`` itself. Nothing is trained or evaluated.

``--replay guard_se=0 --replay guard_margin_cap=1`` also asks what another rule (any of AKD's
selection options, ``name=value`` joined by commas) would have kept, without training: the cycles
train the same way whatever the rule keeps, so the rule is replayed (``epoch_choice.replay_choice``, the
rule's own code) on each run's per-epoch records. A cell's outcome is then known when the rule keeps
the same epoch (the cell's numbers) or the model before the cycles with no embedding reset (the
victim's numbers), or another epoch that ``--trace-epochs`` measured; else it needs a rerun. A cell whose
first run kept nothing and whose label check's counter cap then ran the cycles again is replayed on
the run the rule would have kept an epoch of (:func:`replay_run`). Replaying each cell's own options must give its recorded
epoch: the count of cells where it does not is reported (a code version whose rule differed).
Writes ``results.json`` (command, date, code version, one row per cell), ``results.md`` and
``records.json``: each cell's per-epoch records and selection options, which ``--records`` reads back
(with or without a workdir), so that a cache that is lost does not take the replays with it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bedkd.outputs import atomic_write_text

if TYPE_CHECKING:
    from bedkd.defenses.purifiers.epoch_choice import Replay

HARM = -1.0     # the bar on an attack cell's CACC change
PRESET_CELL = re.compile(r"/bedkd-guarded(\.[0-9a-f]+)?\.json$")    # the preset's cells (traced ones: a key of their own)


ROW_FIELDS = ("dataset", "attack", "defense", "status", "victim_key", "victim_cacc", "victim_asr", "floor_asr", "cacc",
              "cacc_change", "asr", "second_asr", "second_floor_asr", "code_version")


def guarded_cells(workdir: Path | None, records: list[dict] = ()):
    """(cell, saved cell, BeDKD report) of each cell whose cycles ran under the ``guarded`` rule: the
    cached cells of ``workdir``, then those of ``records`` (an earlier run's ``records.json``: a
    workdir can be lost, its records stay) that the workdir does not hold (by the cell's content key).
    A cell run again with ``--trace-epochs`` (the same digits) stands for its untraced twin."""
    seen, found = set(), []
    for path in sorted((workdir / "cells").glob("*/*/*/*.json")) if workdir else ():
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        report = (saved.get("details") or {}).get("report") if isinstance(saved, dict) else None
        if report and report.get("epochs") and report["config"]["akd"].get("selection") == "guarded":
            found.append((path, saved, report))
    traced = {_twin(path, report) for path, _, report in found if "test" in report.get("start", {})}
    for path, saved, report in found:
        if "test" in report.get("start", {}) or _twin(path, report) not in traced:
            seen.add(saved.get("key"))
            yield str(path.relative_to(workdir)), saved, report
    for record in records:
        if record.get("key") is None or record["key"] not in seen:
            seen.add(record.get("key"))
            yield record["cell"], record, record["details"]["report"]


def _twin(path: Path, report: dict) -> tuple:
    """A cell's victim folder, defense name and options: what a traced rerun shares with it."""
    return path.parent, path.name.split(".")[0], json.dumps(report["config"], sort_keys=True)


def compact(cell: str, saved: dict, report: dict, source: str) -> dict:
    """What replaying a cell needs, kept in ``records.json``: its row's numbers and the report's
    selection options, start and per-epoch records."""
    return {"key": saved.get("key"), "workdir": saved.get("workdir", source), "cell": cell,
            "row": {k: saved["row"].get(k) for k in ROW_FIELDS},
            "details": {"report": {"config": {"akd": report["config"]["akd"],
                                              "scan": {k: (report["config"].get("scan") or {}).get(k)
                                                       for k in ("label_check_counter_retry",)}},
                                   "data": {k: (report.get("data") or {}).get(k)
                                            for k in ("val_rows", "reset_embeddings", "relabelled_rows")},
                                   **{k: report.get(k) for k in ("start", "epochs", "selected_epoch", "stop_reason",
                                                                 "counter_retry")}}}}


def read_records(paths: list[str]) -> list[dict]:
    """The cells of earlier ``records.json`` files; ValueError naming the file when one is not such a file."""
    out = []
    for path in paths:
        try:
            saved = json.loads(Path(path).read_text())
            cells_ = saved["cells"]
            if not all(isinstance(c, dict) and "cell" in c and "report" in c.get("details", {}) for c in cells_):
                raise KeyError("cells")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a guard_margin records.json ({err.__class__.__name__}: {err})") from None
        out += cells_
    return out


def cells(workdir: Path | None, records: list[dict] = ()) -> list[dict]:
    """One row per cell whose epoch was chosen by the guard (a report with epochs and a chosen one)."""
    out = []
    for cell, saved, report in guarded_cells(workdir, records):
        if not report.get("selected_epoch"):
            continue
        akd = report["config"]["akd"]
        chosen = report["epochs"][report["selected_epoch"] - 1]
        row = saved["row"]
        out.append({"cell": cell, "dataset": row["dataset"], "attack": row["attack"],
                    "victim_key": row.get("victim_key"), "held_out_rows": report["data"].get("val_rows"),
                    "held_out_drop": 100 * (report["start"]["val_acc_weighted"] - chosen["val_acc_weighted"]),
                    "held_out_se": 100 * (chosen.get("val_change_se") or 0.0),
                    "max_cacc_drop": akd.get("max_cacc_drop"), "guard_se": akd.get("guard_se", 2.0),
                    "selected_epoch": report["selected_epoch"], "cacc_change": row["cacc_change"],
                    "asr": row.get("asr"), "code_version": row.get("code_version")})
    return out


OUTCOMES = {"same": "the same epoch (the cell's numbers)",
            "victim": "the model before the cycles, no embedding reset (the victim's numbers)",
            "reset only": "the model before the cycles with its trigger embeddings reset (not measured)",
            "traced": "another epoch, measured on the test rows by --trace-epochs",
            "other epoch": "another epoch (not measured: rerun, with --trace-epochs)",
            "undetermined": "the run stopped before this rule would have, or did not record the start as "
                            "returned that start_candidate weighs (rerun)",
            "no epoch": "no usable epoch"}


def parse_rule(text: str) -> dict:
    """``name=value[,name=value]`` (values as JSON: numbers, null) -> AKD option changes; ValueError if malformed."""
    changes = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"'{part}' is not name=value")
        try:
            changes[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"'{value}' is not a number or null") from None
    return changes


def replay(workdir: Path | None, rules: list[str], records: list[dict] = ()) -> list[dict]:
    """Per guarded cell: the epoch its own options keep on replay (it must be the recorded one) and, per
    rule in ``rules`` (:func:`parse_rule`), the epoch it keeps, its outcome and, when known, the cell's
    numbers under it."""
    from bedkd.bench.report import meets_bar
    from bedkd.defenses.purifiers.akd import AKDConfig
    out = []
    for cell, saved, report in guarded_cells(workdir, records):
        own = AKDConfig.from_dict(report["config"]["akd"])
        row = saved["row"]
        item = {"cell": cell, "dataset": row["dataset"], "attack": row["attack"],
                "preset_cell": PRESET_CELL.search(cell) is not None, "selected_epoch": report.get("selected_epoch"),
                "own_replay": replay_run(report, own)[1].epoch,
                "victim_asr": row.get("victim_asr"), "floor_asr": row.get("floor_asr"),
                "cacc_change": row.get("cacc_change"), "asr": row.get("asr"), "meets_bar": meets_bar(row),
                "rules": {}, "passing_epochs": passing_epochs(report, row)}
        for rule in rules:
            cfg = own.replace(**parse_rule(rule))
            records, got = replay_run(report, cfg)
            numbers = None
            if not got.exact:
                outcome = "undetermined"
            elif got.epoch is None:
                outcome = "no epoch"
            elif got.epoch == item["selected_epoch"] and records is report["epochs"]:
                outcome, numbers = "same", row
            elif got.epoch == 0 and not (report.get("data") or {}).get("reset_embeddings"):
                outcome = "victim"
                numbers = {**row, "cacc": row["victim_cacc"], "asr": row["victim_asr"], "cacc_change": 0.0,
                           "second_asr": None}        # the victim's: its first backdoor alone decides
            elif (test := traced({**report, "epochs": records}, got.epoch, cfg)) is not None:
                outcome = "traced"
                numbers = {**row, "cacc": test["cacc"], "asr": test.get("asr"), "second_asr": test.get("second_asr"),
                           "cacc_change": test["cacc"] - row["victim_cacc"]}
            else:
                outcome = "reset only" if got.epoch == 0 else "other epoch"
            item["rules"][rule] = {"epoch": got.epoch, "outcome": outcome,
                                        "cacc_change": None if numbers is None else numbers["cacc_change"],
                                        "asr": None if numbers is None else numbers["asr"],
                                        "meets_bar": None if numbers is None else meets_bar(numbers)}
        out.append(item)
    return out


def replay_run(report: dict, cfg) -> tuple[list[dict], Replay]:
    """The records a rule ``cfg`` keeps an epoch of, and its :func:`replay_choice` on them. A cell whose
    first run kept nothing and whose relabelled rows the label check's counter cap then cut
    (``--scan-label-check-counter-retry``) ran the cycles twice (its report's ``counter_retry`` holds the
    first run): the rule keeps an epoch of the first run when it finds one there, else of the second. A
    rule that keeps nothing of a run that was not retried, where the retry could have run, is not
    ``exact`` (the second run was never trained)."""
    from bedkd.defenses.purifiers.epoch_choice import Replay, replay_choice
    first = report.get("counter_retry")
    if first:
        got = replay_choice(first["epochs"], report["start"], cfg)
        if got.epoch != 0 or not got.exact:
            return first["epochs"], got
    got = replay_choice(report["epochs"], report["start"], cfg)
    could_retry = not first and got.epoch == 0 and report.get("selected_epoch") != 0 \
        and ((report.get("config") or {}).get("scan") or {}).get("label_check_counter_retry") \
        and (report.get("data") or {}).get("relabelled_rows")
    return report["epochs"], Replay(got.epoch, got.stopped_after, got.exact and not could_retry)


def passing_epochs(report: dict, row: dict) -> list[int] | None:
    """A traced cell's epochs whose test numbers meet the bar (0: the start, as returned when it
    records that), whatever a rule keeps: whether any rule could have; None when not traced."""
    from bedkd.bench.report import meets_bar
    start = report.get("start") or {}
    if "test" not in start:
        return None
    records = [(0, start.get("as_returned", start)), *((e["epoch"], e) for e in report.get("epochs", []))]
    return [epoch for epoch, r in records if r.get("test") and meets_bar(
        {**row, "cacc": r["test"]["cacc"], "asr": r["test"].get("asr"), "second_asr": r["test"].get("second_asr"),
         "cacc_change": r["test"]["cacc"] - row["victim_cacc"]})]


def traced(report: dict, epoch: int, cfg) -> dict | None:
    """The test numbers ``--trace-epochs`` recorded for ``epoch`` as the rule ``cfg`` would return it
    (epoch 0: the start, or the start as returned when ``start_candidate`` keeps it, its prior shift
    applied); None when the cell was not traced."""
    start = report.get("start") or {}
    if epoch == 0:
        kept_start = cfg.start_candidate and "as_returned" in start
        return (start["as_returned"] if kept_start and cfg.clean_prior_shift else start).get("test")
    return next((e.get("test") for e in report.get("epochs", []) if e.get("epoch") == epoch), None)


def _traced_summary(items: list[dict]) -> list[str]:
    """Of the cells run with --trace-epochs: how many have an epoch that meets the bar on the test rows,
    and how many the recorded rule met it on (the rest of the misses are the training's, not the rule's)."""
    traced = [i for i in items if i.get("passing_epochs") is not None]
    if not traced:
        return []
    lines = [f"Traced cells (`--trace-epochs`): {len(traced)}; the kept epoch meets the bar on "
             f"{sum(bool(i['meets_bar']) for i in traced)}; some epoch (the start included) meets it on "
             f"{sum(bool(i['passing_epochs']) for i in traced)}.", "",
             "| dataset | attack | cell | kept epoch | meets the bar | epochs that meet it |", "|---|---|---|---|---|---|"]
    for i in traced:
        lines.append(f"| {i['dataset']} | {i['attack']} | `{i['cell']}` | {i['selected_epoch']} | "
                     f"{'yes' if i['meets_bar'] else 'no'} | {', '.join(map(str, i['passing_epochs'])) or 'none'} |")
    return lines + [""]


def replay_markdown(items: list[dict], rules: list[str]) -> list[str]:
    lines = ["", "## Another rule, replayed", "",
             "The rule with other options, replayed on each guarded cell's per-epoch records (nothing "
             "trained). *preset cells*: `bedkd-guarded.json`, the `guarded` preset's own cells (the robustness "
             "table's); *all*: every cell chosen by the guard, ablations included. "
             f"Replaying each cell's own options gave its recorded epoch on "
             f"{sum(i['own_replay'] == i['selected_epoch'] for i in items)} of {len(items)} cells.", "",
             *_traced_summary(items)]
    for key in rules:
        lines += [f"### {key}", "",
                  "| cells | outcome | count | meet the bar now | meet it under this margin | test ΔCACC < -1 now "
                  "| test ΔCACC < -1 under it |", "|---|---|---|---|---|---|---|"]
        for label, pick in (("preset cells", lambda i: i["preset_cell"]), ("all", lambda i: True)):
            sel = [i for i in items if pick(i) and i["own_replay"] == i["selected_epoch"]]
            for outcome in OUTCOMES:
                got = [i for i in sel if i["rules"][key]["outcome"] == outcome]
                if not got:
                    continue
                known = [i["rules"][key] for i in got if i["rules"][key]["meets_bar"] is not None]
                under = "-" if not known else f"{sum(bool(m['meets_bar']) for m in known)}"
                under_harm = "-" if not known else f"{sum(m['cacc_change'] < HARM for m in known)}"
                lines.append(f"| {label} | {OUTCOMES[outcome]} | {len(got)} | {sum(bool(i['meets_bar']) for i in got)}"
                             f" | {under} | {sum((i['cacc_change'] or 0.0) < HARM for i in got)} | {under_harm} |")
        changed = [i for i in items if i["own_replay"] == i["selected_epoch"]
                   and i["rules"][key]["outcome"] not in ("same", "no epoch")]
        if changed:
            lines += ["", "Cells this rule changes:", "",
                      "| dataset | attack | cell | epoch now | ΔCACC now | ASR now | epoch under it | outcome |",
                      "|---|---|---|---|---|---|---|---|"]
            for i in changed:
                m = i["rules"][key]
                lines.append(f"| {i['dataset']} | {i['attack']} | `{i['cell']}` | {i['selected_epoch']} | "
                             f"{i['cacc_change']:+.1f} | {i['asr']:.1f} | "
                             f"{'-' if m['epoch'] is None else m['epoch']} | {m['outcome']} |")
        lines.append("")
    return lines


def drop_bands(rows: list[dict], width: float = 1.0, last: float = 4.0) -> list[tuple]:
    """(low, high, rows) per non-empty band of held-out drop: <= 0, then (k, k + width], then > ``last``."""
    edges = [0.0] + [width * (i + 1) for i in range(int(last / width))]
    bands = [(None, 0.0)] + list(zip(edges[:-1], edges[1:])) + [(last, None)]
    out = []
    for low, high in bands:
        sel = [r for r in rows if (low is None or r["held_out_drop"] > low + 1e-9)
               and (high is None or r["held_out_drop"] <= high + 1e-9)]
        if sel:
            out.append((low, high, sel))
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# The epoch guard's margin and the test set", "",
             f"Generated by `{meta['command']}` on {meta['date']}, code {meta['code_version']}, from "
             + " and ".join([f"the cached cells of `{meta['workdir']}`"] * bool(meta.get("workdir"))
                            + [f"the records of {', '.join(f'`{r}`' for r in meta.get('records') or [])}"] * bool(meta.get("records")))
             + " (each row names its cell file and the code version that computed it; `records.json` keeps every "
             "cell's per-epoch records, so that a rule can be replayed on them when the workdir is gone: "
             "`--records`).", "",
             "*held-out drop*: the class-weighted accuracy on the held-out clean rows before the cycles less that of "
             "the chosen epoch, in points; *SE*: its standard error; *test ΔCACC*: the cell's CACC change on the "
             "test set. Several cells can share a victim (ablations of one victim).", "",
             "## Summary", "",
             "| held-out drop | cells | victims | test ΔCACC < -1 | worst test ΔCACC |", "|---|---|---|---|---|"]
    for label, pick in (("within max_cacc_drop", lambda r: r["held_out_drop"] <= r["max_cacc_drop"]),
                        ("beyond it, within the noise margin", lambda r: r["held_out_drop"] > r["max_cacc_drop"])):
        sel = [r for r in rows if pick(r)]
        worst = min((r["cacc_change"] for r in sel), default=None)
        lines.append(f"| {label} | {len(sel)} | {len({r['victim_key'] for r in sel})} | "
                     f"{sum(r['cacc_change'] < HARM for r in sel)} | "
                     + ("-" if worst is None else f"{worst:+.1f}") + " |")
    lines += ["", "By the chosen epoch's held-out drop, in bands of one point (the first band: no drop at all):", "",
              "| held-out drop | cells | victims | test ΔCACC < -1 | median test ΔCACC | worst test ΔCACC |",
              "|---|---|---|---|---|---|"]
    for low, high, sel in drop_bands(rows):
        label = f"<= {high:g}" if low is None else (f"> {low:g}" if high is None else f"({low:g}, {high:g}]")
        changes = sorted(r["cacc_change"] for r in sel)
        lines.append(f"| {label} | {len(sel)} | {len({r['victim_key'] for r in sel})} | "
                     f"{sum(c < HARM for c in changes)} | {statistics.median(changes):+.1f} | {changes[0]:+.1f} |")
    lines += ["", "## Every cell", "",
              "| dataset | attack | cell | held-out rows | held-out drop | SE | epoch | test ΔCACC | ASR |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["held_out_drop"]):
        asr = "-" if r["asr"] is None else f"{r['asr']:.1f}"
        lines.append(f"| {r['dataset']} | {r['attack']} | `{r['cell']}` | {r['held_out_rows']} | "
                     f"{r['held_out_drop']:.1f} | {r['held_out_se']:.1f} | {r['selected_epoch']} | "
                     f"{r['cacc_change']:+.1f} | {asr} |")
    if meta.get("replay") is not None:
        lines += replay_markdown(meta["replay"], meta["replay_rules"])
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=None, help="a bench --workdir (its cells/ folder is read)")
    p.add_argument("--records", nargs="+", default=[], metavar="RECORDS_JSON",
                   help="also the cells of earlier runs' records.json (those the workdir does not hold)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--replay", action="append", default=[], metavar="NAME=VALUE[,...]",
                   help="also replay the guard with these AKD selection options on every guarded cell's records "
                        "(e.g. guard_se=0; repeat for several rules)")
    args = p.parse_args()
    from bedkd.defenses.purifiers.akd import AKDConfig
    from bedkd.errors import ConfigError
    for rule in args.replay:
        try:
            AKDConfig(selection="guarded").replace(**parse_rule(rule))    # rules of the guarded cells it replays
        except (ValueError, ConfigError) as err:
            print(f"guard_margin: --replay {rule}: {err}", file=sys.stderr)
            return 2
    if not args.workdir and not args.records:
        print("guard_margin: give --workdir, --records or both", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).expanduser() if args.workdir else None
    if workdir and not (workdir / "cells").is_dir():
        print(f"guard_margin: {workdir}: no cells/ folder (not a bench --workdir)", file=sys.stderr)
        return 2
    try:
        records = read_records(args.records)
    except ValueError as err:
        print(f"guard_margin: {err}", file=sys.stderr)
        return 2
    from bedkd.provenance import code_version, code_version_id
    rows = cells(workdir, records)
    meta = {"command": "python benchmarks/guard_margin.py " + shlex.join(sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version_id(code_version()), "workdir": args.workdir, "records": args.records}
    replayed = replay(workdir, args.replay, records) if args.replay else None
    kept = [compact(cell, saved, report, args.workdir) for cell, saved, report in guarded_cells(workdir, records)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "rows": rows, "replay": replayed}, indent=1))
    atomic_write_text(out / "records.json", json.dumps({"meta": meta, "cells": kept}))
    atomic_write_text(out / "results.md", markdown(rows, {**meta, "replay": replayed, "replay_rules": args.replay}))
    print(f"wrote {out / 'results.md'} ({len(rows)} cells; their records in records.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
