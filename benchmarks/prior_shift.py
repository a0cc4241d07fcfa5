"""What `--akd-clean-prior-shift` alone does to a model: CACC, ASR and the untriggered ASR before
and after the bias shift, applied to the cached victims and clean models of recorded bench runs.

    python benchmarks/prior_shift.py --runs RUN [RUN ...] --workdir WORKDIR --data-dir DATA \\
        --out docs/results/ablation_clean_prior/models.md

Each run's recorded `bedkd bench` command is parsed again to rebuild its data; each victim (and the
clean model) is loaded from the workdir's cache. The shift is fitted on the held-out clean rows of
`guarded`'s split of the clean pool (the rows the option reads in a purify), exactly as
:func:`bedkd.defenses.purifiers.akd.shift_to_clean_prior` does after the cycles. On a clean model
the CACC change is what the shift costs a model without a lean; on a victim, how much of its
untriggered ASR is a lean that the shift takes out.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

import numpy as np

from bedkd.bench.config import CLEAN
from bedkd.bench.runner import DatasetPlan, second_backdoor_rows
from bedkd.bench.victims import VictimCache
from bedkd.cli.bench_cmd import bench_inputs, defense_configs
from bedkd.cli.main import build_parser
from bedkd.datasets import load_dataset
from bedkd.defenses.purifiers.akd import Validator, shift_to_clean_prior
from bedkd.defenses.purifiers.bedkd import _class_shares
from bedkd.defenses.registry import METHODS
from bedkd.evaluation import evaluate
from bedkd.modeling.batching import encode
from bedkd.outputs import atomic_write_text
from bedkd.provenance import code_version, code_version_id

def models_of(run: Path, workdir: Path, data_dir: str | None):
    """(dataset, attack, model, key, classifier, plan, attack plan, guarded purifier) for each attack
    of the run's recorded bench command: its clean model (on the attack's triggered rows: the
    floors), then its victim; models missing from the cache are skipped."""
    command = json.loads((run / "results.json").read_text())["meta"]["command"]
    argv = shlex.split(command)[1:]
    args = build_parser().parse_args(argv + (["--data-dir", data_dir] if data_dir else []))
    cfg, setup, _ = bench_inputs(args)
    guarded = METHODS["bedkd-guarded"].cls(*defense_configs(args, cfg)["bedkd-guarded"])
    cache = VictimCache(workdir / "victims")
    for name in cfg.datasets:
        plan = DatasetPlan.make(load_dataset(name, setup.data_dir), cfg, setup)
        for attack in [a for a in cfg.attacks if a != CLEAN]:
            ap = plan.attack(attack, setup)
            for model, key in (("clean model", plan.clean.key), (attack, ap.key)):
                loaded = cache.load(key)
                if loaded is None:
                    print(f"{run.name}: {name}/{model}: {key} not cached, skipped", file=sys.stderr)
                    continue
                yield name, attack, model, key, loaded[0], plan, ap, guarded


def measure(clf, plan: DatasetPlan, ap, guarded) -> dict:
    split = guarded.split(plan.pool)
    tok = clf.tokenizer
    validator = Validator(tok.pad_token_id, encode(tok, [plan.pool.texts[i] for i in split.val],
                                                   guarded.akd.max_length),
                          np.asarray([plan.pool.labels[i] for i in split.val], dtype=int),
                          _class_shares(plan.pool, clf.num_labels))
    args = (plan.test, ap.poisoned.test_poison)
    second = second_backdoor_rows(ap)
    before = evaluate(clf, *args, second_poison=second)
    shift = shift_to_clean_prior(clf.model, validator)
    after = evaluate(clf, *args, second_poison=second) if shift["applied"] else before
    return {"before": before, "after": after, "shift": shift, "val_rows": len(split.val)}


def _num(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(rows: list[dict]) -> list[str]:
    out = ["| run | dataset | attack | model | offsets | applied | held-out weighted acc. | CACC | ASR | untriggered ASR |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, a, s = r["before"], r["after"], r["shift"]

        def pair(key):
            first = f"{_num(b.get(key))} → {_num(a.get(key))}"
            if b.get(f"second_{key}") is not None:
                first += f" / {_num(b.get(f'second_{key}'))} → {_num(a.get(f'second_{key}'))}"
            return first
        out.append(f"| {r['run']} | {r['dataset']} | {r['attack']} | {r['model']} | {' '.join(f'{x:+.2f}' for x in s['offsets'])} | "
                   f"{'yes' if s['applied'] else 'no'} | {100 * s['val_acc_weighted_before']:.1f} → "
                   f"{100 * s['val_acc_weighted_after']:.1f} | {_num(b['cacc'])} → {_num(a['cacc'])} "
                   f"({a['cacc'] - b['cacc']:+.1f}) | {pair('asr') if 'asr' in b else '-'} | "
                   f"{pair('untriggered_asr') if 'untriggered_asr' in b else '-'} |")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="bench output folders (their results.json)")
    p.add_argument("--workdir", required=True, help="the victims' cache those runs used")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True, help="markdown table; the numbers go to the same name with .json")
    args = p.parse_args()
    rows, seen = [], set()
    for run in map(Path, args.runs):
        for dataset, attack, model, key, clf, plan, ap, guarded in models_of(run, Path(args.workdir), args.data_dir):
            if (key, ap.key) in seen:
                continue
            seen.add((key, ap.key))
            print(f"{run.name}: {dataset}/{attack}: {model} ({key})", file=sys.stderr)
            rows.append({"run": run.name, "dataset": dataset, "attack": attack, "model": model,
                         "victim_key": key, **measure(clf, plan, ap, guarded)})
    version = code_version_id(code_version())
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [f"Generated by `python benchmarks/prior_shift.py {shlex.join(sys.argv[1:])}` on {date}, code {version}.",
             "", "Each model as cached, then with `shift_to_clean_prior` applied (fitted on `guarded`'s held-out "
             "clean rows of the clean pool; not applied where it would lower their class-weighted accuracy). "
             "CACC, ASR and untriggered ASR on the bench's full test rows, in %; with two backdoors: first / "
             "second.", "", *table(rows)]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    atomic_write_text(Path(args.out).with_suffix(".json"),
                      json.dumps({"command": f"python benchmarks/prior_shift.py {shlex.join(sys.argv[1:])}",
                                  "date": date, "code_version": version, "rows": rows}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
