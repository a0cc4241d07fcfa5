"""What the table scripts (robustness.py, security.py) share: one `bedkd bench` call per planned run,
each with its own output folder under ``--runs`` and one shared victim cache, and the rows read back
from those folders with the run's setup and provenance."""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path

from bedkd.bench.report import bar_over_floors, in_percent, meets_bar
from bedkd.bench.report import floor_range as bench_floor_range
from bedkd.bench.runner import FLOOR_RANGE
from bedkd.outputs import atomic_write_text


def run_plan(plan: list[tuple[str, list[str]]], args) -> int:
    """Run ``bedkd bench`` for every (run name, bench arguments); 1 when any run failed. With ``--ablation
    LABEL``, each run is ``bedkd`` with the bench options given after ``--``, into the folder ``LABEL@NAME``.
    SystemExit, before any run, when a run's folder holds another dataset's rows (see ``check_run_folders``)."""
    check_run_folders([run_folder(name, args) for name, _ in plan], args)
    return _call_each([(name, [sys.executable, "-m", "bedkd", "bench", "--out", str(Path(args.runs) / run_folder(name, args)),
                                "--workdir", args.workdir, "--defenses", "none", *defense_arguments(args),
                                "--train-limit", str(args.train_limit), "--allow-skipped", "--quiet",
                                *(["--reuse-any-version"] if args.reuse_any_version else []),
                                *(["--data-dir", args.data_dir] if args.data_dir else []),
                                *_floor_seeds(args), *(["--trace-epochs"] if getattr(args, "trace_epochs", False) else []),
                                *bench_args])
                       for name, bench_args in plan])


def check_run_folders(folders: list[str], args) -> None:
    """Run names carry no dataset, so a call with other ``--datasets`` into the same ``--runs`` would
    have bench replace the earlier call's rows in each folder it shares: SystemExit naming them."""
    clash = []
    for folder in folders:
        path = Path(args.runs) / folder / "results.json"
        try:
            earlier = json.loads(path.read_text())["meta"]["setup"]["datasets"]
        except (OSError, ValueError, KeyError, TypeError):
            continue                 # no earlier run there (bench itself refuses a foreign folder)
        if set(earlier) - set(args.datasets):
            clash.append(f"{path} (datasets {' '.join(earlier)})")
    if clash:
        raise SystemExit(f"{len(clash)} run folders under {args.runs} hold rows of datasets that this call "
                         f"(--datasets {' '.join(args.datasets)}) would replace: {', '.join(clash[:3])}"
                         f"{' ...' if len(clash) > 3 else ''}; give another --runs, or every dataset in one call")


def run_folder(name: str, args) -> str:
    """A run's folder under ``--runs``: ``LABEL@NAME`` for an ablation (``report`` makes LABEL a column)."""
    return f"{args.ablation}@{name}" if getattr(args, "ablation", None) else name


def table_defenses(args) -> list[str]:
    """The defense columns a run adds to the table: the ablation's label, or ``--defenses``."""
    return [args.ablation] if getattr(args, "ablation", None) else args.defenses


def defense_arguments(args) -> list[str]:
    """What follows ``--defenses none`` in each bench call."""
    if getattr(args, "ablation", None):
        return ["bedkd", *args.bench_options]
    return list(args.defenses)


ABLATION_OWNS = ("--out", "--workdir", "--defenses", "--datasets", "--attacks", "--seed", "--attack-target")


def check_ablation(args) -> None:
    """``--ablation LABEL`` needs bench options after ``--`` (and they need it); the options must be ones
    ``bedkd bench`` knows and not the ones the plan sets itself. SystemExit with the reason otherwise."""
    label, options = getattr(args, "ablation", None), getattr(args, "bench_options", [])
    if options and not label:
        raise SystemExit(f"bench options after '--' ({shlex.join(options)}) need --ablation LABEL")
    if not label:
        return
    if not options:
        raise SystemExit(f"--ablation {label}: give the bench options it changes after '--' "
                         "(e.g. -- --preset guarded --akd-clean-prior-shift)")
    if not label.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise SystemExit(f"--ablation {label!r}: a label is letters, digits, '-', '_' and '.' only")
    owned = [o for o in options if o.split("=", 1)[0] in ABLATION_OWNS]
    if owned:
        raise SystemExit(f"--ablation {label}: {' '.join(owned)} is set by the plan, not after '--'")
    from bedkd.cli.main import build_parser
    build_parser().parse_args(["bench", "--out", "unused", *options])     # exits 2 naming an unknown option


def _floor_seeds(args) -> list[str]:
    """``--floor-seeds`` for the bench, when the table script was given it."""
    seeds = getattr(args, "floor_seeds", None)
    return ["--floor-seeds", *map(str, seeds)] if seeds else []


def _call_each(commands: list[tuple[str, list[str]]]) -> int:
    """Run each (run name, command) in turn; 1 when any failed."""
    failed = []
    for name, cmd in commands:
        print("+", shlex.join(cmd), flush=True)
        if subprocess.call(cmd) != 0:
            failed.append(name)
    if failed:
        print(f"{len(failed)} runs failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def rerun_commands(source_dir, runs_dir, extra: list[str] = ()) -> list[tuple[str, list[str]]]:
    """(run name, command) for every run under ``source_dir``: its ``bedkd bench`` command again,
    written to ``runs_dir/<name>`` (e.g. the same cells under a changed preset; the shared workdir
    keeps the victims), with ``extra`` bench arguments added (``--floor-seeds``: the cached cells
    again, with the floors of more clean models)."""
    plan = []
    for path in sorted(Path(source_dir).glob("*/results.json")):
        args = shlex.split(json.loads(path.read_text())["meta"]["command"])
        if args[:2] != ["bedkd", "bench"] or "--out" not in args:
            raise SystemExit(f"{path}: meta.command is not a 'bedkd bench --out ...' command")
        args[args.index("--out") + 1] = str(Path(runs_dir) / path.parent.name)
        plan.append((path.parent.name, [sys.executable, "-m", "bedkd", *args[1:], *extra]))
    return plan


def rerun(args) -> int:
    """Each earlier run's command again under this checkout's code; 1 when any failed."""
    plan = rerun_commands(args.source, args.runs, _floor_seeds(args))
    if not plan:
        raise SystemExit(f"{args.source}: no run folder with a results.json")
    return _call_each(plan)


def read_runs(runs_dir) -> tuple[list[dict], list[tuple[str, dict, dict]]]:
    """(each run's name, command, date, machine and code version; (run name, setup, row) for every
    finished row, the row with its run's date as ``run_date``)."""
    runs, rows = [], []
    for path in sorted(Path(runs_dir).glob("*/results.json")):
        saved = json.loads(path.read_text())
        meta = saved["meta"]
        runs.append({"run": path.parent.name, **{k: meta.get(k) for k in ("command", "date", "machine", "code_version")}})
        rows += [(path.parent.name, meta["setup"], {**in_percent(r, meta.get("units")), "run_date": meta.get("date")})
                 for r in saved["rows"] if r.get("status") == "ok"]
    return runs, rows


def keep_earlier(path, runs: list[dict], rows: list[dict], case, run_name,
                 migrate=None) -> tuple[list[dict], list[dict]]:
    """Add the cells of an earlier table (its ``results.json``) that ``rows`` lack: a table keeps what
    earlier sessions measured when their runs folders are gone or a rerun covered only part of a run
    (one dataset, one more defense). A cell is a case (``case(row)``: what the victim is) and a
    defense; an earlier row of a case that ``rows`` also have is kept only when its victim has the
    same digits (the same victim, reused). The earlier runs that gave a kept row are added to
    ``runs`` (a row names its run by ``run_name(row)`` and ``run_date``). ``migrate(meta, row)``, when
    given, returns an earlier row as the current table would label it, before any of this."""
    earlier = json.loads(Path(path).read_text())
    if migrate is not None:
        earlier["rows"] = [migrate(earlier["meta"], r) for r in earlier["rows"]]
    cells = {(case(r), r["defense"]) for r in rows}
    victims = {case(r): victim_digits(r) for r in rows}
    kept = [r for r in earlier["rows"] if (case(r), r["defense"]) not in cells
            and victims.get(case(r), victim_digits(r)) == victim_digits(r)]
    sources = [run for run in earlier["meta"]["runs"]
               if any(run_name(r) == run["run"] and r.get("run_date", run["date"]) == run["date"] for r in kept)]
    return runs + [run for run in sources if run not in runs], rows + kept


def shared_floor_ranges(rows: list[dict], victim) -> list[dict]:
    """A row of a run without ``--floor-seeds`` gets the floor range that a row of the same victim
    (``victim(row)``: its case and digits) measured: the same clean models on the same triggered rows,
    so that its verdict is marked (and counted) by the range its table shows beside it."""
    ranges = {}
    for r in rows:
        if r.get("floor_asr_min") is not None:
            ranges.setdefault(victim(r), {k: r.get(k) for k in FLOOR_RANGE})
    return [{**r, **ranges[victim(r)]} if r.get("floor_asr_min") is None and victim(r) in ranges else r
            for r in rows]


def victim_digits(row: dict) -> tuple:
    """What identifies a row's victim across tables: its CACC and ASR (both backdoors')."""
    return row.get("victim_cacc"), row.get("victim_asr"), row.get("second_victim_asr")


UNEXPLAINED_SCREENS = Path(__file__).resolve().parents[1] / "docs" / "results" / "label_check_unexplained" / "screen"


def run_digits(row: dict) -> tuple:
    """What tells one run's row from another's across tables and screens: its case and outcome digits."""
    return (row["dataset"], row["attack"], *(None if row.get(k) is None else round(row[k], 6)
                                             for k in ("victim_asr", "floor_asr", "asr", "cacc_change")))


def unexplained_screened(folder=UNEXPLAINED_SCREENS) -> dict[tuple, bool]:
    """Per run (:func:`run_digits`) that ``benchmarks/unexplained_screen.py`` screened into a committed
    ``folder/*/results.json``: whether ``--scan-label-check-unexplained`` could change it (False only
    where every screen of it says that it does not act, or is settled so)."""
    return _screened(sorted(Path(folder).glob("*/results.json")), lambda r: r["acts"] is not False)


def _screened(paths, could_act, key: str = "rows") -> dict[tuple, bool]:
    """Per run (:func:`run_digits`) in the screens' ``paths`` (their list ``key``): whether any row of it
    says the option could act (``could_act(row)``)."""
    could: dict[tuple, bool] = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())[key]:
            could[run_digits(r)] = could.get(run_digits(r), False) or could_act(r)
    return could


def retry_cannot_act(row: dict) -> bool:
    """Whether ``--scan-label-check-counter-retry`` leaves a run made without it as it was: the retry
    runs only after a run that found a backdoor and kept no epoch (tests/test_label_check.py)."""
    return row.get("backdoor_found") is False or row.get("selected_epoch") not in (None, 0)


def unexplained_cannot_act(row: dict, screened: dict[tuple, bool]) -> bool:
    """Whether ``--scan-label-check-unexplained`` leaves a run made without it as it was: the option acts
    only on a label of a found trigger in a run that found a backdoor (``scan.with_rest_tests``), and
    there only where the rest test reaches its line, which the row records (``unexplained_acts``,
    since code a12d2a6) or a screen shows (:func:`unexplained_screened`)."""
    return (row.get("backdoor_found") is False or not row.get("trigger_found")
            or row.get("unexplained_acts") is False or screened.get(run_digits(row)) is False)


ISOLATE_SCREENS = Path(__file__).resolve().parents[1] / "docs" / "results" / "ablation_isolate_words" / "screen"


def isolate_screened(folder=ISOLATE_SCREENS) -> dict[tuple, bool]:
    """Per run (:func:`run_digits`) that ``benchmarks/isolate_screen.py`` screened into the committed
    ``folder/results.json``: whether ``--akd-isolate-trigger-words`` could change it (False only where
    no candidate word of its trigger search would get a token, ``could_isolate`` empty)."""
    path = Path(folder) / "results.json"
    return _screened([path] if path.is_file() else [], lambda r: r.get("could_isolate", True) != [])


def isolate_cannot_act(row: dict, screened: dict[tuple, bool]) -> bool:
    """Whether ``--akd-isolate-trigger-words`` leaves a run made without it as it was: the option acts
    only on the found triggers' words (``BeDKD._isolated``), in a run that found a backdoor, and there
    only on a word that the committed screen's candidates hold (:func:`isolate_screened`)."""
    return row.get("backdoor_found") is False or not row.get("trigger_found") or screened.get(run_digits(row)) is False


TOWARDS_TARGET_SCREENS = Path(__file__).resolve().parents[1] / "docs" / "results" / "ablation_towards_target" / "screen"


def towards_target_screened(folder=TOWARDS_TARGET_SCREENS) -> dict[tuple, bool]:
    """Per run (:func:`run_digits`) that ``benchmarks/towards_target_screen.py`` screened into a committed
    ``folder/*/results.json``: whether the label check finds a label other than its found trigger's target."""
    return _screened(sorted(Path(folder).glob("*/results.json")), lambda r: r["could_act"])


def towards_target_cannot_act(row: dict, screened: dict[tuple, bool], unexplained: dict[tuple, bool]) -> bool:
    """Whether ``--scan-label-check-towards-target`` leaves a run made without it as it was: the option acts
    only on rows relabelled towards a found trigger's target (``bedkd._spared``), so only in a run with a
    found trigger where the label check finds another label (the committed screen,
    :func:`towards_target_screened`) or its rest test acts on the trigger's own label
    (:func:`unexplained_cannot_act`)."""
    return (row.get("backdoor_found") is False or not row.get("trigger_found")
            or (screened.get(run_digits(row)) is False and unexplained_cannot_act(row, unexplained)))


SIGNED_PROXY_REPLAY = Path(__file__).resolve().parents[1] / "docs" / "results" / "ablation_signed_proxy" / "replay"
SIGNED_RULE = "signed_proxy=true"


def replay_screened(folder: Path, rule: str) -> dict[tuple, bool]:
    """Per run (:func:`run_digits`) that ``benchmarks/guard_margin.py --replay RULE`` replayed into the
    committed ``folder/results.json``: whether the rule could change it (False only where the replay of the
    rule's own code on the run's epoch records keeps the same epoch, exactly)."""
    path = Path(folder) / "results.json"
    return _screened([path] if path.is_file() else [], lambda r: r["rules"][rule]["outcome"] != "same",
                     key="replay")


def signed_proxy_screened(folder=SIGNED_PROXY_REPLAY) -> dict[tuple, bool]:
    """:func:`replay_screened` of ``--akd-signed-proxy``."""
    return replay_screened(folder, SIGNED_RULE)


def signed_proxy_cannot_act(row: dict, screened: dict[tuple, bool]) -> bool:
    """Whether ``--akd-signed-proxy`` leaves a run made without it as it was: the option only reorders the
    epochs within the accuracy guard by a found trigger's proxy, so it cannot act on a run that found no
    backdoor or no trigger (the proxy is then the flag agreement, never below zero), nor where no epoch
    passed the guard (epoch 0, the model before the cycles: the rule's ``start_candidate`` is off), and
    elsewhere not where the committed replay keeps the same epoch (:func:`signed_proxy_screened`)."""
    return (row.get("backdoor_found") is False or not row.get("trigger_found") or row.get("selected_epoch") == 0
            or screened.get(run_digits(row)) is False)


LATEST_REPLAY = Path(__file__).resolve().parents[1] / "docs" / "results" / "ablation_untriggered_latest" / "replay"
LATEST_RULE = "untriggered_latest=true"


def latest_screened(folder=LATEST_REPLAY) -> dict[tuple, bool]:
    """:func:`replay_screened` of ``--akd-untriggered-latest``."""
    return replay_screened(folder, LATEST_RULE)


def latest_cannot_act(row: dict, screened: dict[tuple, bool]) -> bool:
    """Whether ``--akd-untriggered-latest`` leaves a run made without it as it was: the option only chooses
    among the epochs within the accuracy guard of a run with no found trigger, so it cannot act on a run
    that found no backdoor or found a trigger, nor where no epoch passed the guard (epoch 0: patience counts
    from the first epoch within it, so both rules train the same epochs), and elsewhere not where the
    committed replay keeps the same epoch (:func:`latest_screened`)."""
    return (row.get("backdoor_found") is False or bool(row.get("trigger_found")) or row.get("selected_epoch") == 0
            or screened.get(run_digits(row)) is False)


BACKED_SCREEN = Path(__file__).resolve().parents[1] / "docs" / "results" / "ablation_trigger_backed" / "screen"


def backed_screened(folder=BACKED_SCREEN) -> dict[tuple, bool]:
    """Per run (:func:`run_digits`) that ``benchmarks/backed_screen.py`` screened into the committed
    ``folder/results.json``: whether ``--scan-trigger-flip-backed`` could change it (False only where the
    screen settles that no label without a hit has a candidate at the line)."""
    path = Path(folder) / "results.json"
    return _screened([path] if path.is_file() else [], lambda r: r["could_act"] is not False)


def backed_cannot_act(row: dict, screened: dict[tuple, bool]) -> bool:
    """Whether ``--scan-trigger-flip-backed`` leaves a run made without it as it was: the option acts only on
    a label with evidence, so not on a run that found no backdoor, and elsewhere not where the committed
    screen shows that no label without a found trigger has a candidate at the line (:func:`backed_screened`)."""
    return row.get("backdoor_found") is False or screened.get(run_digits(row)) is False


def setup_case(meta: dict) -> str | None:
    """A run's case named from its recorded setup (``results.json``'s ``meta.setup``): attack, trigger
    (or style), target and seed; None where the run records no attack."""
    setup = meta.get("setup") or {}
    attack = setup.get("attack")
    if not attack or not setup.get("attacks"):
        return None
    trigger = " ".join(attack.get("triggers") or []) or attack.get("style") or "default"
    return f"{setup['attacks'][0]} `{trigger}` t{attack.get('target')} s{setup.get('seed')}"


def fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def pair(first, second) -> str:
    """One number, or two backdoors' numbers as ``first / second``."""
    return fmt(first) + ("" if second is None else f" / {fmt(second)}")


def bar_mark(row: dict) -> str:
    """" ✗" after a defended cell that misses the bar; "*" where the verdict turns on which of several
    clean models gives the floor (``bedkd bench --floor-seeds``)."""
    return {True: "", False: " ✗", None: ""}[meets_bar(row)] + ("*" if bar_over_floors(row) == "depends" else "")


def floor_range(row: dict) -> str:
    """`` (lowest-highest)`` floor of several clean models, each backdoor's, where the run measured them."""
    measured = bench_floor_range(row, dash="-")
    return "" if measured is None else f" ({measured})"


def report_meta(script: str, runs: list[dict], **extra) -> dict:
    """The table's own provenance: the command that wrote it, when, and the runs it read."""
    return {"command": f"python benchmarks/{script} " + shlex.join(sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "runs": runs, **extra}


def write_table(out_dir, meta: dict, rows: list[dict], markdown: str) -> int:
    """``results.json`` (meta and rows) and ``results.md``, each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=2))
    atomic_write_text(out / "results.md", markdown)
    print(f"wrote {out / 'results.md'} ({len(rows)} rows from {len(meta['runs'])} runs)")
    return 0


def main(doc: str, run, report, runs_default: str, out_default: str, defenses: list[str],
         default_defenses: list[str], add_plan_arguments) -> int:
    """``run`` (the plan's options added by ``add_plan_arguments``), ``rerun`` and ``report`` subcommands."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    _add_run_arguments(r, runs_default, defenses, default_defenses)
    add_plan_arguments(r)
    r.set_defaults(fn=run)
    a = sub.add_parser("rerun", help="every run of --source again, into --runs (same commands, this code)")
    a.add_argument("--source", required=True, help="a runs folder written by 'run'")
    a.add_argument("--runs", required=True, help="the new runs folder")
    _add_floor_seeds(a)
    a.set_defaults(fn=rerun)
    q = sub.add_parser("report")
    q.add_argument("--runs", default=runs_default)
    q.add_argument("--out", default=out_default)
    q.add_argument("--title", default=None, help="the table's heading (default: the script's own)")
    q.add_argument("--keep", nargs="*", default=[], metavar="RESULTS_JSON",
                   help="an earlier table's results.json: its cells that --runs lacks stay in the table")
    q.set_defaults(fn=report)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:cut])
    args.bench_options = argv[cut + 1:]
    if args.cmd != "run" and args.bench_options:
        p.error(f"{args.cmd} takes no bench options after '--'")
    check_ablation(args)
    return args.fn(args)


def _add_run_arguments(r, runs_default: str, defenses: list[str], default_defenses: list[str]) -> None:
    """The options every table script's ``run`` takes."""
    r.add_argument("--workdir", required=True, help="victim/cell cache, outside the checkout (e.g. ~/.cache/bedkd/robust)")
    r.add_argument("--runs", default=runs_default, help="one bench output folder per run goes here")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--datasets", nargs="+", default=["sst2", "olid"])
    r.add_argument("--train-limit", type=int, default=3000)
    r.add_argument("--reuse-any-version", action="store_true",
                   help="keep finished cells of an earlier code version (each run's results record the versions)")
    _add_floor_seeds(r)
    r.add_argument("--trace-epochs", action="store_true",
                   help="bench --trace-epochs: every BeDKD cell also measures each AKD epoch on the test rows (about "
                        "a sixth more time), so that a later change of the epoch rule can be replayed on the cell "
                        "with test numbers (benchmarks/guard_margin.py --replay, benchmarks/epochs.py)")
    r.add_argument("--defenses", nargs="+", default=default_defenses, choices=defenses,
                   help="defenses to run beside the victim (bedkd-reference costs the most on a CPU)")
    r.add_argument("--ablation", default=None, metavar="LABEL",
                   help="in place of --defenses: `bedkd` with the bench options given after '--' (e.g. --ablation "
                        "measured-cp -- --preset guarded --akd-reset-value measured), each run into LABEL@NAME; "
                        "`report` shows its rows as the column LABEL")


def _add_floor_seeds(parser) -> None:
    parser.add_argument("--floor-seeds", nargs="+", type=int, default=None, metavar="SEED",
                        help="bench --floor-seeds: each row also gets the floors of these seeds' clean models")


def write_screen(out: str, script: str, argv: list[str] | None, rows: list[dict], markdown) -> None:
    """A screen's ``results.json`` (its command, date, machine, code version and ``rows``) and ``results.md``
    (``markdown(rows, meta)``) in ``out``."""
    from bedkd.provenance import code_version, code_version_id, environment
    meta = {"command": f"python benchmarks/{script} {shlex.join(sys.argv[1:] if argv is None else argv)}",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": environment(), "code_version": code_version_id(code_version())}
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    atomic_write_text(folder / "results.md", markdown(rows, meta))
    print(f"wrote {folder / 'results.md'}", file=sys.stderr)


def cell_file(workdir: Path, row: dict) -> dict | None:
    """The bench workdir's cached cell of ``row``: its defense's file, or one of a run with other options
    (``DEFENSE.<options key>.json``), whose row has the same ASR, CACC and code version; or None."""
    folder = workdir / "cells" / row["dataset"] / row["attack"] / str(row.get("victim_key"))
    for path in [folder / f"{row['defense']}.json", *sorted(folder.glob(f"{row['defense']}.*.json"))]:
        if path.is_file():
            cell = json.loads(path.read_text())
            if all(cell["row"].get(k) == row.get(k) for k in ("asr", "cacc", "code_version")):
                return cell
    return None
