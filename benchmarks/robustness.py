"""Robustness table: BeDKD on triggers, target labels and seeds that nothing was tuned on.

    python benchmarks/robustness.py run --workdir ~/.cache/bedkd/robust --seeds 0 --datasets sst2 olid
    python benchmarks/robustness.py report

``run`` calls ``bedkd bench`` once per (seed, target, attack, trigger) with a shared victim cache
(resumable: rerun the same command after an interruption) and its own output folder under
``--runs``; ``report`` reads every ``results.json`` there and writes ``docs/results/robustness/``
(``results.json`` with each run's command, date, machine and code version, and ``results.md``
generated from it). Every trigger below is new: none is a default of an attack or was used while
the defaults of BeDKD were chosen.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
from pathlib import Path

from bedkd.bench.report import meets_bar
from bedkd.outputs import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "work" / "robustness"
OUT = ROOT / "docs" / "results" / "robustness"

# Three new triggers per family; StyleBkd's are other styles of the data pack. SynBkd has one
# template in the pack, so it has no new trigger (its default is run with each target and seed).
TRIGGERS = {
    "badnets": [["zx", "vq", "jw"], ["qv", "xk", "wz"], ["kq", "zj", "vx"]],
    "addsent": [["I read this book twice"], ["the weather was cold today"], ["my uncle likes green apples"]],
    "ep": [["jt"], ["vk"], ["qz"]],
    "sos": [["garden", "yellow", "music"], ["window", "river", "coffee"], ["pencil", "summer", "orange"]],
    "stylebkd": ["lyrics", "poetry", "shakespeare"],
    "synbkd": [None],
}
DEFENSES = ["bedkd-reference", "bedkd-guarded"]


def plan(args) -> list[tuple[str, list[str]]]:
    """(run name, bench arguments) for every run."""
    runs = []
    for seed in args.seeds:
        for target in args.targets:
            for attack in args.attacks:
                first = args.first_trigger
                for i, trigger in enumerate(TRIGGERS[attack][first:first + args.triggers], start=first):
                    name = f"s{seed}-t{target}-{attack}-{i}"
                    extra = []
                    if attack == "stylebkd":
                        extra = ["--attack-style", trigger]
                    elif trigger is not None:
                        extra = ["--attack-trigger", *trigger]
                    runs.append((name, ["--datasets", *args.datasets, "--attacks", attack, "--no-clean-row",
                                        "--attack-target", str(target), "--seed", str(seed), *extra]))
            runs.append((f"s{seed}-clean", ["--datasets", *args.datasets, "--attacks", "clean", "--seed", str(seed)]))
    return runs


def run(args) -> int:
    failed = []
    for name, bench_args in plan(args):
        cmd = [sys.executable, "-m", "bedkd", "bench", "--out", str(Path(args.runs) / name), "--workdir", args.workdir,
               "--defenses", "none", *args.defenses, "--train-limit", str(args.train_limit), "--allow-skipped", "--quiet",
               *(["--reuse-any-version"] if args.reuse_any_version else []),
               *(["--data-dir", args.data_dir] if args.data_dir else []), *bench_args]
        print("+", shlex.join(cmd), flush=True)
        if subprocess.call(cmd) != 0:
            failed.append(name)
    if failed:
        print(f"{len(failed)} runs failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def report(args) -> int:
    rows, runs = [], []
    for path in sorted(Path(args.runs).glob("*/results.json")):
        saved = json.loads(path.read_text())
        meta = saved["meta"]
        runs.append({"run": path.parent.name, **{k: meta.get(k) for k in ("command", "date", "machine", "code_version")}})
        setup = meta["setup"]
        for r in saved["rows"]:
            if r.get("status") != "ok":
                continue
            rows.append({"run": path.parent.name, "seed": setup["seed"], "target": setup["attack"]["target"],
                         "trigger": " ".join(setup["attack"].get("triggers") or []) or setup["attack"].get("style")
                         or "default", **{k: r.get(k) for k in (
                             "status", "dataset", "attack", "defense", "victim_cacc", "victim_asr", "floor_asr", "cacc", "asr",
                             "cacc_change", "backdoor_found", "target_found", "trigger_found", "defense_seconds",
                             "victim_train_seconds", "selected_epoch", "kept_precision")}})
    meta = {"command": "python benchmarks/robustness.py " + shlex.join(sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "runs": runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=2))
    atomic_write_text(out / "results.md", markdown(rows, meta))
    print(f"wrote {out / 'results.md'} ({len(rows)} rows from {len(runs)} runs)")
    return 0


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Robustness: new triggers, every target label, several seeds", "",
             f"Generated by `{meta['command']}` on {meta['date']} from {len(meta['runs'])} `bedkd bench` runs "
             "(each run's command, date, machine and code version are in `results.json`).", "",
             "A cell meets the bar when ASR <= max(5, floor + 2) and the CACC change is >= -1 point "
             "(clean models: within +-0.5). CACC is on the dataset's natural test distribution.", ""]
    defenses = [d for d in DEFENSES if any(r["defense"] == d for r in rows)]
    lines += ["## Summary", "", "| defense | cells | meets the bar | mean ASR | mean CACC change |", "|---|---|---|---|---|"]
    for d in defenses:
        cells = [r for r in rows if r["defense"] == d]
        ok = [r for r in cells if meets_bar(r)]
        asr = [r["asr"] for r in cells if r["asr"] is not None]
        lines.append(f"| {d} | {len(cells)} | {len(ok)} | {_fmt(sum(asr) / len(asr) if asr else None)} | "
                     f"{_fmt(sum(r['cacc_change'] for r in cells) / len(cells) if cells else None)} |")
    lines += ["", "## Every cell", "",
              "| dataset | attack | trigger | target | seed | victim ASR | floor | " +
              " | ".join(f"{d} ASR (ΔCACC)" for d in defenses) + " | guarded verdict |",
              "|---|---|---|---|---|---|---|" + "---|" * len(defenses) + "---|"]
    keyed = {}
    for r in rows:
        keyed.setdefault((r["dataset"], r["attack"], r["trigger"], r["target"], r["seed"]), {})[r["defense"]] = r
    for key in sorted(keyed, key=lambda k: tuple(str(x) for x in k)):
        cell = keyed[key]
        any_row = next(iter(cell.values()))
        parts = []
        for d in defenses:
            r = cell.get(d)
            parts.append("-" if r is None else f"{_fmt(r['asr'])} ({r['cacc_change']:+.1f}){'' if meets_bar(r) else ' ✗'}")
        g = cell.get("bedkd-guarded") or {}
        verdict = "-" if not g else ("backdoor → " + str(g.get("target_found")) +
                                    (f" ('{g['trigger_found']}')" if g.get("trigger_found") else "")
                                    if g.get("backdoor_found") else "no evidence")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {_fmt(any_row['victim_asr'])} | "
                     f"{_fmt(any_row['floor_asr'])} | " + " | ".join(parts) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--workdir", required=True, help="victim/cell cache, outside the checkout (e.g. ~/.cache/bedkd/robust)")
    r.add_argument("--runs", default=str(RUNS))
    r.add_argument("--data-dir", default=None)
    r.add_argument("--datasets", nargs="+", default=["sst2", "olid"])
    r.add_argument("--attacks", nargs="+", default=list(TRIGGERS), choices=list(TRIGGERS))
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--targets", nargs="+", type=int, default=[0, 1])
    r.add_argument("--triggers", type=int, default=3, help="how many of each family's new triggers")
    r.add_argument("--first-trigger", type=int, default=0, help="index of the first of them (0, 1 or 2)")
    r.add_argument("--train-limit", type=int, default=3000)
    r.add_argument("--reuse-any-version", action="store_true",
                   help="keep finished cells of an earlier code version (each run's results record the versions)")
    r.add_argument("--defenses", nargs="+", default=DEFENSES, choices=DEFENSES,
                   help="BeDKD presets to run beside the victim (reference costs the most on a CPU)")
    r.set_defaults(fn=run)
    q = sub.add_parser("report")
    q.add_argument("--runs", default=str(RUNS))
    q.add_argument("--out", default=str(OUT))
    q.set_defaults(fn=report)
    args = p.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
