"""BeDKD on full SST-2 with the MiniLM backbone: BadNets and AddSent victims, fast vs reference preset.

    python benchmarks/sst2_core.py --data-dir ../shared/data

Writes docs/results/sst2_core.json (every number, the command, date and machine) and
docs/results/sst2_core.md (tables generated from the JSON). Victims and defense results are cached
in --workdir under a key of everything that determines them, so an interrupted run resumes where it
stopped and a changed preset reruns only that defense (the cached entries keep their own timings).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

from bedkd.attacks import AttackConfig
from bedkd.data import random_limit, read_labeled
from bedkd.evaluation import evaluate
from bedkd.defenses import PRESETS
from bedkd.modeling import TrainConfig, default_backbone, finetune, load_classifier
from bedkd.seeding import seed_everything
from bedkd.pipeline import Experiment, cache_key, machine, run_experiment

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("BEDKD_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--attacks", nargs="+", default=["badnets", "addsent"])
    p.add_argument("--presets", nargs="+", default=["fast", "reference"], choices=sorted(PRESETS))
    p.add_argument("--train-limit", type=int, default=None, help="victim training rows (default: all)")
    p.add_argument("--epochs", type=int, default=3, help="victim training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=str(ROOT / "benchmarks" / "work" / "sst2_core"))
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "sst2_core"))
    args = p.parse_args()

    sst2 = Path(args.data_dir) / "sst2" / "clean"
    train, test, dev = (read_labeled(sst2 / f"{s}.tsv") for s in ("train", "test", "dev"))
    work = Path(args.workdir)
    results = []
    for attack in args.attacks:
        exp = Experiment(train=train, test=test, clean_pool=dev, attack=attack,
                         attack_cfg=AttackConfig(rate=0.1, target=1, seed=args.seed),
                         train_cfg=TrainConfig(epochs=args.epochs, seed=args.seed),
                         defenses={name: tuple(c.replace(seed=args.seed) for c in PRESETS[name])
                                   for name in args.presets},
                         train_limit=args.train_limit)
        results.append(run_experiment(exp, work / attack, progress=sys.stderr.isatty()))
    floor = clean_floor(train, test, work, args)

    script = os.path.relpath(Path(sys.argv[0]).resolve(), ROOT)
    meta = {"command": " ".join(["python", script] + sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "cpu_count": os.cpu_count(),
            "setup": {"dataset": "SST-2 (clean train/dev/test from the data pack)", "backbone": "all-MiniLM-L6-v2",
                      "clean_pool": "SST-2 dev (872 rows)", "poison_rate": 0.1, "target": 1,
                      "victim_epochs": args.epochs, "train_limit": args.train_limit}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "clean_floor": floor, "results": results}, indent=2))
    out.with_suffix(".md").write_text(markdown(meta, floor, results))
    print(out.with_suffix(".md").read_text())
    return 0


def clean_floor(train, test, work: Path, args) -> dict:
    """A model trained without poison, evaluated on each attack's triggered test set: the ASR floor."""
    cache = work / "clean" / "result.json"
    key = cache_key(train.source, len(train), args.train_limit, args.epochs, args.seed, args.attacks)
    if cache.is_file() and json.loads(cache.read_text()).get("key") == key:
        return json.loads(cache.read_text())["result"]
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed)
    seed_everything(cfg.seed)   # the new classification head is drawn at load time
    clf = load_classifier(default_backbone(), num_labels=2)
    start = time.perf_counter()
    finetune(clf, train.subset(random_limit(train, args.train_limit, cfg.seed)), cfg, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    result = {"train_seconds": seconds, "cacc": evaluate(clf, test)["cacc"],
              "asr": {a: evaluate(clf, test, read_labeled(work / a / "test_poison.tsv"))["asr"] for a in args.attacks}}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "result": result}, indent=2))
    return result


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}"


def markdown(meta: dict, floor: dict, results: list[dict]) -> str:
    lines = ["# BeDKD on SST-2 (MiniLM backbone)", "",
             f"Generated by `{meta['command']}` on {meta['date']}.",
             f"Machine: {meta['machine']['platform']}, {meta['cpu_count']} CPU cores, "
             f"torch {meta['machine']['torch']} ({meta['machine']['torch_threads']} threads).",
             f"Setup: {json.dumps(meta['setup'])}.", "",
             "## CACC / ASR (%)", "",
             "The clean-model row is a model trained on the same data without poison, evaluated on the same "
             "triggered test set: the ASR a perfect defense can reach (its errors on non-target rows).", "",
             "| attack | model | CACC | ASR | ΔCACC vs victim | selected epoch / run |",
             "|---|---|---|---|---|---|"]
    for r in results:
        v = r["victim"]
        lines.append(f"| {r['attack']} | clean model (floor) | {floor['cacc']:.2f} | {floor['asr'][r['attack']]:.2f} | | |")
        lines.append(f"| {r['attack']} | victim (no defense) | {v['cacc']:.2f} | {v['asr']:.2f} | | |")
        for name, d in r["defenses"].items():
            lines.append(f"| {r['attack']} | BeDKD {name} | {d['cacc']:.2f} | {d['asr']:.2f} | "
                         f"{d['cacc'] - v['cacc']:+.2f} | {d['selected_epoch']} / {d['epochs_run']} |")
    lines += ["", "## Detection (DMM) — precision / recall (%)", "",
              "Recall is over the poisoned rows among the scanned rows (the scan stops at 128 flagged); "
              "'all' is over every poisoned row.", "",
              "| attack | defense | scanned | flagged | flagged precision | flagged recall (scanned / all) | "
              "kept | kept precision | kept recall (scanned / all) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name, d in r["defenses"].items():
            m = d["detection"]
            lines.append(f"| {r['attack']} | {name} | {m['scanned']} | {m['flagged']} | {_pct(m['flagged_precision'])} | "
                         f"{_pct(m['flagged_recall_scanned'])} / {_pct(m['flagged_recall_all'])} | {m['kept']} | "
                         f"{_pct(m['kept_precision'])} | {_pct(m['kept_recall_scanned'])} / {_pct(m['kept_recall_all'])} |")
    lines += ["", "## Seconds", "",
              "| attack | victim training | defense | DMM | scan | AKD | defense total |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for name, d in r["defenses"].items():
            s = d["seconds"]
            lines.append(f"| {r['attack']} | {r['victim']['train_seconds']:.0f} | {name} | {s['dmm']:.0f} | "
                         f"{s['scan']:.0f} | {s['akd']:.0f} | {s['total']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
