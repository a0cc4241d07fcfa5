"""Security table (issue 13): BeDKD and the strongest baselines against attackers who vary the poison.

    python benchmarks/security.py run --workdir ~/.cache/bedkd/robust5 --datasets sst2 olid
    python benchmarks/security.py report

One backdoor throughout, a BadNets trigger that nothing was tuned on (``qv xk wz``, target 1, seed
2: the seed-2 BadNets cell of the robustness table, whose cached victim and cells the 10 % run
reuses when it shares that ``--workdir``), varied one way at a time:

* the poison rate, 0.5 % to 20 % of the training rows;
* clean-label poisoning: the trigger goes into rows of the target class, labels unchanged;
* two backdoors in one model: this one and an AddSent sentence with target 0 on other rows
  (the table gives both ASRs, this trigger's first; a defense meets the bar only when both go);
* the adaptive attack on DMM (``decoy``): 3 % poison plus 10 % decoy rows made to fill DMM's budget
  (3 %, not 1 %: at 3000 training rows a 1 % decoy run left the SST-2 victim's ASR far below 90, see the
  1 % row of the table);
* every other target label (``target-K``, 10 % poison): 0 on every dataset, 2 and 3 on AG News
  (four classes), beside the other rows' target 1.

``run`` calls ``bedkd bench`` once per variation (resumable: rerun the same command);
``report`` writes ``docs/results/security/`` (``results.json`` with each run's command, date,
machine and code version, ``results.md`` generated from it), marking every defended cell that
misses the bar.
"""
from __future__ import annotations

import sys
from pathlib import Path

from bedkd.bench.report import bar_over_floors, meets_bar
from bedkd.bench.runner import FLOOR_RANGE
from bedkd.datasets import dataset_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_runs  # noqa: E402
from bench_runs import (bar_mark, floor_range, fmt, keep_earlier, pair, read_runs, report_meta, run_plan,  # noqa: E402
                        shared_floor_ranges, victim_digits, write_table)

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "work" / "security"
OUT = ROOT / "docs" / "results" / "security"

SEED, TARGET, TRIGGER = 2, 1, ["qv", "xk", "wz"]
SECOND = ["--multi-second", "addsent", "--multi-second-target", "0", "--multi-second-trigger",
          "my uncle likes green apples"]
# name -> (what the attacker does, bench arguments on top of the backdoor above)
VARIATIONS = {
    "rate-0.5": ("0.5 % of the rows poisoned", ["--attacks", "badnets", "--attack-rate", "0.005"]),
    "rate-1": ("1 %", ["--attacks", "badnets", "--attack-rate", "0.01"]),
    "rate-3": ("3 %", ["--attacks", "badnets", "--attack-rate", "0.03"]),
    "rate-5": ("5 %", ["--attacks", "badnets", "--attack-rate", "0.05"]),
    "rate-10": ("10 % (the robustness table's cell)", ["--attacks", "badnets"]),
    "rate-20": ("20 %", ["--attacks", "badnets", "--attack-rate", "0.2"]),
    "clean-label": ("clean-label, 10 %: trigger in target-class rows, labels kept",
                    ["--attacks", "badnets", "--attack-label-mode", "clean"]),
    "two-backdoors": ("two backdoors, 10 % each: + AddSent 'my uncle likes green apples' -> 0",
                      ["--attacks", "multi", "--multi-first", "badnets", *SECOND]),
    "decoy": ("adaptive: 3 % poison + 10 % decoy rows that fill DMM's budget",
              ["--attacks", "decoy", "--attack-rate", "0.03", "--decoy-rate", "0.1"]),
}
TARGETS = {f"target-{k}": k for k in (0, 2, 3)}   # variation -> its target label (the others: TARGET)
for _name, _k in TARGETS.items():
    VARIATIONS[_name] = (f"10 %, target {_k}", ["--attacks", "badnets"])
WEAK_ASR = 90.0     # below this victim ASR the attack did not fully take; its cells are still judged by the bar
DEFENSES = ["bedkd-reference", "bedkd-guarded", "bki", "cube"]
DEFAULT_DEFENSES = ["bedkd-guarded", "bki", "cube"]


def plan(args) -> list[tuple[str, list[str]]]:
    """(run name, bench arguments) for every variation asked for, in the order asked."""
    binary = [d for d in args.datasets if dataset_info(d).num_labels == 2]
    names = args.variations or [v for v in VARIATIONS if not (binary and TARGETS.get(v, TARGET) > 1)]
    for name in names:
        if TARGETS.get(name, TARGET) > 1 and binary:
            raise SystemExit(f"security.py: {name} needs a dataset of more than two classes; "
                             f"{', '.join(binary)} has two (run it with --datasets agnews)")
    return [(name, ["--datasets", *args.datasets, *VARIATIONS[name][1], "--attack-trigger", *TRIGGER,
                    "--attack-target", str(TARGETS.get(name, TARGET)), "--seed", str(SEED), "--no-clean-row"])
            for name in names]


def run(args) -> int:
    return run_plan(plan(args), args)


def report(args) -> int:
    runs, found = read_runs(args.runs)
    rows = [{"variation": run, **{k: r.get(k) for k in (
        "run_date", "status", "dataset", "attack", "defense", "poisoned_rows", "victim_cacc", "victim_asr", "floor_asr", "cacc", "asr",
        "second_victim_asr", "second_floor_asr", "second_asr", "untriggered_asr", "second_untriggered_asr",
        "floor_untriggered_asr", "second_floor_untriggered_asr", *FLOOR_RANGE, "cacc_change", "backdoor_found", "target_found", "trigger_found", "flagged_precision", "flagged_recall", "kept_precision",
        "defense_seconds")}} for run, _, r in found if run in VARIATIONS]
    for path in args.keep:
        runs, rows = keep_earlier(path, runs, rows, lambda r: (r["variation"], r["dataset"]), lambda r: r["variation"])
    rows = shared_floor_ranges(rows, lambda r: (r["dataset"], r["variation"], *victim_digits(r)))
    meta = report_meta("security.py", runs, title=getattr(args, "title", None),
                       backdoor={"attack": "badnets", "trigger": TRIGGER, "target": TARGET, "seed": SEED})
    return write_table(args.out, meta, rows, markdown(rows, meta))


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    return f"{pair(r['asr'], r.get('second_asr'))} ({r['cacc_change']:+.1f}){bar_mark(r)}"


def _detection(r: dict) -> str:
    """A BeDKD cell's DMM flags, precision / recall, and the precision of its punished rows."""
    if r.get("flagged_precision") is None:
        return "-"
    kept = "-" if r.get("kept_precision") is None else f"{r['kept_precision']:.0f}"
    return f"{r['flagged_precision']:.0f} / {r.get('flagged_recall') or 0:.0f}, {kept}"


def _untriggered(r: dict) -> str:
    """Where measured, the defended model's untriggered ASR: the same rows without the trigger that
    it sends to the target anyway (an ASR above the floor with this one as high is a lean, not a
    backdoor), and the clean model's own (a model that ignores the trigger scores about that)."""
    if r.get("untriggered_asr") is None:
        return ""
    own = f"untriggered ASR {pair(r['untriggered_asr'], r.get('second_untriggered_asr'))}"
    if r.get("floor_untriggered_asr") is not None:
        own += f"; the clean model's {pair(r['floor_untriggered_asr'], r.get('second_floor_untriggered_asr'))}"
    return f" ({own})"


def _floor(r: dict) -> str:
    """The floor; with the floors of several clean models, their range after it; in brackets the clean
    model's untriggered ASR where the run measured it."""
    out = pair(r["floor_asr"], r.get("second_floor_asr")) + floor_range(r)
    if r.get("floor_untriggered_asr") is not None:
        out += f" [{pair(r['floor_untriggered_asr'], r.get('second_floor_untriggered_asr'))}]"
    return out


def markdown(rows: list[dict], meta: dict) -> str:
    b = meta["backdoor"]
    lines = [f"# {meta.get('title') or 'Security: attackers who vary the poison or know the defense'}", "",
             f"Generated by `{meta['command']}` on {meta['date']} from {len(meta['runs'])} `bedkd bench` runs "
             "(each run's command, date, machine and code version are in `results.json`).", "",
             f"The backdoor: {b['attack']} trigger `{' '.join(b['trigger'])}`, target {b['target']} (a `target-K` "
             f"row: K), seed {b['seed']}. "
             "Each cell is ASR (CACC change) in %; ✗ marks a defended cell that misses the bar "
             "(ASR <= max(5, floor + 2) and CACC change >= -1). *poisoned* counts the training rows that "
             "carry a trigger; *found* is `guarded`'s verdict (its target and trigger), *P/R* the "
             "precision / recall of the rows a preset's DMM flagged (each preset flips its own clean rows) "
             "and the precision of the rows it punished. With two backdoors, ASRs and floors read "
             "first / second. In brackets after the floor, where measured, the clean model's *untriggered ASR*: "
             "the same test rows without the trigger that it sends to the target; above the floor, inserting "
             "the trigger moves even the clean model away from the target, and a model that ignores the "
             "trigger scores about this. Where the run measured the clean models of further seeds (`bedkd bench "
             "--floor-seeds`), the lowest-highest floor over them follows the floor in parentheses, and * marks a "
             "cell whose verdict turns on which of them gives the floor. `bedkd-reference` is the default preset (the authors' released code); "
             "`bedkd-guarded` is this project's opt-in preset.", ""]
    defenses = [d for d in DEFENSES if any(r["defense"] == d for r in rows)]
    presets = [d for d in defenses if d.startswith("bedkd-")]
    keyed: dict[tuple, dict] = {}
    for r in rows:
        keyed.setdefault((r["dataset"], r["variation"]), {})[r["defense"]] = r
    order = list(VARIATIONS)
    for dataset in sorted({k[0] for k in keyed}):
        lines += [f"## {dataset}", "", "| variation | poisoned | victim CACC | victim ASR | floor | " +
                  " | ".join(defenses) + " | guarded found | " + " | ".join(f"{d.split('-')[1]} P/R, punished"
                                                                         for d in presets) + " |",
                  "|---|---|---|---|---|" + "---|" * (len(defenses) + 1 + len(presets))]
        for variation in sorted((k[1] for k in keyed if k[0] == dataset), key=order.index):
            cell = keyed[(dataset, variation)]
            base = next(iter(cell.values()))
            for fields in (("floor_untriggered_asr", "second_floor_untriggered_asr"), FLOOR_RANGE):
                measured = [r for r in cell.values() if r.get(fields[0]) is not None]
                base = {**base, **{k: measured[0].get(k) for k in fields}} if measured else base
            g = cell.get("bedkd-guarded") or {}
            found = "-" if not g else (f"→ {g.get('target_found')}" + (f" ('{g['trigger_found']}')"
                                       if g.get("trigger_found") else "") if g.get("backdoor_found") else "no evidence")
            weak = " (weak backdoor: victim ASR < 90)" if (base.get("victim_asr") or 0.0) < WEAK_ASR else ""
            lines.append(f"| {VARIATIONS[variation][0]}{weak} | {base.get('poisoned_rows')} | {fmt(base['victim_cacc'])} | "
                         f"{pair(base['victim_asr'], base.get('second_victim_asr'))} | "
                         f"{_floor(base)} | "
                         + " | ".join(_cell(cell.get(d)) for d in defenses) + f" | {found} | "
                         + " | ".join(_detection(cell.get(d) or {}) for d in presets) + " |")
        lines.append("")
    lines += ["## Where each defense breaks", "",
              "In brackets, where the run measured it, the defended model's *untriggered ASR*: the same test rows "
              "without the trigger that it sends to the target anyway, and the clean model's.", ""]
    for d in defenses:
        broke = [f"{r['dataset']} {r['variation']}{_untriggered(r)}" for r in rows
                 if r["defense"] == d and meets_bar(r) is False]
        done = sum(1 for r in rows if r["defense"] == d)
        turns = [f"{r['dataset']} {r['variation']} ({'misses' if meets_bar(r) is False else 'meets'} with its own)"
                 for r in rows if r["defense"] == d and bar_over_floors(r) == "depends"]
        lines.append(f"- **{d}**: misses the bar on {len(broke)} of {done} cells" + (f": {', '.join(broke)}" if broke
                                                                                      else "") +
                     (f"; the verdict turns on the clean model's seed on {len(turns)}: {', '.join(turns)}"
                      if turns else ""))
    return "\n".join(lines) + "\n"


def _plan_arguments(r) -> None:
    r.add_argument("--variations", nargs="+", choices=list(VARIATIONS),
                   help="default: every variation the datasets allow (target-2 and target-3 need four classes)")


if __name__ == "__main__":
    sys.exit(bench_runs.main(__doc__, run, report, str(RUNS), str(OUT), DEFENSES, DEFAULT_DEFENSES, _plan_arguments))
