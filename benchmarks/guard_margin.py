"""How far AKD's epoch guard lets the held-out accuracy fall, and what the test set then showed.

    python benchmarks/guard_margin.py --workdir ~/.cache/bedkd/sec --out docs/results/guard_margin

`guarded` keeps an epoch whose class-weighted accuracy on the held-out clean rows is within
``max_cacc_drop`` (1 point) plus ``guard_se`` (2) standard errors of the model before the cycles.
With few held-out rows (SST-2's clean pool leaves 232) two standard errors are several points.
This reads every cached bench cell of ``--workdir`` whose BeDKD report chose its epoch by that
guard (any option set, ablations included) and lists, per cell, the chosen epoch's held-out drop,
its standard error, and the cell's CACC change on the test set; the summary splits the cells by
whether the held-out drop was within ``max_cacc_drop`` itself. Nothing is trained or evaluated.

``--replay guard_se=0 --replay guard_margin_cap=1`` also asks what another rule (any of AKD's
selection options, ``name=value`` joined by commas) would have kept, without training: the cycles
train the same way whatever the rule keeps, so the rule is replayed (``akd.replay_choice``, the
rule's own code) on each run's per-epoch records. A cell's outcome is then known when the rule keeps
the same epoch (the cell's numbers) or the model before the cycles with no embedding reset (the
victim's numbers); else it needs a rerun. Replaying each cell's own options must give its recorded
epoch: the count of cells where it does not is reported (a code version whose rule differed).
Writes ``results.json`` (command, date, code version, one row per cell) and ``results.md``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
from pathlib import Path

from bedkd.outputs import atomic_write_text

HARM = -1.0     # the bar on an attack cell's CACC change


def guarded_cells(workdir: Path):
    """(path, saved cell, BeDKD report) of each cached cell whose cycles ran under the ``guarded`` rule."""
    for path in sorted((workdir / "cells").glob("*/*/*/*.json")):
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        report = (saved.get("details") or {}).get("report") if isinstance(saved, dict) else None
        if report and report.get("epochs") and report["config"]["akd"].get("selection") == "guarded":
            yield path, saved, report


def cells(workdir: Path) -> list[dict]:
    """One row per cached cell whose epoch was chosen by the guard (a report with epochs and a chosen one)."""
    out = []
    for path, saved, report in guarded_cells(workdir):
        if not report.get("selected_epoch"):
            continue
        akd = report["config"]["akd"]
        chosen = report["epochs"][report["selected_epoch"] - 1]
        row = saved["row"]
        out.append({"cell": str(path.relative_to(workdir)), "dataset": row["dataset"], "attack": row["attack"],
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
            "other epoch": "another epoch (not measured: rerun)",
            "undetermined": "the run stopped before this rule would have (rerun)",
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


def replay(workdir: Path, rules: list[str]) -> list[dict]:
    """Per guarded cell: the epoch its own options keep on replay (it must be the recorded one) and, per
    rule in ``rules`` (:func:`parse_rule`), the epoch it keeps, its outcome and, when known, the cell's
    numbers under it."""
    from bedkd.bench.report import meets_bar
    from bedkd.defenses.purifiers.akd import AKDConfig, replay_choice
    out = []
    for path, saved, report in guarded_cells(workdir):
        own = AKDConfig.from_dict(report["config"]["akd"])
        row = saved["row"]
        item = {"cell": str(path.relative_to(workdir)), "dataset": row["dataset"], "attack": row["attack"],
                "preset_cell": path.name == "bedkd-guarded.json", "selected_epoch": report.get("selected_epoch"),
                "own_replay": replay_choice(report["epochs"], report["start"], own).epoch,
                "cacc_change": row.get("cacc_change"), "asr": row.get("asr"), "meets_bar": meets_bar(row),
                "rules": {}}
        for rule in rules:
            got = replay_choice(report["epochs"], report["start"], own.replace(**parse_rule(rule)))
            numbers = None
            if not got.exact:
                outcome = "undetermined"
            elif got.epoch is None:
                outcome = "no epoch"
            elif got.epoch == item["selected_epoch"]:
                outcome, numbers = "same", row
            elif got.epoch == 0 and not (report.get("data") or {}).get("reset_embeddings"):
                outcome = "victim"
                numbers = {**row, "cacc": row["victim_cacc"], "asr": row["victim_asr"], "cacc_change": 0.0,
                           "second_asr": None}        # the victim's: its first backdoor alone decides
            else:
                outcome = "reset only" if got.epoch == 0 else "other epoch"
            item["rules"][rule] = {"epoch": got.epoch, "outcome": outcome,
                                        "cacc_change": None if numbers is None else numbers["cacc_change"],
                                        "asr": None if numbers is None else numbers["asr"],
                                        "meets_bar": None if numbers is None else meets_bar(numbers)}
        out.append(item)
    return out


def replay_markdown(items: list[dict], rules: list[str]) -> list[str]:
    lines = ["", "## Another rule, replayed", "",
             "The rule with other options, replayed on each guarded cell's per-epoch records (nothing "
             "trained). *preset cells*: `bedkd-guarded.json`, the `guarded` preset's own cells (the robustness "
             "table's); *all*: every cell chosen by the guard, ablations included. "
             f"Replaying each cell's own options gave its recorded epoch on "
             f"{sum(i['own_replay'] == i['selected_epoch'] for i in items)} of {len(items)} cells.", ""]
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
             f"Generated by `{meta['command']}` on {meta['date']}, code {meta['code_version']}, from the cached cells of "
             f"`{meta['workdir']}` (each row names its cell file and the code version that computed it).", "",
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
    p.add_argument("--workdir", required=True, help="a bench --workdir (its cells/ folder is read)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--replay", action="append", default=[], metavar="NAME=VALUE[,...]",
                   help="also replay the guard with these AKD selection options on every guarded cell's records "
                        "(e.g. guard_se=0; repeat for several rules)")
    args = p.parse_args()
    from bedkd.defenses.purifiers.akd import AKDConfig
    from bedkd.errors import ConfigError
    for rule in args.replay:
        try:
            AKDConfig().replace(**parse_rule(rule))
        except (ValueError, ConfigError) as err:
            print(f"guard_margin: --replay {rule}: {err}", file=sys.stderr)
            return 2
    workdir = Path(args.workdir).expanduser()
    if not (workdir / "cells").is_dir():
        print(f"guard_margin: {workdir}: no cells/ folder (not a bench --workdir)", file=sys.stderr)
        return 2
    from bedkd.provenance import code_version, code_version_id
    rows = cells(workdir)
    meta = {"command": "python benchmarks/guard_margin.py " + shlex.join(sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version_id(code_version()), "workdir": args.workdir}
    replayed = replay(workdir, args.replay) if args.replay else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "rows": rows, "replay": replayed}, indent=1))
    atomic_write_text(out / "results.md", markdown(rows, {**meta, "replay": replayed, "replay_rules": args.replay}))
    print(f"wrote {out / 'results.md'} ({len(rows)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
