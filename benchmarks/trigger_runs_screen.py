"""Where `--scan-trigger-runs` changes a BeDKD run already made: a model-free screen of its trigger search.

    python benchmarks/trigger_runs_screen.py --results docs/results/robustness/results.json ... \\
        [--data-dir ../shared/data] --out docs/results/trigger_runs/screen

The option changes only how a group of candidate words is inserted into the probe rows when the
suspicious rows that hold every word do not hold them as one phrase: as the runs of adjacent words
most of those rows hold, instead of word by word (:func:`bedkd.defenses.scanning.trigger_search._phrase_runs`).
Which groups are tried depends on the data alone (the words over-represented in the suspicious rows
against the held-out clean rows, and the groups they form), not on the model. So for each scan row
(`bedkd-guarded`, or `bedkd` with a preset) of the given tables, the cell's training rows and clean
budget are rebuilt from the run's recorded `bedkd bench` command (``--data-dir`` and the bundled
backbone stand in for another machine's paths), every group the search tries is listed, and those
the option inserts otherwise are named. A cell with none computes exactly what it computed: every
candidate is inserted as before, with the same random draws. With ``--victims WORKDIR ...``, each cell
with such a group whose victim a bench workdir still holds (``victims/<victim_key>``) has its trigger
search run again on that victim, without and with the option: the hits and their flip rates.

Writes ``results.json`` (command, date, machine, code version, one row per cell) and ``results.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runs import write_screen  # noqa: E402
from unexplained_screen import rebuilt_cell  # noqa: E402

SCAN_DEFENSES = ("bedkd-guarded", "bedkd")


def commands_of(path: str, defenses=SCAN_DEFENSES) -> tuple[dict, list[tuple[dict, str]]]:
    """The table and (row, its run's bench command) for each row of ``defenses`` with status ok, one per
    victim."""
    table = json.loads(Path(path).read_text())
    meta = table.get("meta", {})
    out, seen = [], set()
    for row in table["rows"]:
        if row.get("defense") not in defenses or row.get("status", "ok") != "ok":
            continue
        command = run_command(meta, row)
        if not command.startswith("bedkd bench "):
            print(f"{path}: {row['dataset']}/{row['attack']}: no bench command on record, skipped", file=sys.stderr)
            continue
        key = (row["dataset"], row["attack"], row.get("victim_key") or command)
        if key not in seen:
            seen.add(key)
            out.append((row, command))
    return table, out


def run_command(meta: dict, row: dict) -> str:
    """The bench command of ``row``'s run: the table's run of its name (``run``, or a security table's
    ``variation``; of several such, the one for its dataset), else the table's own command."""
    name = row.get("run") or row.get("variation")
    runs = [r["command"] for r in meta.get("runs", []) if r.get("run") == name]
    if len(runs) > 1:
        runs = [c for c in runs if f"--datasets {row['dataset']}" in c] or runs
    return runs[0] if runs else meta.get("command", "")


def groups_changed(command: str, dataset: str, attack: str, data_dir: str | None) -> tuple[dict, tuple]:
    """Every group of several words the trigger search tries on one cell, and those ``runs`` inserts otherwise;
    and the search's inputs (suspicious rows, held-out rows, scan options, classes) for :func:`searched`."""
    from bedkd.defenses.scanning.trigger_search import (SearchSettings, _candidate_sets, _overrepresented,
                                                        _phrase_order, _phrase_runs)
    plan, suspect, guarded = rebuilt_cell(command, dataset, attack, data_dir, keep_data_dir=True)
    held_out = plan.pool.subset(guarded.split(plan.pool).budget)
    scan = guarded.scan_cfg
    ranked, rows_of = _overrepresented(suspect, held_out, plan.ds.num_labels,
                                       SearchSettings(scan.trigger_candidates, scan.trigger_probe_rows))
    tried, changed = 0, []
    inputs = (suspect, held_out, scan, plan.ds.num_labels)
    for c, words in ranked.items():
        in_c = {w: set(r for r in rows_of[w] if suspect.labels[r] == c) for _, w in words}
        for group in _candidate_sets(words, in_c):
            if len(group) < 2:
                continue
            tried += 1
            texts = [suspect.texts[r] for r in set.intersection(*(in_c[x] for x in group))]
            if _phrase_order(group, texts) is None:
                runs = _phrase_runs(group, texts)
                if runs is not None:
                    changed.append({"label": c, "words": " ".join(group), "runs": [" ".join(r) for r in runs],
                                    "rows": len(texts)})
    return {"groups_tried": tried, "changed": changed}, inputs


def searched(victim: Path, inputs) -> dict:
    """The trigger search on ``victim`` without and with ``runs``: each one's hits, strongest first."""
    from bedkd.defenses.scanning.trigger_search import SearchSettings, search_triggers
    from bedkd.modeling import load_classifier
    suspect, held_out, scan, _ = inputs
    teacher = load_classifier(str(victim))
    out = {}
    for name, runs in (("without", False), ("with", True)):
        found = search_triggers(teacher, held_out, suspect, SearchSettings(
            scan.trigger_candidates, scan.trigger_probe_rows, scan.trigger_flip, scan.seed, scan.trigger_prune, runs))
        out[name] = [t.to_dict() for t in found.hits]
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    machine = meta["machine"]
    hit = [r for r in rows if r["changed"]]
    lines = [f"Generated by `{meta['command']}` on {meta['date']}, code {meta['code_version']}, "
             f"{machine['cpu_model']} ({machine['cpus_usable']} CPUs).", "",
             f"{len(rows)} cells screened (one per victim); {len(hit)} where `--scan-trigger-runs` inserts a "
             "group otherwise (every other cell computes exactly what it computed).", "",
             "Where a victim was at hand, the trigger search's hits on it without and with the option follow the "
             "groups (each as inserted, and its flip rate). ASR and ΔCACC: the recorded run's, without the option.", "",
             "| table | dataset | attack | target | seed | defense | groups of several words tried | inserted otherwise "
             "(words -> runs, rows holding them) | ASR | ΔCACC |", "|" + "---|" * 10]
    for r in rows:
        changed = "; ".join(f"{g['words']} -> {' + '.join(g['runs'])} ({g['rows']})" for g in r["changed"]) or "none"
        if r.get("search"):
            changed += "<br>" + "; ".join(
                f"{name}: " + (", ".join(f"{' + '.join(h.get('runs') or [' '.join(h['words'])])} {h['flip_rate']:.2f}"
                                         for h in hits) or "no hit")
                for name, hits in r["search"].items())
        asr = "–" if r.get("asr") is None else f"{r['asr']:.1f}"
        delta = "–" if r.get("cacc_change") is None else f"{r['cacc_change']:+.1f}"
        lines.append(f"| {r['table']} | {r['dataset']} | {r['attack']} | {r.get('target', '–')} | {r.get('seed', '–')} | "
                     f"{r['defense']} | {r['groups_tried']} | {changed} | {asr} | {delta} |")
    return "\n".join(lines) + "\n"


def screen_parser(doc: str) -> argparse.ArgumentParser:
    """A screen's command line: ``--results``, ``--data-dir`` and ``--out`` (a script adds its own)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--results", nargs="+", required=True, help="bench or table results.json files")
    parser.add_argument("--data-dir", default=None,
                        help="stands in for a recorded command's data directory where that is not on this machine")
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    return parser


def recorded_cells(paths: list[str], script: str, defenses=SCAN_DEFENSES) -> list[tuple[str, dict, str]] | None:
    """(table, row, its run's bench command) of each row of ``defenses`` in the tables (:func:`commands_of`);
    None, named on stderr, when a table is not readable."""
    out = []
    for path in paths:
        try:
            _, cells = commands_of(path, defenses)
        except (OSError, ValueError, KeyError) as exc:
            print(f"{script}: {path}: not a readable results.json ({exc})", file=sys.stderr)
            return None
        out += [(path, row, command) for row, command in cells]
    return out


def main(argv=None) -> int:
    parser = screen_parser(__doc__)
    parser.add_argument("--victims", nargs="*", default=[], metavar="WORKDIR",
                        help="bench workdirs whose victims to run the trigger search on, without and with the option")
    args = parser.parse_args(argv)
    cells = recorded_cells(args.results, "trigger_runs_screen.py")
    if cells is None:
        return 2
    rows = []
    for path, row, command in cells:
        screened, inputs = groups_changed(command, row["dataset"], row["attack"], args.data_dir)
        victims = [Path(w).expanduser() / "victims" / str(row.get("victim_key")) for w in args.victims]
        victim = next((v for v in victims if (v / "model.safetensors").is_file()), None)
        if screened["changed"] and victim is not None:
            screened["search"] = searched(victim, inputs)
        rows.append({"table": path, **{k: row.get(k) for k in ("dataset", "attack", "target", "seed", "defense",
                                                               "victim_key", "asr", "cacc_change")},
                     "command": command, **screened})
        print(f"{row['dataset']}/{row['attack']}: {len(screened['changed'])} of {screened['groups_tried']} "
              "groups inserted otherwise", file=sys.stderr)
    write_screen(args.out, "trigger_runs_screen.py", argv, rows, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
