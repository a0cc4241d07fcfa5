"""How much DMM's evidence depends on which clean rows it flips: one cached victim, several draws.

    python benchmarks/dmm_draws.py --draws 6 --out docs/results/dmm_draws/sst2_rate5.md -- \\
        --workdir ~/.cache/bedkd/sec --datasets sst2 --attacks badnets --attack-rate 0.05 \\
        --attack-trigger qv xk wz --attack-target 1 --seed 2 --train-limit 3000 --data-dir ../shared/data

The arguments after ``--`` are ``bedkd bench`` arguments naming one dataset and one attack (or
``--attacks clean`` for a clean model); the victim must be in the ``--workdir`` cache. For each
draw ``d`` (seed = bench seed + d), `guarded`'s DMM student is distilled on that draw's flipped
clean rows (its shuffled split), then every training row and the draw's held-out clean rows are
scored; one more run uses the authors' rows (file order, ``--akd-clean-layout disjoint
--akd-clean-order file``). Each run gives DMM's flagged rows at its threshold (precision and
recall against the attack's poisoned rows) and the scan's test (:mod:`bedkd.defenses.scanning.
dmm_evidence`) on each label, at DMM's fixed threshold and at a line calibrated on the clean rows
(per label, the 5 % quantile of the held-out clean rows' scores). "Pooled k" averages the scores
of the first ``k`` shuffled draws and tests them against the clean rows none of those ``k``
students trained on: what an ensemble of students on several draws would see. ``--save-scores``
keeps every score (``.npz``); ``--from-scores`` writes the table from it without a model, and

    python benchmarks/dmm_draws.py --summary a.npz b.npz ... --out summary.md

gives one row per victim: the ranges over its runs, with the rank separation (AUC) of its
poisoned from its clean training rows.
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

import numpy as np

from bedkd.outputs import atomic_write_text
from bedkd.provenance import code_version, code_version_id


def _setup(bench_argv: list[str]):
    """(dataset plan, attack plan, victim directory) of the bench arguments."""
    from bedkd.bench.config import BenchConfig
    from bedkd.bench.runner import BenchSetup, DatasetPlan
    from bedkd.cli.common import attack_options_from_args
    from bedkd.cli.main import build_parser
    from bedkd.datasets import load_dataset, resolve_data_dir
    from bedkd.errors import ConfigError
    from bedkd.modeling import TrainConfig
    from bedkd.options import options_from_args

    args = build_parser().parse_args(["bench", "--out", "unused", *bench_argv])
    cfg = options_from_args(BenchConfig, args)
    if len(cfg.datasets) != 1 or len(cfg.attacks) != 1 or not args.workdir:
        raise ConfigError("give exactly one --datasets, one --attacks and the --workdir holding the victim")
    attack, attack_options = attack_options_from_args(args, "attack-")
    setup = BenchSetup(data_dir=resolve_data_dir(args.data_dir), attack=attack, attack_options=attack_options,
                       train=options_from_args(TrainConfig, args, "train-"), backbone=args.backbone)
    ds = load_dataset(cfg.datasets[0], setup.data_dir)
    plan = DatasetPlan.make(ds, cfg, setup)
    attack_plan = plan.clean if cfg.attacks[0] == "clean" else plan.attack(cfg.attacks[0], setup)
    victim = Path(args.workdir) / "victims" / attack_plan.key
    if not (victim / "victim.json").is_file():
        raise ConfigError(f"{victim}: no cached victim for these bench arguments (run the bench first)")
    return plan, attack_plan, victim, cfg.seed


def _evidence(scores, labels, pred, ref_scores, ref_labels, ref_pred, threshold, k) -> list:
    from bedkd.defenses.scanning.dmm_evidence import label_evidence
    return label_evidence(scores, labels, pred, ref_scores, ref_labels, ref_pred, threshold, k)


def compute(bench_argv: list[str], draws: int, progress: bool) -> dict:
    from bedkd.defenses.data_filters.dmm import DMMDetector
    from bedkd.defenses.purifiers.bedkd import PRESETS, BeDKD
    from bedkd.defenses.scanning.dmm_evidence import held_out_rows
    from bedkd.modeling import load_classifier

    plan, attack_plan, victim, seed = _setup(bench_argv)
    teacher = load_classifier(str(victim))
    dmm0, akd0, scan0 = PRESETS["guarded"]
    suspect, pool = attack_plan.poisoned.train, plan.pool
    runs = [(f"draw {d}", seed + d, {}) for d in range(draws)]
    runs.append(("authors' rows (file order)", seed, {"clean_layout": "disjoint", "clean_order": "file"}))
    out = {"labels": np.asarray(suspect.labels), "pool_labels": np.asarray(pool.labels),
           "poisoned": np.isin(np.arange(len(suspect)), list(attack_plan.poisoned.poisoned_rows)),
           "names": [name for name, _, _ in runs], "threshold": dmm0.threshold, "num_labels": teacher.num_labels}
    for i, (name, s, akd_changes) in enumerate(runs):
        dmm, akd = dmm0.replace(seed=s, max_flagged=None), akd0.replace(seed=s, **akd_changes)
        split = BeDKD(dmm, akd, scan0).split(pool)
        detector = DMMDetector(dmm)
        student = detector.fit_student(teacher, pool, split.flip, progress=progress)
        s_scores, s_pred = detector.score(teacher, student, suspect.texts)
        p_scores, p_pred = detector.score(teacher, student, pool.texts)    # every pool row; the test takes its own
        out[f"s_scores_{i}"], out[f"p_scores_{i}"] = s_scores, p_scores
        out["s_pred"], out["p_pred"] = s_pred, p_pred                     # the teacher's: the same every run
        out[f"flip_{i}"], out[f"heldout_{i}"] = np.asarray(split.flip), np.asarray(held_out_rows(split))
        print(f"{name}: done", file=sys.stderr, flush=True)
    return out


QUANTILE = 0.05     # the calibrated line: this quantile of a label's held-out clean scores


def _lines(d: dict, ref_rows: np.ndarray, ref_scores: np.ndarray) -> np.ndarray:
    """Per label, the ``QUANTILE`` of the scores of the held-out clean rows labelled and predicted as it."""
    labels, pred = d["pool_labels"][ref_rows], d["p_pred"][ref_rows]
    return np.asarray([np.quantile(ref_scores[(labels == c) & (pred == c)], QUANTILE)
                       if ((labels == c) & (pred == c)).any() else 0.0 for c in range(int(d["num_labels"]))])


def _cells(d: dict, scores: np.ndarray, ref_rows: np.ndarray, ref_scores: np.ndarray, lines) -> str:
    """flagged | precision | recall | -log10 p per label | strongest label | its excess, for the
    flag line ``lines`` (one value, or one per label): the scan's test with that line."""
    k, poisoned = int(d["num_labels"]), d["poisoned"].astype(bool)
    per_row = np.broadcast_to(np.asarray(lines, dtype=float), (k,))
    flagged = scores < per_row[d["labels"]]
    hits = int((flagged & poisoned).sum())
    prec = f"{100 * hits / flagged.sum():.0f}" if flagged.any() else "-"
    rec = f"{100 * hits / poisoned.sum():.0f}" if poisoned.any() else "-"
    ev = [_evidence(scores, d["labels"], d["s_pred"], ref_scores, d["pool_labels"][ref_rows], d["p_pred"][ref_rows],
                    float(per_row[c]), k)[c] for c in range(k)]
    best = max(ev, key=lambda e: e.log10_p)
    per_label = " / ".join(f"{e.log10_p:.1f}" for e in ev)
    return f"{int(flagged.sum())} | {prec} | {rec} | {per_label} | {best.label} | {best.excess:.0f}"


def _line(name: str, d: dict, scores: np.ndarray, ref_rows: np.ndarray, ref_scores: np.ndarray) -> str:
    return (f"| {name} | {_cells(d, scores, ref_rows, ref_scores, float(d['threshold']))} | "
            f"{_cells(d, scores, ref_rows, ref_scores, _lines(d, ref_rows, ref_scores))} | {len(ref_rows)} |")


def table(d: dict) -> list[str]:
    names = list(d["names"])
    k = int(d["num_labels"])
    head = (f"flagged | precision % | recall % | -log10 p per label ({' / '.join(map(str, range(k)))}) | "
            "strongest label | its excess")
    lines = [f"{int(d['poisoned'].sum())} poisoned of {len(d['labels'])} training rows. Two flag lines: DMM's fixed "
             f"threshold ({float(d['threshold']):g}), then a calibrated one: per label, the {QUANTILE:g} quantile of "
             "the scores of the held-out clean rows labelled and predicted as it. Each with the scan's test "
             "(`dmm_evidence`; evidence at -log10 p >= 8 with excess >= 10).", "",
             f"| run | {head} | {head} | clean rows tested |", "|---|" + "---|" * 13]
    for i, name in enumerate(names):
        lines.append(_line(name, d, d[f"s_scores_{i}"], d[f"heldout_{i}"], d[f"p_scores_{i}"][d[f"heldout_{i}"]]))
    draws = [i for i, n in enumerate(names) if n.startswith("draw")]
    for m in range(2, len(draws) + 1):
        used = set().union(*(set(d[f"flip_{i}"].tolist()) for i in draws[:m]))
        ref = np.asarray(sorted(set(range(len(d["pool_labels"]))) - used))
        mean_s = np.mean([d[f"s_scores_{i}"] for i in draws[:m]], axis=0)
        mean_p = np.mean([d[f"p_scores_{i}"][ref] for i in draws[:m]], axis=0)
        lines.append(_line(f"pooled {m} (mean score)", d, mean_s, ref, mean_p))
    for m in range(2, len(draws) + 1):     # a defender's choice: the student whose scan test is strongest
        best = max(draws[:m], key=lambda i: _strongest(d, i))
        lines.append(_line(f"strongest of {m} ({names[best]})", d, d[f"s_scores_{best}"], d[f"heldout_{best}"],
                           d[f"p_scores_{best}"][d[f"heldout_{best}"]]))
    return lines


def _strongest(d: dict, i: int) -> float:
    """Run ``i``'s scan statistic at DMM's fixed threshold: the largest -log10 p over the labels."""
    ref = d[f"heldout_{i}"]
    ev = _evidence(d[f"s_scores_{i}"], d["labels"], d["s_pred"], d[f"p_scores_{i}"][ref], d["pool_labels"][ref],
                   d["p_pred"][ref], float(d["threshold"]), int(d["num_labels"]))
    return max(e.log10_p for e in ev)


def _auc(scores: np.ndarray, poisoned: np.ndarray) -> float | None:
    """P(a poisoned row scores below a clean one): the rank separation, whatever the flag line."""
    from scipy.stats import mannwhitneyu
    if not poisoned.any() or poisoned.all():
        return None
    return float(mannwhitneyu(-scores[poisoned], -scores[~poisoned]).statistic / (poisoned.sum() * (~poisoned).sum()))


def summary(files: list[str]) -> list[str]:
    """One row per victim: over its runs (draws and the authors' rows), the range of DMM's recall at
    its fixed threshold and at the calibrated line, of the scan's evidence at the fixed threshold on
    the strongest label, and of the rank separation (AUC) of poisoned from clean training rows."""
    lines = ["| victim | runs | poisoned rows | recall %, fixed threshold | recall %, calibrated line | "
             "-log10 p, fixed threshold (strongest label) | runs with evidence (>= 8, excess >= 10) | "
             "AUC poisoned vs clean | recall % of the run with the strongest test |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in files:
        with np.load(path, allow_pickle=False) as f:
            d = {key: f[key] for key in f.files}
        names, poisoned = list(d["names"]), d["poisoned"].astype(bool)
        fixed, calibrated, evidence, aucs = [], [], [], []
        for i, _ in enumerate(names):
            s, ref = d[f"s_scores_{i}"], d[f"heldout_{i}"]
            r = d[f"p_scores_{i}"][ref]
            per_row = _lines(d, ref, r)[d["labels"]]
            if poisoned.any():
                fixed.append(100 * (s[poisoned] < float(d["threshold"])).mean())
                calibrated.append(100 * (s[poisoned] < per_row[poisoned]).mean())
                aucs.append(_auc(s, poisoned))
            ev = _evidence(s, d["labels"], d["s_pred"], r, d["pool_labels"][ref], d["p_pred"][ref],
                           float(d["threshold"]), int(d["num_labels"]))
            evidence.append((max(e.log10_p for e in ev), any(e.log10_p >= 8 and e.excess >= 10 for e in ev)))

        def span(v, digits=0):
            return f"{min(v):.{digits}f}-{max(v):.{digits}f}" if v else "-"
        lines.append(f"| {Path(path).stem} | {len(names)} | {int(poisoned.sum())} | {span(fixed)} | {span(calibrated)} | "
                     f"{span([e for e, _ in evidence], 1)} | {sum(hit for _, hit in evidence)} of {len(names)} | "
                     f"{span(aucs, 3)} | {f'{fixed[int(np.argmax([e for e, _ in evidence]))]:.0f}' if fixed else '-'} |")
    return lines


def main() -> int:
    argv = sys.argv[1:]
    bench_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=6, help="shuffled draws (besides the authors' rows)")
    p.add_argument("--out", required=True)
    p.add_argument("--save-scores", default=None, help="also write every score here (.npz)")
    p.add_argument("--from-scores", default=None, help="a .npz written by --save-scores: no model is run")
    p.add_argument("--summary", nargs="+", default=None, help="several such .npz files: one summary row each")
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    from bedkd.errors import BedkdError

    if args.summary:
        lines = ["# DMM over several draws of flipped clean rows: summary", "",
                 f"Generated by `python benchmarks/dmm_draws.py {shlex.join(argv)}` on "
                 f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, code "
                 f"{code_version_id(code_version())}. Ranges over each victim's runs (its own table has each run).",
                 ""] + summary(args.summary)
        atomic_write_text(args.out, "\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0

    try:
        if args.from_scores:
            with np.load(args.from_scores, allow_pickle=False) as f:
                d = {key: f[key] for key in f.files}
        else:
            if not bench_argv:
                raise BedkdError("give the bench arguments after --")
            d = compute(bench_argv, args.draws, sys.stderr.isatty())
            d["computed_by"] = np.asarray(f"python benchmarks/dmm_draws.py {shlex.join(argv)} on "
                                          f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}"
                                          f", code {code_version_id(code_version())}")
    except BedkdError as exc:
        print(f"dmm_draws: {exc}", file=sys.stderr)
        return 2
    if args.save_scores:
        np.savez(args.save_scores, **{key: np.asarray(v) for key, v in d.items()})
    lines = [f"# DMM on several draws of flipped clean rows{': ' + shlex.join(bench_argv) if bench_argv else ''}", "",
             f"Generated by `python benchmarks/dmm_draws.py {shlex.join(argv)}` on "
             f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, code "
             f"{code_version_id(code_version())}."
             + (f" Scores computed by `{d['computed_by']}`." if "computed_by" in d and args.from_scores else ""), ""]
    lines += table(d)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
