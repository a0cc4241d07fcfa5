"""Why DMM has no evidence on a victim: its per-row scores, poisoned rows against clean ones.

    python benchmarks/dmm_scores.py --dataset sst2 --attack synbkd --workdir ~/.cache/bedkd/work3k \\
        --data-dir ../shared/data --out docs/results/dmm_scores/sst2_synbkd.md

Rebuilds the bench's training rows for ``--seed`` / ``--train-limit`` (default attack options),
loads that victim from the bench cache, distils `guarded`'s DMM student (the bench's seed and clean
split) and scores every training row and the clean rows the scan compares them with (the budget's
rows DMM did not train on). The table gives, per label, the score quantiles of the poisoned, the
clean training and the held-out clean rows, and the scan's test (the one-sided Fisher test of
:mod:`bedkd.defenses.scanning.dmm_evidence`) at several flag thresholds besides DMM's own, with a
rank test over all scores. ``--save-scores`` keeps the scores (``.npz``); ``--from-scores``
writes the table from such a file without a model.
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys

import numpy as np
from scipy.stats import mannwhitneyu

from bedkd.defenses.scanning.dmm_evidence import label_evidence
from bedkd.outputs import atomic_write_text
from bedkd.provenance import code_version, code_version_id

THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
ARRAYS = ("s_scores", "s_pred", "s_labels", "poisoned", "r_scores", "r_pred", "r_labels")


def compute(args) -> dict[str, np.ndarray]:
    """Per-row scores of the cached victim's training rows (``s_*``) and of the held-out clean rows (``r_*``)."""
    from pathlib import Path

    from bedkd.bench.config import BenchConfig
    from bedkd.bench.runner import BenchSetup, DatasetPlan
    from bedkd.datasets import load_dataset, resolve_data_dir
    from bedkd.defenses.data_filters.dmm import DMMDetector
    from bedkd.defenses.purifiers.bedkd import PRESETS, BeDKD
    from bedkd.defenses.scanning.dmm_evidence import held_out_rows
    from bedkd.errors import ConfigError
    from bedkd.modeling import load_classifier

    data_dir = resolve_data_dir(args.data_dir)
    ds = load_dataset(args.dataset, data_dir)
    plan = DatasetPlan.make(ds, BenchConfig(datasets=[args.dataset], attacks=[args.attack],
                                            train_limit=args.train_limit, seed=args.seed),
                            BenchSetup(data_dir=data_dir))
    attack = plan.clean if args.attack == "clean" else plan.attack(args.attack, BenchSetup(data_dir=data_dir))
    victim = Path(args.workdir) / "victims" / attack.key
    if not (victim / "victim.json").is_file():
        raise ConfigError(f"{victim}: no cached victim for {args.dataset}/{args.attack} seed {args.seed} "
                          f"(run the bench with this --workdir first)")
    teacher = load_classifier(str(victim))
    dmm, akd, scan = PRESETS["guarded"]
    dmm, akd = dmm.replace(seed=args.seed), akd.replace(seed=args.seed)
    split = BeDKD(dmm, akd, scan).split(plan.pool)
    detector = DMMDetector(dmm.replace(max_flagged=None))
    student = detector.fit_student(teacher, plan.pool, split.flip, progress=sys.stderr.isatty())
    suspect = attack.poisoned.train
    s_scores, s_pred = detector.score(teacher, student, suspect.texts)
    reference = held_out_rows(split)
    r_scores, r_pred = detector.score(teacher, student, [plan.pool.texts[i] for i in reference])
    poisoned = np.zeros(len(suspect), dtype=bool)
    poisoned[list(attack.poisoned.poisoned_rows)] = True
    return {"s_scores": s_scores, "s_pred": s_pred, "s_labels": np.asarray(suspect.labels), "poisoned": poisoned,
            "r_scores": r_scores, "r_pred": r_pred, "r_labels": np.asarray([plan.pool.labels[i] for i in reference])}


def _q(x: np.ndarray) -> str:
    return " / ".join(f"{v:.3f}" for v in np.quantile(x, QUANTILES)) if len(x) else "-"


def _log10p(p: float) -> float:
    return float(-np.log10(max(p, 1e-300)))


def table(d: dict[str, np.ndarray], own_threshold: float) -> list[str]:
    """Per label (rows labelled and predicted as it, as the scan counts them): quantiles, then the
    scan's Fisher test and excess at each threshold, then a one-sided rank test."""
    s, sl, sp, po = d["s_scores"], d["s_labels"], d["s_pred"], d["poisoned"].astype(bool)
    r, rl, rp = d["r_scores"], d["r_labels"], d["r_pred"]
    lines = [f"Score quantiles ({', '.join(f'{q:g}' for q in QUANTILES)}); a row survives the flip when its "
             f"score is below the threshold (DMM's own: {own_threshold:g}).", ""]
    labels = sorted(set(sl.tolist()) | set(rl.tolist()))
    evidence = {t: label_evidence(s, sl, sp, r, rl, rp, t, max(labels) + 1) for t in THRESHOLDS}
    for c in labels:
        S, R = (sl == c) & (sp == c), (rl == c) & (rp == c)
        lines += [f"### label {c}", "",
                  f"{int(S.sum())} training rows labelled and predicted {c} ({int((S & po).sum())} poisoned), "
                  f"{int(R.sum())} held-out clean rows.", "",
                  "| rows | score quantiles |", "|---|---|",
                  f"| poisoned training rows | {_q(s[S & po])} |",
                  f"| clean training rows | {_q(s[S & ~po])} |",
                  f"| held-out clean rows | {_q(r[R])} |", "",
                  "| threshold | training rows surviving | held-out surviving | -log10 p | excess |",
                  "|---|---|---|---|---|"]
        n, m = int(S.sum()), int(R.sum())
        for t in THRESHOLDS:      # the scan's own test (dmm_evidence), at each threshold
            e = evidence[t][c]
            mark = " (DMM's)" if t == own_threshold else ""
            lines.append(f"| {t:g}{mark} | {e.suspect_flagged} of {n} | {e.clean_flagged} of {m} | {e.log10_p:.1f} | "
                         f"{e.excess:.0f} |")
        if n and m:
            u = mannwhitneyu(s[S], r[R], alternative="less").pvalue
            lines += ["", f"Rank test (training rows score lower than held-out ones): -log10 p = {_log10p(u):.1f}."]
        lines.append("")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--attack", required=True, help="a bench attack with its default options, or 'clean'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=3000)
    p.add_argument("--workdir", help="the bench workdir holding the victim")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--save-scores", default=None, help="also write the per-row scores here (.npz)")
    p.add_argument("--from-scores", default=None, help="a .npz written by --save-scores: no model is run")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from bedkd.defenses.purifiers.bedkd import PRESETS
    from bedkd.errors import BedkdError

    try:
        if args.from_scores:
            with np.load(args.from_scores) as f:
                d = {k: f[k] for k in ARRAYS}
        elif not args.workdir:
            raise BedkdError("--workdir is required unless --from-scores is given")
        else:
            d = compute(args)
    except BedkdError as exc:
        print(f"dmm_scores: {exc}", file=sys.stderr)
        return 2
    if args.save_scores:
        np.savez(args.save_scores, **d)
    lines = [f"# DMM scores: {args.dataset} {args.attack}, seed {args.seed}, {args.train_limit} training rows", "",
             f"Generated by `python benchmarks/dmm_scores.py {shlex.join(sys.argv[1:])}` on "
             f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, code "
             f"{code_version_id(code_version())}.", ""]
    lines += table(d, PRESETS["guarded"][0].threshold)
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
