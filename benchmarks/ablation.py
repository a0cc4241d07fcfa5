"""An ablation's table: runs of one opt-in change on victims of the security table, beside that table's cells.

    python benchmarks/ablation.py --workdir ~/.cache/bedkd/sec --security docs/results/security/results.json \\
        --title "Ablation: ..." --intro "..." docs/results/ablation_X/*/ > docs/results/ablation_X/README.md

Each folder is one ``bedkd bench --defenses none bedkd --preset P <options>`` output on a victim of
``docs/results/security/`` (the same victim: its CACC and ASR have the same digits there; further
tables, such as the robustness table, may be given too). A run that has ``bedkd-guarded`` beside
the changed ``bedkd`` gives the ``guarded`` column itself. Per run:
the options the change adds to the preset (read from the run's command), the victim's ASR, the floor
(and the lowest-highest over the clean models of further seeds), the security table's
``bedkd-guarded`` and ``bedkd-reference`` cells of that victim, the run's cell, its untriggered ASR
beside the clean model's, the epoch kept (from the cell file in the first of ``--workdir`` that holds
it, else the row's own) and, from that cell file, where the run had ``--akd-repair-poison``, what the
suspicious rows without their trigger gave. A victim in none of the tables is named from the run's
own setup.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runs import bar_mark, cell_file, floor_range, pair, setup_case, victim_digits  # noqa: E402

# bench options that set up the run, not the change
SETUP = {"--out", "--workdir", "--defenses", "--preset", "--train-limit", "--allow-skipped", "--quiet",
         "--reuse-any-version", "--data-dir", "--datasets", "--attacks", "--attack-trigger", "--attack-target",
         "--attack-rate", "--attack-label-mode", "--attack-style", "--seed", "--no-clean-row", "--floor-seeds", "--multi-first",
         "--multi-second", "--multi-second-target", "--multi-second-trigger", "--multi-second-rate", "--decoy-rate",
         "--trace-epochs"}     # a diagnostic: the same digits


def change(command: str) -> str:
    """The options of ``command`` that are not the run's setup, in their order."""
    args, out, keep = shlex.split(command)[2:], [], False
    for a in args:
        if a.startswith("--"):
            keep = a not in SETUP
        if keep:
            out.append(a)
    return " ".join(out)


def security_cells(*paths: Path) -> dict:
    """victim_id -> {case name: {"variation": name, defense: row}} of the security table (or of the
    robustness table, whose cases are named by attack, trigger, target and seed)."""
    out: dict = {}
    for path in paths:
        for r in json.loads(path.read_text())["rows"]:
            if r.get("victim_cacc") is None:
                continue
            name = r.get("variation") or f"{r['attack']} `{r.get('trigger')}` t{r.get('target')} s{r.get('seed')}"
            out.setdefault(victim_id(r), {}).setdefault(name, {"variation": name})[r["defense"]] = r
    return out


def table_case(cases: dict, meta: dict) -> dict:
    """The tables' case of a run's victim: the one its recorded setup names, else the only one. Victims
    of two cases can share their digits and floor (SST-2 EP `jt` t0 s2 and `qz` t0 s0 do)."""
    case = setup_case(meta)
    if case in cases:
        return cases[case]
    return next(iter(cases.values())) if len(cases) == 1 else {}


def victim_id(row: dict) -> tuple:
    """A victim across tables: dataset, attack, its digits and the floor of its triggered rows (two
    victims of one attack can share their CACC and ASR digits; their triggered rows differ)."""
    return row["dataset"], row["attack"], victim_digits(row), row.get("floor_asr"), row.get("second_floor_asr")


def _defended(row: dict | None) -> str:
    if row is None or row.get("asr") is None:
        return "-"
    return f"{pair(row['asr'], row.get('second_asr'))} ({row['cacc_change']:+.1f}){bar_mark(row)}"


def _poison(report: dict) -> str:
    p = (report.get("data") or {}).get("poison_repair")
    if p is None:
        return "-"
    return f"{p['rows']} rows, {100 * p['other_share']:.1f} % in another label: " + \
        ("used" if p["used"] else f"not used (< {100 * p['min_share']:.0f} %)")


def _variation(row: dict, known: dict, meta: dict) -> str:
    """A row's case: the tables' name for its victim; a clean model by its run's seed (clean models of
    several seeds can share their digits, so the tables' name may be another seed's)."""
    if row["attack"] == "clean" and (meta.get("setup") or {}).get("seed") is not None:
        return f"clean s{meta['setup']['seed']}"
    return known.get("variation") or _case(meta)


def _case(meta: dict) -> str:
    """A run whose victim is in none of the tables, named from its own setup where it records one."""
    case = setup_case(meta)
    return "(not in the security table)" if case is None else f"{case} (victim not in the tables)"


def _epoch(row: dict) -> str:
    """The kept epoch the row itself records (a lost workdir takes the cell files along)."""
    return "-" if row.get("selected_epoch") is None else str(row["selected_epoch"])


def table(folders: list[Path], workdirs: list[Path], *tables: Path) -> str:
    cells = security_cells(*tables)
    lines = ["| victim | change on top of the preset | victim ASR | floor | `guarded` | `reference` | with the change "
             "| untriggered ASR with the change [clean model's] | epoch kept | poisoned rows without the trigger "
             "| folder |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for folder in folders:
        result = json.loads((folder / "results.json").read_text())
        victims = {r["dataset"]: r for r in result["rows"] if r.get("defense") == "none"}   # a run of several datasets
        if not victims:
            raise SystemExit(f"ablation: {folder / 'results.json'}: not a bench run with a 'none' row")
        changed = [r for r in result["rows"] if r["defense"] not in ("none", "bedkd-guarded")]
        ran = {r["dataset"]: r for r in result["rows"] if r["defense"] == "bedkd-guarded"}
        for r in changed or [r for r in result["rows"] if r["defense"] != "none"]:
            victim = victims.get(r["dataset"], next(iter(victims.values())))
            floors = {k: r.get(k) for k in ("floor_asr", "second_floor_asr")}
            known = dict(table_case(cells.get(victim_id({**victim, **floors}), {}), result["meta"]))
            if changed and r["dataset"] in ran:      # `guarded` in the same run, on the same victim
                known["bedkd-guarded"] = ran[r["dataset"]]
            cell = next((c for c in (cell_file(w, r) for w in workdirs) if c is not None), None)
            report = cell["details"]["report"] if cell else {}
            lines.append(
                f"| {r['dataset']} {_variation(r, known, result['meta'])} | "
                f"`{change(result['meta']['command'])}` | {pair(victim['asr'], victim.get('second_asr'))} | "
                f"{pair(r['floor_asr'], r.get('second_floor_asr'))}{floor_range(r)} | {_defended(known.get('bedkd-guarded'))} | "
                f"{_defended(known.get('bedkd-reference'))} | {_defended(r)} | "
                f"{pair(r.get('untriggered_asr'), r.get('second_untriggered_asr'))} "
                f"[{pair(r.get('floor_untriggered_asr'), r.get('second_floor_untriggered_asr'))}] | "
                f"{report.get('selected_epoch', _epoch(r))} | {_poison(report)} | `{folder.name}/` |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="bench output folders (each with results.json); two backdoors read first / second")
    p.add_argument("--workdir", type=Path, nargs="+", required=True,
                   help="the runs' bench workdirs (their cell files; the first that holds a run's cell)")
    p.add_argument("--security", type=Path, nargs="+", required=True,
                   help="the security table's results.json (and others, e.g. the robustness table's)")
    p.add_argument("--title", required=True)
    p.add_argument("--intro", default="", help="a paragraph under the title")
    p.add_argument("--intro-file", type=Path, help="the text under the title, read from this file (kept beside "
                                                    "the README, so the command line stays short)")
    args = p.parse_args(argv)
    if args.intro_file is not None:
        if not args.intro_file.is_file():
            print(f"ablation.py: {args.intro_file}: no such file", file=sys.stderr)
            return 2
        args.intro = "\n\n".join(x for x in (args.intro, args.intro_file.read_text().strip()) if x)
    for path in [*(f / "results.json" for f in args.folders), *args.security]:
        if not path.is_file():
            print(f"ablation.py: {path}: no such file", file=sys.stderr)
            return 2
    command = "python benchmarks/ablation.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"# {args.title}\n\nGenerated by `{command}`.\n\n" + (f"{args.intro}\n\n" if args.intro else "")
          + table(args.folders, args.workdir, *args.security), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
