"""Where `--scan-trigger-flip-backed` could change a `guarded` run already made: a screen of its trigger search.

    python benchmarks/backed_screen.py --results docs/results/robustness/results.json ... \\
        --workdir ~/.cache/bedkd/w66 ... [--data-dir ../shared/data] --out docs/results/ablation_trigger_backed/screen

The option acts only on a label that has evidence and no found trigger, and there only where the
label's best candidate flips at least its line (:func:`bedkd.defenses.scanning.scan.back_triggers`). So
a run that found no backdoor returns what it returned. For each other scan row of the tables, the
cell is rebuilt from the run's recorded `bedkd bench` command (its victim's cache key with it) and:

* where a workdir holds the run's cell report (the same victim, ASR and CACC), its verdict says which
  labels have evidence and no hit, and its trigger search each label's best candidate (*cell report*);
* else, where a workdir holds the victim and a bench run on record (``--victim-rows``) gave it the row's
  victim CACC and ASR (a victim trained again can differ), the trigger search is run on it again with the
  run's options (seeded: it reproduces the run's search, checked against the strongest hit the row
  records) and every label without a hit counts, evidence or not (*victim*: an upper bound on where the
  option can act);
* else, from the data alone (*data*): the labels other than that of the row's found trigger (the strongest
  hit, which the row records) whose suspicious rows hold an over-represented word, the trigger search's
  candidates (``guarded`` tries no drift words); where there is none, the option has nothing to test;
  elsewhere the row is not settled (``could_act`` None).

With ``--backing-from FLIP``, where a cell report or victim is at hand (a victim's: whether DMM found the
label is not known, and the label check's tests are read as recomputed), the option's Fisher test is also run on
each such label's best candidate that flips at least FLIP, under the line too, the label check computed
again model-free, and each test that found the label run again without the rows that hold a piece of
it (the option needs both): how a natural word or a partial trigger fares.

A robustness table's case whose newest row is an earlier version of `guarded` (a column ``guarded-vN``) is
screened on that row: the one its carry-over rule reads (``benchmarks/robustness.py``, ``carried_over``).
Of a case's rows of several versions only the newest is screened.

``could_act`` False: the option cannot change the run (``bench_runs.backed_cannot_act``). Writes
``results.json`` (command, date, machine, code version, one row per run) and ``results.md``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runs import write_screen  # noqa: E402
from robustness import EARLIER, case_of  # noqa: E402
from trigger_runs_screen import SCAN_DEFENSES, recorded_cells, screen_parser  # noqa: E402
from unexplained_screen import Rebuilt, rebuilt_cell  # noqa: E402


def cell_of(workdirs: list[Path], row: dict, key: str) -> dict | None:
    """The cached cell report of ``row`` (victim ``key``) with its ASR and CACC, in the first workdir that holds one."""
    for workdir in workdirs:
        folder = workdir / "cells" / row["dataset"] / row["attack"] / key
        for path in sorted(folder.glob("bedkd*.json")):
            cell = json.loads(path.read_text())
            if (cell["row"].get("asr"), cell["row"].get("cacc")) == (row.get("asr"), row.get("cacc")) and \
                    "verdict" in cell["details"].get("report", {}):
                return cell
    return None


def victim_digits_on_record(folders: list[Path]) -> dict[str, tuple]:
    """Per victim key, (victim CACC, victim ASR) as a bench run's ``results.json`` under ``folders`` records it."""
    out = {}
    for folder in folders:
        for path in sorted(folder.glob("**/results.json")):
            try:
                rows = json.loads(path.read_text()).get("rows", [])
            except (OSError, ValueError, AttributeError):
                continue
            for r in rows:
                if isinstance(r, dict) and r.get("victim_key") and r.get("victim_asr") is not None:
                    out.setdefault(r["victim_key"], _digits(r))
    return out


def _digits(row: dict) -> tuple:
    return tuple(None if row.get(k) is None else round(row[k], 6) for k in ("victim_cacc", "victim_asr"))


def unhit(best: dict, hits: list[dict], labels) -> list[dict]:
    """Each of ``labels`` without a hit, with its best candidate (``best``: label -> candidate dict)."""
    found = {h["target"] for h in hits}
    return [{"label": c, "words": " ".join(best[c]["words"]) if c in best else None,
             "flip_rate": best[c]["flip_rate"] if c in best else 0.0} for c in sorted(labels) if c not in found]


def backing(checked: tuple, verdict: dict | None, label: dict) -> dict:
    """The option's two tests (``scan.backing_test``) on a label's best candidate under the line, on the label
    check computed again (``checked``: :meth:`Rebuilt.check_cell`'s suspicious rows, check and scan options;
    model-free). A label DMM found is skipped: its flags need the victim. ``reproduced``: the recomputed check
    gives the label the run's recorded statistics (``verdict`` None, a victim's search: none on record)."""
    from types import SimpleNamespace

    from bedkd.defenses.scanning.scan import backing_test
    from bedkd.defenses.scanning.trigger_search import Trigger
    c = label["label"]
    if verdict is not None and c in verdict.get("dmm_targets", []):
        return {"label": c, "words": label["words"], "skipped": "DMM found the label"}
    suspect, check, scan = checked
    again = [check.evidence[c].log10_p] + ([check.shift[c].log10_p] if check.shift is not None else [])
    was = again
    if verdict is not None:
        recorded = verdict["label_check"]
        was = [recorded["evidence"][c]["log10_p"]] + ([recorded["shift"][c]["log10_p"]] if "shift" in recorded else [])
    candidate = Trigger(label["words"].split(), False, c, label["flip_rate"], 0)
    test = backing_test(SimpleNamespace(dmm_targets=[]), None, check, suspect, c, candidate, scan)
    return {**test, "words": label["words"], "reproduced": len(again) == len(was) and all(
        abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(again, was))}


def screen(row: dict, command: str, workdirs: list[Path], data_dir: str | None, line: float,
           victims_on_record: dict[str, tuple], rebuilt: Rebuilt | None = None,
           backing_from: float | None = None) -> dict:
    out = {k: row.get(k) for k in ("run", "dataset", "attack", "target", "seed", "defense", "victim_asr", "floor_asr",
                                   "asr", "cacc", "cacc_change", "backdoor_found", "trigger_found")}
    if row.get("backdoor_found") is False:
        return {**out, "source": "no evidence", "could_act": False, "labels": []}
    plan, suspect, guarded, key = rebuilt_cell(command, row["dataset"], row["attack"], data_dir, keep_data_dir=True,
                                               with_key=True)
    cell = cell_of(workdirs, row, key)
    if cell is not None:
        verdict = cell["details"]["report"]["verdict"]
        search = verdict.get("trigger_search") or {}
        best = {int(c): t for c, t in (search.get("best_per_label") or {}).items()}
        labels = unhit(best, search.get("hits", []), verdict["targets"])
        source, reproduced = "cell report", True
        recorded = verdict if verdict.get("label_check") else False     # False: no check on record, no tests
    else:
        from bedkd.defenses.scanning.scan import drift_candidates, search_settings
        from bedkd.defenses.scanning.trigger_search import _overrepresented, search_triggers
        from bedkd.modeling import load_classifier
        scan, held_out = guarded.scan_cfg, plan.pool.subset(guarded.split(plan.pool).budget)
        victim = next((w / "victims" / key for w in workdirs if (w / "victims" / key / "model.safetensors").is_file()),
                      None)
        if victim is None or victims_on_record.get(key) != _digits(row):
            # from the data alone: a label with no over-represented word has no candidate (the preset tries no
            # drift words), and the label of the row's found trigger has a hit
            ranked, _ = _overrepresented(suspect, held_out, plan.ds.num_labels, search_settings(scan))
            open_labels = [c for c in range(plan.ds.num_labels)
                           if not (row.get("trigger_found") and c == row.get("target_found"))]
            words = {c: [w for _, w in ranked[c]] for c in open_labels if ranked[c]}
            why = "no victim at hand" if victim is None else "victim, digits not the row's"
            return {**out, "victim_key": key, "source": f"data ({why})", "could_act": None if words else False,
                    "labels": [{"label": c, "words": " ".join(ws[:3]) + (" ..." if len(ws) > 3 else ""),
                                "flip_rate": None} for c, ws in words.items()],
                    **({"victim_digits": victims_on_record.get(key)} if victim is not None else {})}
        teacher = load_classifier(str(victim))
        found = search_triggers(teacher, held_out, suspect, search_settings(scan), drift_candidates(teacher, held_out,
                                                                                                    scan)[0])
        hits = [t.to_dict() for t in found.hits]
        reproduced = (" ".join(hits[0]["words"]) if hits else None) == row.get("trigger_found")
        labels = unhit({c: t.to_dict() for c, t in found.best.items()}, hits, range(plan.ds.num_labels))
        source, recorded = "victim", None
    tested = [x for x in labels if x["words"] and backing_from is not None and backing_from <= x["flip_rate"]]
    if tested and recorded is not False:
        checked = rebuilt.check_cell(plan, suspect, guarded)          # once per run, whatever the labels
        out["backing"] = [backing(checked, recorded, x) for x in tested]
    could = any(x["flip_rate"] >= line for x in labels) if reproduced else None
    return {**out, "victim_key": key, "source": source, "reproduced": reproduced, "labels": labels, "line": line,
            "could_act": could}


def markdown(rows: list[dict], meta: dict) -> str:
    machine = meta["machine"]
    settled = [r for r in rows if r["could_act"] is False]
    lines = [f"Generated by `{meta['command']}` on {meta['date']}, code {meta['code_version']}, "
             f"{machine['cpu_model']} ({machine['cpus_usable']} CPUs).", "",
             f"{len(rows)} runs screened; `--scan-trigger-flip-backed` cannot change {len(settled)} of them; "
             f"{sum(r['could_act'] is True for r in rows)} have a label without a hit whose best candidate reaches "
             f"the line; {sum(r['could_act'] is None for r in rows)} are not settled.", "",
             *_margin(rows),
             "| dataset | attack | target | seed | run | source | labels without a hit: best candidate (flip rate) | "
             "could act | ASR | ΔCACC |", "|" + "---|" * 10]
    for r in rows:
        labels = "; ".join(f"{x['label']}: {x['words'] or '–'}" + ("" if x["flip_rate"] is None else
                                                                     f" ({x['flip_rate']:.2f})")
                           for x in r["labels"]) or "–"
        if r.get("reproduced") is False:
            labels += " (search not reproduced)"
        for b in r.get("backing", []):
            labels += (f"<br>backing test, `{b['words']}`: " + (b["skipped"] if "skipped" in b else
                       f"{b['held_flagged']} of {b['held']} rows flagged against {b['rest_flagged']} of {b['rest']}, "
                       f"-log10 p {b['log10_p']:.1f}; without the rows that hold a piece of it, "
                       + ", ".join(f"{r['test']} -log10 p {r['log10_p']:.1f} (line {r['line']:g})" for r in b["rests"])
                       + ("" if b["reproduced"] else " (label check not reproduced)")))
        could = {True: "**yes**", False: "no", None: "not settled"}[r["could_act"]]
        asr = "–" if r.get("asr") is None else f"{r['asr']:.1f}"
        delta = "–" if r.get("cacc_change") is None else f"{r['cacc_change']:+.2f}"
        lines.append(f"| {r['dataset']} | {r['attack']} | {r.get('target', '–')} | {r.get('seed', '–')} | "
                     f"{r.get('run') or '–'} | {r['source']} | {labels} | {could} | {asr} | {delta} |")
    return "\n".join(lines) + "\n"


def _margin(rows: list[dict]) -> list[str]:
    """A line naming the strongest candidate of a label without a hit among the runs the option cannot change:
    how far under the line natural words and partial triggers stay."""
    seen = [(x["flip_rate"], x["words"], r) for r in rows if r["could_act"] is False for x in r["labels"]
            if x["words"] and x["flip_rate"] is not None]
    if not seen:
        return []
    flip, words, r = max(seen, key=lambda s: s[0])
    return [f"Among the runs it cannot change, the strongest candidate of a label without a found trigger flips "
            f"{100 * flip:.0f} % (`{words}`, {r['dataset']} {r['attack']} t{r.get('target')} s{r.get('seed')}), under "
            f"the line of {100 * r['line']:.0f} %.", ""]


VERSIONS = (*SCAN_DEFENSES, *EARLIER)   # newest first


def newest_per_case(cells: list[tuple[str, dict, str]]) -> list[tuple[str, dict, str]]:
    """Of each robustness case's rows (a table's dataset, attack, trigger, target and seed), the newest
    version's only (:data:`VERSIONS`); a row without those fields (a bench table) is kept as it is."""
    newest: dict = {}
    for i, (path, row, command) in enumerate(cells):
        case = (path, *case_of(row)) if all(k in row for k in ("trigger", "target", "seed")) else i
        held = newest.get(case)
        if held is None or VERSIONS.index(row["defense"]) < VERSIONS.index(cells[held][1]["defense"]):
            newest[case] = i
    return [cells[i] for i in sorted(newest.values())]


def main(argv=None) -> int:
    parser = screen_parser(__doc__)
    parser.add_argument("--workdir", nargs="*", default=[], help="bench workdirs holding the runs' cells and victims")
    parser.add_argument("--victim-rows", nargs="*", default=[], metavar="FOLDER",
                        help="folders of bench runs whose results.json rows give each victim's CACC and ASR")
    parser.add_argument("--backing-from", type=float, default=None, metavar="FLIP",
                        help="where a cell report is at hand, also run the option's Fisher test on each label's best "
                             "candidate that flips at least FLIP (under the line too): how a natural word fares")
    parser.add_argument("--line", type=float, default=None,
                        help="the backed flip line (default: the guarded preset's trigger_flip_backed)")
    args = parser.parse_args(argv)
    if args.line is None:
        from bedkd.defenses.purifiers.bedkd import PRESETS
        args.line = PRESETS["guarded"][2].trigger_flip_backed
    if not args.line:
        parser.error("--line: the guarded preset has no backed flip line; give one")
    cells = recorded_cells(args.results, "backed_screen.py", VERSIONS)
    if cells is None:
        return 2
    cells = newest_per_case(cells)
    workdirs, rows = [Path(w).expanduser() for w in args.workdir], []
    on_record = victim_digits_on_record([Path(f).expanduser() for f in args.victim_rows])
    rebuilt = Rebuilt(args.data_dir) if args.backing_from is not None else None
    for path, row, command in cells:
        rows.append({"table": path, **screen(row, command, workdirs, args.data_dir, args.line, on_record, rebuilt,
                                             args.backing_from)})
        print(f"{row['dataset']}/{row['attack']} {row.get('run')}: {rows[-1]['source']}, could act: "
              f"{rows[-1]['could_act']}", file=sys.stderr)
    write_screen(args.out, "backed_screen.py", argv, rows, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
