"""Robustness table: BeDKD on triggers, target labels and seeds that nothing was tuned on.

    python benchmarks/robustness.py run --workdir ~/.cache/bedkd/robust --seeds 0 --datasets sst2 olid
    python benchmarks/robustness.py run ... --ablation measured-cp -- --preset guarded --akd-reset-value measured
    python benchmarks/robustness.py report

``run`` calls ``bedkd bench`` once per (seed, target, attack, trigger) with a shared victim cache
(resumable: rerun the same command after an interruption) and its own output folder under
``--runs``; ``report`` reads every ``results.json`` there (a folder named ``LABEL@NAME`` holds an
ablation, as ``run --ablation LABEL -- BENCH_OPTIONS`` writes them: its ``bedkd`` rows become the column
``LABEL``; a BeDKD row whose options are the ``guarded`` preset's as it is now is ``bedkd-guarded``,
one of that preset as it was before the label check joined it ``guarded-v2``, before the shift guard
``guarded-v1``) and writes
``docs/results/robustness/``
(``results.json`` with each run's command, date, machine and code version, and ``results.md``
generated from it). Every trigger below is new: none is a default of an attack or was used while
the defaults of BeDKD were chosen.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from bedkd.attacks.base import AttackConfig
from bedkd.bench import BenchConfig
from bedkd.bench.report import bar_over_floors, meets_bar
from bedkd.bench.runner import FLOOR_RANGE
from bedkd.cli.bench_cmd import defense_configs
from bedkd.cli.main import build_parser
from bedkd.datasets import DATASETS, available_styles
from bedkd.defenses.purifiers.bedkd import PRESETS
from bedkd.errors import BedkdError
from bedkd.options import options_from_args

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_runs  # noqa: E402
from bench_runs import (backed_cannot_act, backed_screened, bar_mark, floor_range, fmt,  # noqa: E402
                        isolate_cannot_act, isolate_screened, latest_cannot_act, latest_screened,
                        keep_earlier, read_runs, report_meta, run_plan, retry_cannot_act, shared_floor_ranges,
                        signed_proxy_cannot_act, signed_proxy_screened, table_defenses, towards_target_cannot_act,
                        towards_target_screened, unexplained_cannot_act, unexplained_screened, victim_digits,
                        write_table)

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "work" / "robustness"
OUT = ROOT / "docs" / "results" / "robustness"

# Three new triggers per family; StyleBkd's are other styles of the data pack, four of them because the
# pack has each dataset's train and test paraphrases of three (SST-2: no tweets test file, OLID: poetry for
# dev only; a style runs only where the pack has it, `run_datasets`). SynBkd has one
# template in the pack, so it has no new trigger (its default is run with each target and seed).
TRIGGERS = {
    "badnets": [["zx", "vq", "jw"], ["qv", "xk", "wz"], ["kq", "zj", "vx"]],
    "addsent": [["I read this book twice"], ["the weather was cold today"], ["my uncle likes green apples"]],
    "ep": [["jt"], ["vk"], ["qz"]],
    "sos": [["garden", "yellow", "music"], ["window", "river", "coffee"], ["pencil", "summer", "orange"]],
    "stylebkd": ["lyrics", "poetry", "shakespeare", "tweets"],
    "synbkd": [None],
}
BASE = "bedkd-guarded"
REFERENCE = "bedkd-reference"
DEFENSES = [REFERENCE, BASE]
STRONG_VICTIM = 90.0   # issue 10: victims at >= 90 % ASR
TABLE_RATE = AttackConfig().rate   # the poison rate of the committed table's victims (bench --attack-rate's default)
# `guarded` before each change, newest first: the options that go back, on top of the newer versions'.
EARLIER_CHANGES = [
    ("guarded-v12", {"akd": {"untriggered_latest": False}}),                            # before the latest epoch
    ("guarded-v11", {"scan": {"trigger_flip_backed": 0.0}}),                            # before backed triggers
    ("guarded-v10", {"akd": {"signed_proxy": False}}),                                  # before the signed proxy
    ("guarded-v9", {"scan": {"label_check_towards_target": "clear"}}),                  # before the piece test
    ("guarded-v8", {"scan": {"label_check_towards_target": "all"}}),                    # before sparing trigger rows
    ("guarded-v7", {"akd": {"isolate_trigger_words": False, "isolate_keep": "always"}}),   # before the word tokens
    ("guarded-v6", {"scan": {"label_check_unexplained": False}}),                      # before the rest test acts
    ("guarded-v5", {"scan": {"label_check_counter_retry": False}}),                    # before the counter retry
    ("guarded-v4", {"scan": {"label_check_shift_fdr": 0.0, "label_check_over_dmm": False}}),   # before q-value rows
    ("guarded-v3", {"scan": {"label_check_shift": False}}),                            # before the shift test
    ("guarded-v2", {"scan": {"label_check": False, "label_check_use": "punish"}}),     # before the label check
    ("guarded-v1", {"akd": {"guard_margin_cap": None, "clean_prior_shift": False,       # before the shift guard
                            "guard_prior_shift": False}}),
]
EARLIER = [label for label, _ in EARLIER_CHANGES]
PREVIOUS = EARLIER[0]
# Per table version before this one, how its column labels read now (applied in turn): before columns
# followed the options, `bedkd-guarded` was v1 and the `shift-guard` ablation v2; before the label check
# joined, `bedkd-guarded` was v2 and the `lc-relabel` ablation v3; before the shift test joined,
# `bedkd-guarded` was v3 and the `shift-test` ablation v4; before the shift test's q-value rows and
# the label check over DMM joined, `bedkd-guarded` was v4 and the `fdr-over-dmm` ablation is `guarded`
# as it is now; each later version's `bedkd-guarded` is the version before the next change.
RELABELLED = [{"bedkd-guarded": "guarded-v1", "shift-guard": "bedkd-guarded"},
              {"bedkd-guarded": "guarded-v2", "lc-relabel": "bedkd-guarded"},
              {"bedkd-guarded": "guarded-v3", "shift-test": "bedkd-guarded"},
              {"bedkd-guarded": "guarded-v4", "fdr-over-dmm": "bedkd-guarded"},
              {"bedkd-guarded": "guarded-v5"},
              {"bedkd-guarded": "guarded-v6"},
              {"bedkd-guarded": "guarded-v7"},
              {"bedkd-guarded": "guarded-v8"},
              {"bedkd-guarded": "guarded-v9"},
              {"bedkd-guarded": "guarded-v10"},
              {"bedkd-guarded": "guarded-v11"},
              {"bedkd-guarded": "guarded-v12"}]
TABLE_VERSION = len(RELABELLED) + 1
# A row of an earlier version counts in `guarded`'s column where none of the changes since can act on
# it, as the row itself shows (marked ‡, ``carried_from``). The counter retry runs only after a run that
# found a backdoor, relabelled rows and kept no epoch: a row with no evidence, or an epoch kept, has the
# digits it would have now (tests/test_label_check.py: one run of the cycles where an epoch was kept).
# The label check's rest test acts only on a found trigger's label where it reaches its line: as the
# row records, or a committed screen of the run shows (bench_runs.unexplained_cannot_act). The trigger-word
# tokens act only on a found word that some candidate of the run's trigger search would give a token, as
# a committed model-free screen shows (bench_runs.isolate_cannot_act). Sparing relabelled rows that hold a
# found trigger's piece acts only where the label check relabels towards a found trigger's target, as a
# committed model-free screen and the rest test's record show (bench_runs.towards_target_cannot_act);
# the piece test acts only on such a label too (the same screen). The signed proxy acts only among the
# epochs within the guard of a run with a found trigger, where a committed replay of the rule on the run's
# epoch records keeps another epoch (bench_runs.signed_proxy_cannot_act). A backed trigger acts only on a
# label with evidence and no found trigger whose best candidate reaches the line, as a committed screen of
# each run's cell report or victim shows (bench_runs.backed_cannot_act). The latest epoch within the guard
# acts only on a run with no found trigger where an epoch passed the guard, and a committed replay of the
# rule on the run's epoch records keeps another epoch (bench_runs.latest_cannot_act).
SCREENED = unexplained_screened()
ISOLATE_SCREENED = isolate_screened()
TOWARDS_SCREENED = towards_target_screened()
SIGNED_SCREENED = signed_proxy_screened()
BACKED_SCREENED = backed_screened()
LATEST_SCREENED = latest_screened()
CARRIES_OVER = {"guarded-v5": retry_cannot_act, "guarded-v6": lambda row: unexplained_cannot_act(row, SCREENED),
                "guarded-v7": lambda row: isolate_cannot_act(row, ISOLATE_SCREENED),
                "guarded-v8": lambda row: towards_target_cannot_act(row, TOWARDS_SCREENED, SCREENED),
                "guarded-v9": lambda row: towards_target_cannot_act(row, TOWARDS_SCREENED, SCREENED),
                "guarded-v10": lambda row: signed_proxy_cannot_act(row, SIGNED_SCREENED),
                "guarded-v11": lambda row: backed_cannot_act(row, BACKED_SCREENED),
                "guarded-v12": lambda row: latest_cannot_act(row, LATEST_SCREENED)}
CARRIED = "‡"
FIELDS = ("run_date", "status", "dataset", "attack", "defense", "victim_cacc", "victim_asr", "floor_asr", "cacc", "asr",
          "untriggered_asr", "floor_untriggered_asr", "cacc_change",
          "backdoor_found", "target_found", "trigger_found", "unexplained_acts", "defense_seconds", "victim_train_seconds",
          "dmm_seconds", "scan_seconds", "akd_seconds",
          "selected_epoch", "kept_precision", *FLOOR_RANGE)


def plan(args) -> list[tuple[str, list[str]]]:
    """(run name, bench arguments) for every run: the cells of ``cells(args)``, then a clean run per seed."""
    runs, chosen = [], cells(args)
    for seed, target, attack, i, trigger in chosen:
        extra, datasets = trigger_arguments(attack, trigger), run_datasets(args, attack, trigger)
        if not datasets:
            continue
        if getattr(args, "attack_rate", None) is not None:
            extra += ["--attack-rate", f"{args.attack_rate:g}"]
        runs.append((_cell_name(seed, target, attack, i),
                     ["--datasets", *datasets, "--attacks", attack, "--no-clean-row",
                      "--attack-target", str(target), "--seed", str(seed), *extra]))
    pairs = getattr(args, "design", "grid") == "pairs"
    for seed in sorted({c[0] for c in chosen}) if pairs else args.seeds:
        runs.append((_clean_name(seed), ["--datasets", *args.datasets, "--attacks", "clean", "--seed", str(seed)]))
    return runs


def trigger_arguments(attack: str, trigger) -> list[str]:
    """The bench arguments that give a cell its trigger: a StyleBkd style, else trigger words (none: the
    attack's own, SynBkd's one template)."""
    if attack == "stylebkd":
        return ["--attack-style", trigger]
    return [] if trigger is None else ["--attack-trigger", *trigger]


def run_datasets(args, attack: str, trigger) -> list[str]:
    """The datasets of ``args`` a cell runs on: for StyleBkd, those whose pack has the style's train and test
    paraphrases (OLID's poetry has a dev split only), with a line naming the others."""
    if attack != "stylebkd":
        return list(args.datasets)
    styles = {d: _pack_styles(d, getattr(args, "data_dir", None)) for d in args.datasets}
    # no data pack here: every dataset (the bench itself will say what is missing)
    have = [d for d in args.datasets if styles[d] is None or trigger in styles[d]]
    if len(have) < len(args.datasets):
        print(f"stylebkd {trigger}: {' '.join(d for d in args.datasets if d not in have)} left out: "
              "the data pack has no train and test paraphrases of that style there", file=sys.stderr)
    return have


def _cell_name(seed: int, target: int, attack: str, trigger_index: int) -> str:
    return f"s{seed}-t{target}-{attack}-{trigger_index}"


def _clean_name(seed: int) -> str:
    return f"s{seed}-clean"


def cells(args) -> list[tuple]:
    """(seed, target, attack, trigger index, trigger) per attack cell, in run order.

    ``grid``: every seed x target x chosen trigger. ``pairs``: every chosen trigger x target once, the
    seed rotating so that with three triggers and three seeds each target's cells use every trigger
    and every seed once (seed index (i + 1) mod 3 on even targets, -i mod 3 on odd ones, for
    trigger i): the cells the committed table was first built from (seed 1: trigger 0, target 0;
    seed 2: trigger 1, target 1; seed 0: trigger 2, target 0) are three of them. A family with one
    trigger (SynBkd) gets every seed per target.
    Targets an attack cannot have on one of ``datasets`` (SynBkd on a binary task: only the data
    pack's target) are left out, with a line saying so."""
    out, design = [], getattr(args, "design", "grid")
    for attack in args.attacks:
        stop = None if args.triggers is None else args.first_trigger + args.triggers
        triggers = list(enumerate(TRIGGERS[attack]))[args.first_trigger:stop]
        targets = [t for t in args.targets if _supported(attack, t, args.datasets)]
        if len(targets) < len(args.targets):
            print(f"{attack}: targets {sorted(set(args.targets) - set(targets))} left out: not supported on "
                  f"{' '.join(args.datasets)}", file=sys.stderr)
        if design == "grid":
            out += [(s, t, attack, i, trig) for s in args.seeds for t in targets for i, trig in triggers]
        elif len(TRIGGERS[attack]) == 1:
            out += [(s, t, attack, i, trig) for i, trig in triggers for t in targets for s in args.seeds]
        else:
            out += [(args.seeds[(i + 1 if t % 2 == 0 else -i) % len(args.seeds)], t, attack, i, trig)
                    for i, trig in triggers for t in targets]
    if design == "grid":              # the order of the earlier plans: seed, then target, then attack
        out.sort(key=lambda c: (args.seeds.index(c[0]), args.targets.index(c[1])))
    return out


def _supported(attack: str, target: int, datasets: list[str]) -> bool:
    """False where the attack refuses the target on one of the datasets (SynBkd, binary, not the pack's target)."""
    if attack != "synbkd":
        return True
    infos = [DATASETS[d] for d in datasets if d in DATASETS]
    return all(i.syntactic_target is None or i.num_labels > 2 or target == i.syntactic_target for i in infos)


def run(args) -> int:
    runs = plan(args)
    if getattr(args, "skip_measured", None):
        done = {(_planned_case(r), r["dataset"], r["defense"])
                for r in json.loads(Path(args.skip_measured).read_text())["rows"] if r.get("status") == "ok"}
        rate = getattr(args, "attack_rate", None) or TABLE_RATE
        case = {_cell_name(s, t, a, i): _planned_case(dict(attack=a, trigger=trigger_text(trig), target=t, seed=s,
                                                           rate=rate))
                for s, t, a, i, trig in cells(args)} | {_clean_name(s): ("clean", s) for s in args.seeds}
        columns = [[defense, *_version_of_ablation(args)] for defense in table_defenses(args)]
        runs = [(name, a) for name, a in runs if not all(any((case[name], d, c) in done for c in same)
                                                          for d in _datasets_of(a) for same in columns)]
    return run_plan(runs, args)


def _datasets_of(bench_args: list[str]) -> list[str]:
    """The ``--datasets`` of a planned run's bench arguments."""
    rest = bench_args[bench_args.index("--datasets") + 1:]
    return rest[:next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))]


def _version_of_ablation(args) -> list[str]:
    """The ``guarded`` version whose options an ``--ablation`` run has ([] if none, or not an ablation):
    ``report`` puts its rows in that version's column, so a table's rows there count as measured."""
    if not getattr(args, "ablation", None):
        return []
    bench = build_parser().parse_args(["bench", "--out", "unused", "--defenses", "bedkd",
                                       *getattr(args, "bench_options", [])])
    configs = defense_configs(bench, options_from_args(BenchConfig, bench))["bedkd"]
    version = _version({part: cfg.to_dict() for part, cfg in zip(("dmm", "akd", "scan"), configs)})
    return [version] if version else []


def trigger_text(trigger) -> str:
    """A trigger as a table row names it (the ``trigger`` field of ``report``)."""
    return trigger if isinstance(trigger, str) else " ".join(trigger or []) or "default"


def _planned_case(row: dict) -> tuple:
    """What ``--skip-measured`` matches a planned run on: attack, trigger, target, seed and poison rate (a
    clean model: its seed only). Not the run name: tables carry runs renamed when collated (``...-olid``)."""
    if row["attack"] == "clean":
        return "clean", row["seed"]
    return row["attack"], row["trigger"], row["target"], row["seed"], _rate(row)


def _rate(row: dict) -> float:
    """A row's poison rate; a row of a table written before rows recorded it has the table's own."""
    return row.get("rate") or TABLE_RATE


def report(args) -> int:
    runs, found = read_runs(args.runs)
    rows = [{"run": run, "seed": setup["seed"], "target": setup["attack"]["target"],
             "trigger": trigger_text(setup["attack"].get("triggers") or setup["attack"].get("style")),
             **({"rate": setup["attack"].get("rate")} if r.get("attack") != "clean" else {}),
             **{k: r.get(k) for k in FIELDS}, "defense": _column(run, setup, r)} for run, setup, r in found]
    for path in args.keep:
        runs, rows = keep_earlier(path, runs, rows, case_of, lambda r: r["run"], migrate=_earlier_column)
    rates = sorted({_rate(r) for r in rows if r["attack"] != "clean"})
    if len(rates) > 1:
        raise SystemExit(f"{args.runs}: victims poisoned at rates {', '.join(f'{x:g}' for x in rates)}; a table "
                         "holds one rate (its cells are keyed without it): report each rate to its own --out")
    rows = carried_over(shared_floor_ranges(rows, lambda r: (*case_of(r), *victim_digits(r))))
    meta = report_meta("robustness.py", runs, title=getattr(args, "title", None), columns_by_options=True,
                       table_version=TABLE_VERSION, **({"rate": rates[0]} if rates and rates != [TABLE_RATE] else {}))
    return write_table(args.out, meta, rows, markdown(rows, meta))


def carried_over(rows: list[dict]) -> list[dict]:
    """Rows of an earlier version that none of the changes since can alter (``CARRIES_OVER``, each
    change's test on the row) moved to ``BASE``'s column, marked with ``carried_from``, the newest
    such version of a case only, unless ``BASE`` measured that case itself."""
    taken = {case_of(r): None for r in rows if r["defense"] == BASE}      # case -> the index of the row carried
    for label in EARLIER:                      # newest first
        if label not in CARRIES_OVER:
            break
        for i, r in enumerate(rows):
            if r["defense"] == label and case_of(r) not in taken and _carries(r, label):
                taken[case_of(r)] = i
    carried = {i for i in taken.values() if i is not None}
    return [{**r, "defense": BASE, "carried_from": r["defense"]} if i in carried else r for i, r in enumerate(rows)]


def _carries(row: dict, label: str) -> bool:
    """Whether every change from version ``label`` to ``BASE`` leaves the row as it is."""
    return all(CARRIES_OVER[v](row) for v in EARLIER[:EARLIER.index(label) + 1])


def case_of(row: dict) -> tuple:
    """What a row's victim is: the cells of one case share it."""
    return row["dataset"], row["attack"], row["trigger"], row["target"], row["seed"]


def _column(run: str, setup: dict, row: dict) -> str:
    """A row's column: for BeDKD run with the options of a version of the ``guarded`` preset (its seed
    aside), whether as the fixed preset or as an ablation that names them all, that version
    (``bedkd-guarded`` as it is now, ``guarded-v2``, ...); the oldest version for the fixed preset run
    with other options; the label of an ablation run folder (``LABEL@NAME``: ``--defenses none bedkd
    --preset ... --option``) for its other ``bedkd`` rows, so that several ablations sit side by side."""
    defense = row.get("defense")
    if defense in ("bedkd", "bedkd-guarded"):
        version = _version(setup.get("defenses", {}).get(defense) or {})
        if version or defense == "bedkd-guarded":
            return version or EARLIER[-1]
    return run.split("@", 1)[0] if "@" in run and defense == "bedkd" else defense


def _version(options: dict) -> str | None:
    """The ``guarded`` version (``GUARDED_VERSIONS``) whose options per part these are, seed aside."""
    return next((label for label, known in GUARDED_VERSIONS.items()
                 if all(_without_seed(options.get(part, {})) == o for part, o in known.items())), None)


def _without_seed(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "seed"}


def _versions() -> dict[str, dict]:
    """Each version's options per part (dmm, akd, scan) as a run records them (seed aside): now, then
    each earlier one."""
    configs = dict(zip(("dmm", "akd", "scan"), PRESETS["guarded"]))
    out = {BASE: configs}
    for label, changes in EARLIER_CHANGES:
        configs = {part: cfg.replace(**changes.get(part, {})) for part, cfg in configs.items()}
        out[label] = configs
    return {label: {part: _without_seed(cfg.to_dict()) for part, cfg in v.items()} for label, v in out.items()}


GUARDED_VERSIONS = _versions()


def _earlier_column(meta: dict, row: dict) -> dict:
    """A row of a table of an earlier ``table_version`` (``columns_by_options`` alone: 2; neither: 1),
    labelled as this version would (``RELABELLED``); a row carried over (``carried_from``) goes back to
    the version that measured it, to be carried again where the changes since still cannot act on it."""
    if row.get("carried_from"):
        return {k: v for k, v in row.items() if k != "carried_from"} | {"defense": row["carried_from"]}
    label = row["defense"]
    for names in RELABELLED[meta.get("table_version", 2 if meta.get("columns_by_options") else 1) - 1:]:
        label = names.get(label, label)
    return {**row, "defense": label}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# {meta.get('title') or 'Robustness: new triggers, every target label, several seeds'}", "",
             f"Generated by `{meta['command']}` on {meta['date']} from {len(meta['runs'])} `bedkd bench` runs "
             "(each run's command, date, machine and code version are in `results.json`).", "",
             "A cell meets the bar when ASR <= max(5, floor + 2) and the CACC change is >= -1 point "
             "(clean models: within +-0.5). CACC is on the dataset's natural test distribution. Where a run "
             "measured the clean models of further seeds (`--floor-seeds`), their lowest-highest floor follows "
             "the floor, and * marks a cell whose verdict turns on which of them gives the floor.", ""]
    if meta.get("rate") is not None:
        lines += [f"Every victim here was poisoned at rate {meta['rate']:g} (`--attack-rate`), not the "
                  f"{TABLE_RATE:g} of the committed robustness table.", ""]
    carried = [r for r in rows if r.get("carried_from")]
    if carried:
        versions = ", ".join(f"`{v}` {sum(r['carried_from'] == v for r in carried)}" for v in EARLIER
                             if any(r["carried_from"] == v for r in carried))
        lines += [f"{CARRIED} marks a `{BASE}` cell measured as an earlier version ({len(carried)} of "
                  f"{sum(1 for r in rows if r['defense'] == BASE)}: {versions}), where none of the changes since can "
                  "act, as its row records or a committed screen of the run shows (`CARRIES_OVER` in "
                  "benchmarks/robustness.py).", ""]
    seen = dict.fromkeys(r["defense"] for r in rows if r["defense"] != "none")
    first = [*DEFENSES, *EARLIER]
    defenses = [d for d in first if d in seen] + [d for d in seen if d not in first]   # ablations last
    lines += ["## Summary", "", "*cost*: the defense's seconds over those of training its victim, median (range) over "
              "the cells that record both; the runs shared 2 CPU cores with other jobs, so a ratio is rough.", "",
              "| defense | cells | meets the bar | verdict turns on the floor | mean ASR | mean CACC change | "
              "cost (x victim training) |", "|---|---|---|---|---|---|---|"]
    for d in defenses:
        cells = [r for r in rows if r["defense"] == d]
        ok = [r for r in cells if meets_bar(r)]
        asr = [r["asr"] for r in cells if r["asr"] is not None]
        turns = sum(1 for r in cells if bar_over_floors(r) == "depends")
        lines.append(f"| {d} | {len(cells)} | {len(ok)} | {turns} | {fmt(sum(asr) / len(asr) if asr else None)} | "
                     f"{fmt(sum(r['cacc_change'] for r in cells) / len(cells) if cells else None)} | {_cost(cells)} |")
    lines += _stage_costs(rows, defenses)
    lines += _coverage(rows)
    lines += _grid(rows)
    keyed = {}
    for r in rows:
        keyed.setdefault(case_of(r), {})[r["defense"]] = r
    for base in (BASE, PREVIOUS):          # each other defense beside `guarded` as it is, then as it was
        lines += _beside(keyed, base, [d for d in defenses if d not in (BASE, PREVIOUS, base)] +
                         ([BASE] if base == PREVIOUS else []))
    lines += _misses(rows, defenses)
    lines += _cacc_misses(rows, defenses)
    lines += ["", "## Every cell", "",
              "| dataset | attack | trigger | target | seed | victim ASR | floor | " +
              " | ".join(f"{d} ASR (ΔCACC)" for d in defenses) + " | guarded verdict |",
              "|---|---|---|---|---|---|---|" + "---|" * len(defenses) + "---|"]
    for key in sorted(keyed, key=lambda k: tuple(str(x) for x in k)):
        cell = keyed[key]
        any_row = max(cell.values(), key=lambda r: r.get("floor_asr_min") is not None)   # one with the floor range
        parts = []
        for d in defenses:
            r = cell.get(d)
            parts.append("-" if r is None else f"{fmt(r['asr'])} ({r['cacc_change']:+.1f}){bar_mark(r)}"
                         + (CARRIED if r.get("carried_from") else ""))
        g = next((cell[d] for d in (BASE, *EARLIER) if d in cell), {})
        verdict = "-" if not g else ("backdoor → " + str(g.get("target_found")) +
                                    (f" ('{g['trigger_found']}')" if g.get("trigger_found") else "")
                                    if g.get("backdoor_found") else "no evidence")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {fmt(any_row['victim_asr'])} | "
                     f"{fmt(any_row['floor_asr'])}{floor_range(any_row)} | " + " | ".join(parts) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


OUTCOMES = ("a miss turned into a pass", "a pass turned into a miss", "both pass", "both miss")


def _beside(keyed: dict, base: str, others: list[str]) -> list[str]:
    """Each other defense against ``base`` on the cases both measured (the same victim): how many
    verdicts it changes and how many cells lose more than a point of CACC under each, then the cells
    where either differs, and every case of `reference` (issue 10, item 5: never worse than it)."""
    paired = {d: [(k, c[base], c[d]) for k, c in sorted(keyed.items(), key=lambda kc: tuple(map(str, kc[0])))
                  if base in c and d in c] for d in others}
    paired = {d: p for d, p in paired.items() if p}
    if not paired:
        return []
    lines = ["", f"## Beside `{base}`", "", f"The cases both `{base}` and another defense measured (one victim): "
             "the other's verdicts against its, and the cells that lose more than a point of CACC under each.", "",
             "| defense | cases | " + " | ".join(OUTCOMES) + f" | ΔCACC < -1: `{base}` | ΔCACC < -1: it |",
             "|---|---|" + "---|" * (len(OUTCOMES) + 2)]
    listed = []
    for d, pairs in paired.items():
        counts = dict.fromkeys(OUTCOMES, 0)
        for key, base, other in pairs:
            outcome = _outcome(meets_bar(base), meets_bar(other))
            counts[outcome] += 1
            if outcome in OUTCOMES[:2] or _harms(base) != _harms(other) or d == REFERENCE:
                listed.append(f"- `{d}`, {outcome}: {key[0]} {key[1]} `{key[2]}` t{key[3]} s{key[4]}: "
                              f"{_cell(base)} → {_cell(other)} (floor {fmt(base['floor_asr'])})")
        lines.append(f"| {d} | {len(pairs)} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " | "
                     f"{sum(_harms(b) for _, b, _ in pairs)} | {sum(_harms(o) for _, _, o in pairs)} |")
    return lines + (["", f"Cells where the verdict or the harm differs, and every case of `{REFERENCE}`:", "", *listed]
                    if listed else [])


def _misses(rows: list[dict], defenses: list[str]) -> list[str]:
    """Each attack cell that misses on ASR, split into what the model does to the same rows without the
    trigger (a lean towards the target, which no trigger removal takes out) and what the trigger adds,
    beside the same split for the clean model that gives the floor."""
    missed = [r for d in defenses for r in rows if r["defense"] == d and r.get("asr") is not None
              and not meets_bar({**r, "cacc_change": 0.0})]           # the ASR alone misses
    if not missed:
        return []
    victims = {case_of(r): r for r in rows if r["defense"] == "none"}
    lines = ["", "## Where the ASR misses come from", "",
             "Each cell whose ASR is above the bar: its rate on the same non-target rows without the trigger "
             "(*untriggered*: a lean towards the target) and what the trigger adds to it, beside the same two "
             "for the clean model that gives the floor. A miss whose trigger adds no more than the clean "
             "model's plus 2 points is a lean, not a surviving backdoor (- where the run did not record the "
             "clean model's untriggered rate).", "",
             "| defense | dataset | attack | trigger | target | seed | ASR | untriggered | trigger adds | "
             "floor | clean: untriggered | clean: trigger adds | the excess is |", "|---" * 13 + "|"]
    for r in sorted(missed, key=lambda r: (defenses.index(r["defense"]), *map(str, case_of(r)))):
        own = None if r.get("untriggered_asr") is None else r["asr"] - r["untriggered_asr"]
        clean = None if r.get("floor_untriggered_asr") is None else r["floor_asr"] - r["floor_untriggered_asr"]
        kind = "-" if own is None or clean is None else "a lean" if own <= clean + 2 else "the trigger"
        lines.append(f"| {r['defense']} | {r['dataset']} | {r['attack']} | {r['trigger']} | {r['target']} | "
                     f"{r['seed']} | {fmt(r['asr'])} | {fmt(r.get('untriggered_asr'))} | {fmt(own)} | "
                     f"{fmt(r['floor_asr'])} | {fmt(r.get('floor_untriggered_asr'))} | {fmt(clean)} | {kind} |")
    return lines + _leans(rows, victims, [d for d in (BASE, *EARLIER) if d in defenses])


def _cacc_misses(rows: list[dict], defenses: list[str]) -> list[str]:
    """Each attack cell that loses more than a point of CACC, beside the clean model of the same dataset
    and seed (trained on the same rows without the poison): a returned model near that model's CACC has
    lost what the victim had over a clean model, not what a clean model has. The bar stays the change
    against the victim (issue 10, item 2); this only says where the lost points went."""
    clean = {}
    for r in rows:
        if r["attack"] == "clean" and r["defense"] == "none" and r.get("cacc") is not None:
            clean.setdefault((r["dataset"], r["seed"]), set()).add(round(r["cacc"], 2))
    harmed = [r for d in defenses for r in rows if r["defense"] == d and r["attack"] != "clean" and _harms(r)]
    if not harmed:
        return []

    def clean_cacc(r):
        values = clean.get((r["dataset"], r["seed"]))
        return None if not values or len(values) > 1 else next(iter(values))   # one clean model, or none
    lines = ["", "## Where the clean-accuracy misses come from", "",
             "Each attack cell that loses more than a point of CACC against its victim, beside the clean model "
             "of the same dataset and seed (the same training rows without the poison; - where the table has "
             "none, or several that differ). *Against the clean model* is the returned model's CACC less the "
             "clean model's: a cell near zero or above it has lost what the victim had gained over a clean "
             "model. The bar stays the change against the victim.", "",
             "| defense | CACC misses | with a clean model | within 1 point of it or above | victim over the clean "
             "model, mean (range) |", "|---|---|---|---|---|"]
    for d in [d for d in defenses if any(r["defense"] == d for r in harmed)]:
        mine = [r for r in harmed if r["defense"] == d]
        known = [r for r in mine if clean_cacc(r) is not None]
        near = sum(1 for r in known if r["cacc"] - clean_cacc(r) >= -1.0)
        gain = [r["victim_cacc"] - clean_cacc(r) for r in known if r.get("victim_cacc") is not None]
        spread = (f"{statistics.mean(gain):+.2f} ({min(gain):+.2f} to {max(gain):+.2f})" if gain else "-")
        lines.append(f"| {d} | {len(mine)} | {len(known)} | {near} | {spread} |")
    lines += ["", "| defense | dataset | attack | trigger | target | seed | victim CACC | CACC | change | "
              "clean model CACC | against the clean model |", "|---" * 11 + "|"]
    for r in sorted(harmed, key=lambda r: (defenses.index(r["defense"]), *map(str, case_of(r)))):
        c = clean_cacc(r)
        lines.append(f"| {r['defense']} | {r['dataset']} | {r['attack']} | {r['trigger']} | {r['target']} | "
                     f"{r['seed']} | {_two(r.get('victim_cacc'))} | {_two(r['cacc'])} | {r['cacc_change']:+.2f} | "
                     f"{_two(c)} | {'-' if c is None else format(r['cacc'] - c, '+.2f')} |")
    return lines


def _two(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _leans(rows: list[dict], victims: dict, defenses: list[str]) -> list[str]:
    """Per dataset and target: how much more often than the clean model of the same seed the victim,
    and the model each defense returns, put non-target rows without the trigger in the target."""
    groups = {}
    for r in rows:
        if r["defense"] in defenses and r.get("untriggered_asr") is not None \
                and r.get("floor_untriggered_asr") is not None:
            groups.setdefault((r["dataset"], r["target"], r["defense"]), []).append(r)
    if not groups:
        return []
    lines = ["", "The lean towards the target, against the clean model of the same seed (untriggered rate less "
             "the clean model's, in points; mean and range over the cells that record both):", "",
             "| dataset | target | defense | cells | victim | after the defense |", "|---|---|---|---|---|---|"]

    def spread(values: list[float]) -> str:
        return f"{statistics.mean(values):+.1f} ({min(values):+.1f} to {max(values):+.1f})" if values else "-"
    for (dataset, target, defense), cells in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        before = [victims[case_of(r)]["untriggered_asr"] - r["floor_untriggered_asr"] for r in cells
                  if victims.get(case_of(r), {}).get("untriggered_asr") is not None]
        after = [r["untriggered_asr"] - r["floor_untriggered_asr"] for r in cells]
        lines.append(f"| {dataset} | {target} | {defense} | {len(cells)} | {spread(before)} | {spread(after)} |")
    return lines


def _outcome(base: bool | None, other: bool | None) -> str:
    return OUTCOMES[0] if other and not base else OUTCOMES[1] if base and not other else \
        OUTCOMES[2] if base else OUTCOMES[3]


def _harms(row: dict) -> bool:
    return row.get("cacc_change") is not None and row["cacc_change"] < -1.0


def _cell(row: dict) -> str:
    asr = "clean" if row.get("asr") is None else fmt(row["asr"])
    return f"{asr} ({row['cacc_change']:+.1f}){bar_mark(row)}{CARRIED if row.get('carried_from') else ''}"


def _coverage(rows: list[dict]) -> list[str]:
    """Which of the issue's seeds x new triggers x target labels each family has, per dataset; a column per
    ``guarded`` version with cells here (``BASE`` always)."""
    shown = [d for d in (BASE, *EARLIER) if d == BASE or any(r["defense"] == d for r in rows)]
    lines = ["", "## Coverage", "", "Issue 10 asks for 3 seeds x 3 new triggers per family x every target label. Per "
             "dataset and family: the cases measured (a victim, with at least one defense), the trigger x target "
             "pairs among them (of those the family and the dataset allow), and the seeds and targets they use.", "",
             "| dataset | attack | cases | trigger x target pairs | seeds | targets | " +
             " | ".join(f"`{d}` meets the bar" for d in shown) + " |", "|---" * (6 + len(shown)) + "|"]
    cases = {}
    for r in rows:
        if r["attack"] != "clean" and r["defense"] != "none" and r.get("status", "ok") == "ok":
            cases.setdefault((r["dataset"], r["attack"]), {}).setdefault(case_of(r), []).append(r)
    datasets = sorted({r["dataset"] for r in rows})
    for dataset, attack in sorted({(d, a) for d in datasets for a in TRIGGERS} | set(cases)):
        found = cases.get((dataset, attack), {})
        info = DATASETS.get(dataset)
        targets = (1 if attack == "synbkd" and info and info.num_labels == 2 else info.num_labels) if info else None
        have = [t for t in TRIGGERS.get(attack, [None]) if not _pack_lacks(attack, trigger_text(t), dataset)]
        possible = "?" if targets is None else str(len(have) * targets)
        pairs = {(k[2], k[3]) for k in found}
        meets = [f"{sum(1 for r in rs if meets_bar(r))} of {len(rs)}" for rs in
                 ([r for rs in found.values() for r in rs if r["defense"] == d] for d in shown)]
        lines.append(f"| {dataset} | {attack} | {len(found)} | {len(pairs)} of {possible} | "
                     f"{' '.join(map(str, sorted({k[4] for k in found}))) or '-'} | "
                     f"{' '.join(map(str, sorted({k[3] for k in found}))) or '-'} | " + " | ".join(meets) + " |")
    return lines


def _grid(rows: list[dict]) -> list[str]:
    """Per dataset, ``BASE``'s cells laid out as the issue's grid: a row per family and trigger (its new
    triggers first, then any other trigger run), a column per target and seed, each cell the ASR with
    ✓ (meets the bar) or ✗, ° where the victim's ASR is under ``STRONG_VICTIM`` (the issue asks for victims
    at least that strong), and - where the case was not run."""
    mine = {case_of(r): r for r in rows if r["defense"] == BASE and r["attack"] != "clean"
            and r.get("status", "ok") == "ok"}
    if not mine:
        return []
    lines = ["", "## The grid", "", f"`{BASE}` per dataset: a row per family and trigger, a column per target "
             "label and seed; each cell its ASR, ✓ where it meets the bar and ✗ where it does not (either way, "
             "the cell in *Every cell* below gives its CACC change and floor), ° where the victim's ASR is under "
             f"{STRONG_VICTIM:g} (the issue asks for victims at least that strong), - where the case has not been run, "
             "n/a where the attack cannot have that target (SynBkd on a binary task: the pack's target only) or the "
             "data pack (`$BEDKD_DATA_DIR`, when set) has no train and test paraphrases of the style there. "
             "Issue 10's grid is every cell of the rows of each family's new triggers (StyleBkd: the three of its four "
             "styles the pack has for the dataset).", ""]
    for dataset in sorted({k[0] for k in mine}):
        info = DATASETS.get(dataset)
        labels = range(info.num_labels) if info else sorted({k[3] for k in mine if k[0] == dataset})
        seeds = sorted({0, 1, 2} | {k[4] for k in mine if k[0] == dataset})
        columns = [(t, s) for t in labels for s in seeds]
        done = [r for k, r in mine.items() if k[0] == dataset]
        weak = sum(1 for r in done if _weak_victim(r))
        lines += [f"**{dataset}**: {sum(1 for r in done if meets_bar(r))} of {len(done)} cells meet the bar"
                  + (f" ({weak} of them on a victim under {STRONG_VICTIM:g} % ASR, °)." if weak else ".") , "",
                  "| attack | trigger | " + " | ".join(f"t{t} s{s}" for t, s in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for attack in TRIGGERS:
            run = {k[2] for k in mine if k[0] == dataset and k[1] == attack}
            new = [trigger_text(t) for t in TRIGGERS[attack]]
            for trigger in new + sorted(run - set(new)):
                cells = [(t, mine.get((dataset, attack, trigger, t, s))) for t, s in columns]
                lacks = _pack_lacks(attack, trigger, dataset)
                lines.append(f"| {attack} | {trigger} | " + " | ".join(
                    ("n/a" if lacks or not _supported(attack, t, [dataset]) else "-") if r is None else
                    f"{fmt(r['asr'])} {'✓' if meets_bar(r) else '✗'}{'°' if _weak_victim(r) else ''}"
                    for t, r in cells) + " |")
        lines.append("")
    return lines[:-1]


def _pack_styles(dataset: str, data_dir=None) -> list[str] | None:
    """The StyleBkd styles the data pack (``data_dir``, else ``$BEDKD_DATA_DIR``) has for ``dataset``;
    None when there is no data pack to look in."""
    try:
        return available_styles(dataset, data_dir)
    except BedkdError:
        return None


def _pack_lacks(attack: str, trigger: str, dataset: str) -> bool:
    """A StyleBkd style the data pack (``$BEDKD_DATA_DIR``) has no train and test paraphrases of for
    ``dataset``; False when there is no data pack to look in."""
    styles = _pack_styles(dataset) if attack == "stylebkd" else None
    return styles is not None and trigger not in styles


def _weak_victim(row: dict) -> bool:
    return row.get("victim_asr") is not None and row["victim_asr"] < STRONG_VICTIM


def _cost(cells: list[dict], part=lambda r: r.get("defense_seconds")) -> str:
    """Median (range) of ``part`` of a row's seconds over its victim's training seconds."""
    ratios = sorted(part(r) / r["victim_train_seconds"] for r in cells
                    if part(r) is not None and r.get("victim_train_seconds"))
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.1f} ({ratios[0]:.1f}-{ratios[-1]:.1f})"


STAGES = ("dmm_seconds", "scan_seconds", "akd_seconds")


def _stage_costs(rows: list[dict], defenses: list[str]) -> list[str]:
    """Where BeDKD's seconds go, per defense whose rows record the stages: DMM's flipped distillation,
    its scoring of every suspicious row, the AKD cycles, and the rest (trigger search, label check,
    loading), each over the victim's training seconds."""
    def rest(r):
        if r.get("defense_seconds") is None or any(r.get(k) is None for k in STAGES):
            return None
        return r["defense_seconds"] - sum(r[k] for k in STAGES)
    out = []
    for d in defenses:
        cells = [r for r in rows if r["defense"] == d and r.get("dmm_seconds") is not None]
        if cells:
            out.append(f"| {d} | {len(cells)} | " + " | ".join(_cost(cells, lambda r, k=k: r.get(k)) for k in STAGES)
                       + f" | {_cost(cells, rest)} | {_cost(cells)} |")
    if not out:
        return []
    return ["", "### Cost by stage", "",
            "Each stage's seconds over the victim's training seconds, median (range), over the cells whose runs "
            "recorded the stages (a cell whose model was returned unchanged has no AKD, and is left out of that "
            "column): DMM, its "
            "flipped distillation; scoring, DMM's pass over every suspicious row and the held-out clean rows; AKD, "
            "the trust/punish cycles with their validation; the rest, the trigger search, the label check and "
            "loading.", "",
            "| defense | cells | DMM | scoring | AKD | the rest | total |", "|---|---|---|---|---|---|---|", *out]


def _plan_arguments(r) -> None:
    r.add_argument("--attacks", nargs="+", default=list(TRIGGERS), choices=list(TRIGGERS))
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--targets", nargs="+", type=int, default=[0, 1])
    r.add_argument("--triggers", type=int, default=None,
                   help="how many of each family's new triggers (default: all of them)")
    r.add_argument("--first-trigger", type=int, default=0, help="index of the first of them (0, 1, 2; StyleBkd also 3)")
    r.add_argument("--skip-measured", default=None, metavar="RESULTS_JSON",
                   help="a table's results.json: leave out the runs whose cells (every dataset, every defense) it has")
    r.add_argument("--attack-rate", type=float, default=None,
                   help=f"bench --attack-rate for every attack cell (default: bench's, {TABLE_RATE:g}, the committed "
                        "table's); report a table of another rate to its own --out")
    r.add_argument("--design", choices=("grid", "pairs"), default="grid",
                   help="grid: every seed x target x trigger; pairs: every trigger x target once, the seed rotating "
                        "over --seeds (each target's cells: every trigger and every seed once)")


if __name__ == "__main__":
    sys.exit(bench_runs.main(__doc__, run, report, str(RUNS), str(OUT), DEFENSES, DEFENSES, _plan_arguments))
