"""Where `--scan-label-check-unexplained` changes a BeDKD run already made, and what its test reads there.

    python benchmarks/unexplained_screen.py --results RUN/results.json ... --workdir WORKDIR ... \\
        [--from-rows docs/results/robustness/results.json] [--data-dir ../shared/data] \\
        --out docs/results/label_check_unexplained/screen

The option acts only on a label that a found trigger targets and the label check's first test finds
(:func:`bedkd.defenses.scanning.scan.with_rest_tests`); a run whose verdict has no such label gives the
same digits with it, read from its cell report alone. For each other run, the cell's training rows
and clean budget are rebuilt from the run's recorded `bedkd bench` command (``--data-dir`` and the
bundled backbone stand in for paths of another machine), the label check is computed again (its
statistic on the label must match the recorded one, else the row says so) and tested on the rows of
the label that hold none of its found triggers (a run whose verdict records that test, ``rest_tests``,
is read as it is). Rows: the recorded result, the label's evidence, the
rows the found triggers explain, and the test on the rest: "acts" where it reaches the line.
Runs whose cell reports are gone (``--from-rows``) are screened from their rows
(:func:`row_screen`): settled where even the strongest found trigger alone leaves too little on the rest.

Writes ``results.json`` (command, date, machine, code version, one row per run) and ``results.md``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runs import cell_file, run_digits, write_screen  # noqa: E402
from label_check import Embedder  # noqa: E402  (benchmarks/label_check.py: embeds each text once)

SCAN_DEFENSES = ("bedkd-guarded", "bedkd")


def cell_report(workdirs: list[Path], row: dict) -> dict | None:
    """``row``'s cached cell in the first of ``workdirs`` that holds it (``bench_runs.cell_file``), or None."""
    return next((cell for cell in (cell_file(w, row) for w in workdirs) if cell is not None), None)


def cells_of(path: str, workdirs: list[Path], clean: bool = False) -> tuple[dict, list[tuple[dict, dict]]]:
    """A bench ``results.json`` and (row, cell report) for each of its scan rows on an attack (``clean``: and
    on the clean model) whose report a workdir holds; a row without one is named on stderr as skipped.
    OSError or ValueError: not readable."""
    result, pairs = json.loads(Path(path).read_text()), []
    for row in result["rows"]:
        on_clean = row.get("attack") == "clean"
        if (row.get("defense") not in SCAN_DEFENSES or row.get("status", "ok") != "ok"
                or (on_clean and not clean) or (not on_clean and row.get("asr") is None)):
            continue
        cell = cell_report(workdirs, row)
        if cell is None or "verdict" not in cell["details"].get("report", {}):
            print(f"{path}: {row['dataset']}/{row['attack']}/{row['defense']}: no cell report, skipped", file=sys.stderr)
            continue
        pairs.append((row, cell))
    return result, pairs


def candidate_labels(verdict: dict) -> list[int]:
    """The labels the option can act on: a found trigger's target that the first test finds."""
    th, check = verdict["thresholds"], verdict.get("label_check") or {}
    first = {e["label"] for e in check.get("evidence", [])
             if e["log10_p"] >= th.get("label_check_evidence", np.inf) and e["excess"] >= th["min_excess"]}
    hits = {h["target"] for h in (verdict.get("trigger_search") or {}).get("hits", [])}
    return sorted(first & hits & set(verdict.get("check_targets", [])))


def rebuilt_cell(command: str, dataset: str, attack: str, data_dir: str | None, keep_data_dir: bool = False,
                 with_key: bool = False):
    """(the dataset plan, the suspicious training rows, `bedkd-guarded` under the run's options and, ``with_key``,
    the victim's cache key) of one cell of a recorded ``bedkd bench`` command. ``data_dir`` stands in for the recorded data directory (with
    ``keep_data_dir``, only where that is not on this machine), the bundled backbone for another
    machine's copy of it."""
    from bedkd.bench.runner import DatasetPlan
    from bedkd.cli.bench_cmd import bench_inputs, defense_configs
    from bedkd.cli.main import build_parser
    from bedkd.datasets import load_dataset
    from bedkd.defenses.registry import METHODS
    args = build_parser().parse_args(shlex.split(command)[1:])
    if data_dir and not (keep_data_dir and args.data_dir and Path(args.data_dir).is_dir()):
        args.data_dir = data_dir
    if args.backbone and not Path(args.backbone).is_dir():
        args.backbone = None
    cfg, setup, _ = bench_inputs(args)
    guarded = METHODS["bedkd-guarded"].cls(*defense_configs(args, cfg)["bedkd-guarded"])
    plan = DatasetPlan.make(load_dataset(dataset, setup.data_dir), cfg, setup)
    attacked = plan.attack(attack, setup)
    return (plan, attacked.poisoned.train, guarded) + ((attacked.key,) if with_key else ())


class Rebuilt:
    """The training rows, clean budget and label check of recorded bench runs, embeddings cached."""

    def __init__(self, data_dir: str | None):
        self.data_dir, self.embed = data_dir, Embedder()

    def check(self, command: str, dataset: str, attack: str):
        """(the suspicious rows, the label check) of one cell of the recorded ``command``."""
        plan, suspect, guarded = rebuilt_cell(command, dataset, attack, self.data_dir)
        return self.check_cell(plan, suspect, guarded)

    def check_cell(self, plan, suspect, guarded):
        """(the suspicious rows, the label check, the scan options) of a cell already rebuilt
        (:func:`rebuilt_cell`)."""
        from bedkd.defenses.scanning.label_check import check_embeddings, with_shift
        budget = guarded.split(plan.pool).budget
        scan = guarded.scan_cfg
        clean_x = self.embed([plan.pool.texts[i] for i in budget])
        clean_y = np.asarray([plan.pool.labels[i] for i in budget])
        suspect_x, suspect_y = self.embed(list(suspect.texts)), np.asarray(suspect.labels)
        check = check_embeddings(clean_x, clean_y, suspect_x, suspect_y, plan.ds.num_labels, scan.label_check_quantile,
                                 scan.seed, scan.label_check_sources)
        if scan.label_check_shift:
            check = with_shift(check, clean_x, clean_y, suspect_x, suspect_y, plan.ds.num_labels,
                               scan.label_check_quantile, scan.seed)
        return suspect, check, scan


def screen_row(rebuilt: Rebuilt, row: dict, cell: dict, command: str) -> dict:
    from bedkd.defenses.scanning.scan import RestTest, rest_acts, rest_test
    from bedkd.defenses.scanning.trigger_search import Trigger
    verdict = cell["details"]["report"]["verdict"]
    hits = (verdict.get("trigger_search") or {}).get("hits", [])
    out = {k: row.get(k) for k in ("dataset", "attack", "victim_key", "defense", "train_rows", "victim_asr",
                                   "floor_asr", "asr", "cacc_change")}
    out.update(found=[" ".join(h["words"]) for h in hits], labels=candidate_labels(verdict))
    if not out["labels"]:
        return {**out, "acts": False, "why": "no label with a found trigger and first-test evidence"}
    if verdict.get("rest_tests") is not None:         # a run since the rest test was recorded: its own numbers
        evidence = {e["label"]: e for e in verdict["label_check"]["evidence"]}
        per_label = [label_row(t, evidence[t["label"]], evidence[t["label"]]["log10_p"]) for t in verdict["rest_tests"]]
        return {**out, "acts": any(p["acts"] for p in per_label), "recomputed_matches": True, "recorded": True,
                "per_label": per_label, "line": {"log10_p": verdict["thresholds"].get("label_check_evidence"),
                                                 "excess": verdict["thresholds"]["min_excess"]}}
    suspect, check, scan = rebuilt.check(command, row["dataset"], row["attack"])
    recorded = {e["label"]: e["log10_p"] for e in verdict["label_check"]["evidence"]}
    again = {e.label: e.log10_p for e in check.evidence}
    same = all(abs(recorded[c] - again[c]) < 1e-6 * max(1.0, abs(recorded[c])) for c in out["labels"])
    triggers = [Trigger(h["words"], h["phrase"], h["target"], h["flip_rate"], h["rows"]) for h in hits]
    per_label = [label_row(RestTest(c, held, r, rest_acts(r, held, scan)).to_dict(), check.evidence[c].to_dict(),
                           recorded[c])
                 for c in out["labels"] for r, held in [rest_test(check, suspect, triggers, c)]]
    return {**out, "acts": any(p["acts"] for p in per_label), "recomputed_matches": same, "per_label": per_label,
            "line": {"log10_p": scan.label_check_evidence, "excess": scan.min_excess}}


def row_screen(rebuilt: Rebuilt, row: dict, command: str) -> dict:
    """A run whose cell report is gone, screened from its row: the one trigger the row records
    (``trigger_found``, the search's strongest hit) on the label it records (``target_found``), the
    label check computed again. The run's other hits are not on record, but more found triggers only
    hold more of the label's rows, and each row moved from the rest to the held lowers the rest's
    excess minus the held count (by 1 - j/m or 2 - j/m, j/m the clean rows' flag rate). So where
    the rest's excess stays under the held rows the option cannot act with every hit either
    (``settled``); elsewhere, or where another label has first-test evidence that a hit not on record
    could target, the row is not settled (``acts`` None) and the run has to be made again."""
    from bedkd.defenses.scanning.scan import RestTest, check_found, rest_acts, rest_test
    from bedkd.defenses.scanning.trigger_search import Trigger
    out = {k: row.get(k) for k in ("dataset", "attack", "victim_key", "defense", "train_rows", "victim_asr",
                                   "floor_asr", "asr", "cacc_change")}
    suspect, check, scan = rebuilt.check(command, row["dataset"], row["attack"])
    first = [e.label for e in check_found(check, scan)]
    target = row["target_found"]
    labels, others = [c for c in first if c == target], [c for c in first if c != target]
    trigger = Trigger(row["trigger_found"].split(), False, target, 0.0, 0)
    per_label = [label_row(RestTest(c, held, r, rest_acts(r, held, scan)).to_dict(), check.evidence[c].to_dict(),
                           check.evidence[c].log10_p)
                 for c in labels for r, held in [rest_test(check, suspect, [trigger], c)]]
    settled = not others and all(p["rest_excess"] < p["held"] for p in per_label)
    return {**out, "run": row.get("run"), "found": [row["trigger_found"]], "labels": labels,
            "other_labels": others, "from_row": True, "settled": settled, "acts": False if settled else None,
            "per_label": per_label, "line": {"log10_p": scan.label_check_evidence, "excess": scan.min_excess}}


def label_row(test: dict, evidence: dict, recorded_log10_p: float) -> dict:
    """A rest test (``RestTest.to_dict()``, as a verdict records it in ``rest_tests``) beside the label's
    first-test ``evidence`` as a row's ``per_label`` entry."""
    rest = test["rest"]
    return {"label": test["label"], "log10_p": evidence["log10_p"], "recorded_log10_p": recorded_log10_p,
            "excess": evidence["excess"], "rows": evidence["suspect_rows"], "held": test["held"],
            "rest_rows": rest["suspect_rows"], "rest_flagged": rest["suspect_flagged"], "rest_excess": rest["excess"],
            "rest_log10_p": rest["log10_p"], "acts": test["acts"]}


def markdown(rows: list[dict], meta: dict) -> str:
    machine = meta["machine"]
    lines = [f"Generated by `{meta['command']}` on {meta['date']}, code {meta['code_version']}, "
             f"{machine['cpu_model']} ({machine['cpus_usable']} CPUs), torch {machine['torch']}.", "",
             f"The option acts on {sum(r['acts'] is True for r in rows)} of {len(rows)} runs"
             + (f" ({sum(r['acts'] is None for r in rows)} not settled from their rows)"
                if any(r.get("from_row") for r in rows) else "") + ". *held*: rows of the label that "
             "hold a found trigger; *rest*: the first test on the label's other rows (flagged / rows, excess, "
             "-log10 p); it acts where the rest reaches -log10 p >= 2 with an excess of at least 10 rows and at least "
             "the held rows. The check is computed again on this machine; where the run's own (recorded) statistic "
             "differs, as on a GPU's embeddings, the recorded value follows the verdict. A run marked *(row)* has no "
             "cell report left: it is screened from its row's strongest found trigger alone, and it is settled "
             "(the option cannot act with every hit either) where the rest's excess stays under the held rows and no "
             "other label has first-test evidence.", "",
             "| dataset | attack | victim | rows | found triggers | victim ASR | floor | ASR | label | -log10 p | "
             "excess | held | rest | rest excess | rest -log10 p | acts |", "|" + "---|" * 16]
    for r in rows:
        victim = r["victim_key"] if not r.get("from_row") else f"{r.get('run') or r['victim_key']} (row)"
        common = (f"| {r['dataset']} | {r['attack']} | {victim} | {r['train_rows'] or '–'} | "
                  f"{'; '.join(r['found'])[:60] or '–'} | {r['victim_asr']:.1f} | {r['floor_asr']:.1f} | "
                  f"{r['asr']:.1f}")
        if r.get("other_labels"):
            lines.append(common + f" | {', '.join(map(str, r['other_labels']))} | – | – | – | – | – | – | "
                         "not settled (first-test evidence on a label the recorded trigger does not target) |")
        elif not r.get("per_label"):
            lines.append(common + " | – | – | – | – | – | – | – | no (no such label) |")
        for p in r.get("per_label", []):
            note = "" if r.get("recomputed_matches", True) else f" (recorded -log10 p {p['recorded_log10_p']:.2f})"
            lines.append(common + f" | {p['label']} | {p['log10_p']:.1f} | {p['excess']:.0f} | {p['held']} | "
                         f"{p['rest_flagged']} / {p['rest_rows']} | {p['rest_excess']:.0f} | {p['rest_log10_p']:.1f} | "
                         f"{acts_cell(r, p)}{note} |")
    return "\n".join(lines) + "\n"


def acts_cell(row: dict, label: dict) -> str:
    if row.get("from_row"):
        return "no (settled)" if label["rest_excess"] < label["held"] else "not settled"
    return "**yes**" if label["acts"] else "no"


def rows_to_screen(path: str, done: set[tuple]) -> list[tuple[dict, str]]:
    """(row, its run's command) for each ``bedkd-guarded`` or ``bedkd`` attack row of a results.json (a
    bench run's, or a table's whose rows name their ``run`` and ``meta.runs`` its command,
    ``benchmarks/robustness.py``) that records a found trigger and no rest test and is not ``done``
    (``bench_runs.run_digits``)."""
    result = json.loads(Path(path).read_text())
    meta = result["meta"]
    commands = {r["run"]: r["command"] for r in meta["runs"]} if "runs" in meta else None
    pending = [(row, commands.get(row.get("run")) if commands is not None else meta["command"]) for row in result["rows"]
               if row.get("defense") in SCAN_DEFENSES and row.get("attack") != "clean" and row.get("asr") is not None
               and row.get("trigger_found") and row.get("unexplained_acts") is None and run_digits(row) not in done]
    for row, command in pending:
        if command is None:
            print(f"{path}: run {row.get('run')!r} has no command in meta.runs, skipped", file=sys.stderr)
    return [(row, command) for row, command in pending if command is not None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", nargs="*", default=[], help="bench results.json files")
    parser.add_argument("--workdir", nargs="*", default=[], help="bench workdirs holding the runs' cells")
    parser.add_argument("--from-rows", nargs="*", default=[],
                        help="results.json files (bench runs' or robustness tables') whose runs with a found trigger, "
                             "no rest test on record and no cell screened from --results are screened from their rows")
    parser.add_argument("--data-dir", default=None, help="the data pack (instead of the recorded one)")
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    args = parser.parse_args(argv)
    if not args.results and not args.from_rows:
        parser.error("give --results, --from-rows or both")
    rebuilt, rows = Rebuilt(args.data_dir), []
    for path in args.results:
        try:
            result, pairs = cells_of(path, [Path(w).expanduser() for w in args.workdir])
        except (OSError, ValueError) as exc:
            print(f"unexplained_screen.py: {path}: not a readable results.json ({exc})", file=sys.stderr)
            return 2
        for row, cell in pairs:
            rows.append({**screen_row(rebuilt, row, cell, result["meta"]["command"]), "results": path})
            print(f"{path}: {row['dataset']}/{row['attack']}/{row['defense']}: acts={rows[-1]['acts']}",
                  file=sys.stderr)
    for path in args.from_rows:
        try:
            pending = rows_to_screen(path, {run_digits(r) for r in rows})
        except (OSError, ValueError, KeyError) as exc:
            print(f"unexplained_screen.py: {path}: not a readable results.json ({exc!r})", file=sys.stderr)
            return 2
        for row, command in pending:
            rows.append({**row_screen(rebuilt, row, command), "results": path})
            print(f"{path}: {row.get('run') or row.get('victim_key')} {row['dataset']}/{row['attack']}: "
                  f"settled={rows[-1]['settled']}",
                  file=sys.stderr)
    write_screen(args.out, "unexplained_screen.py", argv, rows, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
