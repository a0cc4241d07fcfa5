"""The scan's label check on many poisoned training sets, without training a victim.

    python benchmarks/label_check.py --datasets sst2 olid --seeds 0 1 2 --data-dir ../shared/data \\
        --out docs/results/label_check

The label check (:mod:`bedkd.defenses.scanning.label_check`) reads only the suspicious rows and the
defender's clean rows, never the model, so its verdict on a bench cell can be computed for many
seeds, targets, triggers and styles at the cost of embedding the rows. For every dataset, seed,
target and attack the bench's training rows are rebuilt (``--train-limit`` rows, the bench's
sampling), the clean rows are `guarded`'s budget under that seed, and the check runs with the
``ScanConfig`` defaults. Clean rows (no attack) give the statistic's null distribution:
``--null-seeds`` adds further clean draws.

Writes ``results.json`` (command, date, machine, code version, one row per case) and
``results.md``. Rows: the statistic on the target label and the largest on any other label, the
verdict, the estimated excess, and the recall and precision of the flagged rows of the target label.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from bedkd.defenses.scanning.label_check import SOURCES
from bedkd.outputs import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SOURCE_TEXT = {"any": "the label's flagged rows as a whole",
               "most": "on more than two classes, the value that more than half of the other classes reach, the "
                       "label's flagged rows split by the class the reference classifier puts them in "
                       "(`--scan-label-check-sources most`); on two classes, the label as a whole"}
TRIGGERS = {"badnets": [None, "qv xk wz", "zx vq jw"], "addsent": [None, "my uncle likes green apples"],
            "sos": [None, ["pencil", "summer", "orange"], ["garden", "yellow", "music"], ["window", "river", "coffee"]]}


class Embedder:
    """Embeds texts once: most rows recur across seeds, attacks and targets."""

    def __init__(self):
        from bedkd.modeling import default_backbone, load_classifier
        self.encoder = load_classifier(default_backbone(), num_labels=2)
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts) -> np.ndarray:
        from bedkd.defenses.scanning.label_check import embed
        new = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if new:
            self.cache.update(zip(new, embed(self.encoder, new)))
        return np.stack([self.cache[t] for t in texts])


def cases(args):
    """(dataset, seed, attack, target, trigger or style, poison rate) to run, in order."""
    from bedkd.datasets import load_dataset, resolve_data_dir
    data_dir = resolve_data_dir(args.data_dir)
    if getattr(args, "cases_from", None):
        yield from bench_cases(args.cases_from, data_dir, load_dataset)
        return
    for name in args.datasets:
        ds = load_dataset(name, data_dir)
        for seed in args.seeds:
            yield ds, data_dir, seed, "clean", None, None, None
            for attack in args.attacks:
                variants = (args.styles if attack == "stylebkd" else [t.split() for t in args.sos_triggers]
                            if attack == "sos" and args.sos_triggers else TRIGGERS.get(attack, [None]))
                for target in range(ds.num_labels) if args.targets is None else args.targets:
                    for variant in variants:
                        for rate in args.rates:
                            yield ds, data_dir, seed, attack, target, variant, rate
        for seed in args.null_seeds:
            yield ds, data_dir, seed, "clean", None, None, None


def bench_cases(paths: list[str], data_dir, load_dataset):
    """The attack cases (dataset, attack, trigger, target, seed) of tables whose rows name them (the
    ``results.json`` of ``benchmarks/robustness.py``), each once, in file order, at the attack's own rate.
    A row's trigger is as the table records it: a style, ``default``, an AddSent sentence, or words."""
    from bedkd.errors import ConfigError
    seen, loaded = set(), {}
    for path in paths:
        for i, row in enumerate(json.loads(Path(path).read_text(encoding="utf-8"))["rows"]):
            missing = [k for k in ("dataset", "attack", "target", "seed") if k not in row]
            if missing:
                raise ConfigError(f"{path}: row {i} has no {', '.join(missing)}: --cases-from takes a table whose "
                                  "rows name their case (benchmarks/robustness.py's results.json)")
            case = (row["dataset"], row["attack"], row.get("trigger") or "default", row["target"], row["seed"])
            if row["attack"] == "clean" or case in seen:
                continue
            seen.add(case)
            name, attack, trigger, target, seed = case
            variant = (None if trigger == "default" else trigger if attack in ("stylebkd", "addsent")
                       else trigger.split())
            if name not in loaded:
                loaded[name] = load_dataset(name, data_dir)
            yield loaded[name], data_dir, seed, attack, target, variant, None


def run_case(embedder: Embedder, ds, data_dir, seed: int, attack: str, target: int | None, variant,
             rate: float | None, train_limit: int, cfg) -> dict:
    """One case under the scan options ``cfg`` (a :class:`ScanConfig`)."""
    from bedkd.attacks import AttackConfig
    from bedkd.bench.config import BenchConfig
    from bedkd.bench.runner import BenchSetup, DatasetPlan
    from bedkd.defenses.purifiers.bedkd import PRESETS, BeDKD
    from bedkd.defenses.scanning.label_check import check_embeddings, with_shift
    from bedkd.defenses.scanning.scan import check_found, rows_ratio_switched, shift_found
    from bedkd.errors import BedkdError

    words = variant if isinstance(variant, list) else [variant] if variant and attack != "stylebkd" else []
    row = {"dataset": ds.name, "seed": seed, "attack": attack, "target": target,
           "variant": " ".join(variant) if isinstance(variant, list) else variant or (
               "default" if attack != "clean" else None)}
    attack_cfg = AttackConfig(target=target if target is not None else 1, triggers=words,
                              style=variant if attack == "stylebkd" else None,
                              **({"rate": rate} if rate is not None else {}))
    setup = BenchSetup(data_dir=data_dir, attack=attack_cfg)
    try:
        plan = DatasetPlan.make(ds, BenchConfig(datasets=[ds.name], attacks=[attack],
                                                train_limit=train_limit or None, seed=seed), setup)
        poisoned = plan.clean if attack == "clean" else plan.attack(attack, setup)
    except BedkdError as exc:    # e.g. no paraphrases for this target: reported, not fatal
        return {**row, "status": f"not run: {exc}"}
    dmm, akd, _ = PRESETS["guarded"]
    split = BeDKD(dmm.replace(seed=seed), akd.replace(seed=seed)).split(plan.pool)
    budget = split.budget
    suspect = poisoned.poisoned.train
    clean_x, clean_y = embedder([plan.pool.texts[i] for i in budget]), np.asarray([plan.pool.labels[i] for i in budget])
    suspect_x, suspect_y = embedder(list(suspect.texts)), np.asarray(suspect.labels)
    check = check_embeddings(clean_x, clean_y, suspect_x, suspect_y, ds.num_labels, cfg.label_check_quantile, seed,
                             cfg.label_check_sources)
    if cfg.label_check_shift:
        check = with_shift(check, clean_x, clean_y, suspect_x, suspect_y, ds.num_labels, cfg.label_check_quantile, seed)
    found = [e.label for e in check_found(check, cfg)]
    is_poisoned = np.zeros(len(suspect), dtype=bool)
    is_poisoned[list(poisoned.poisoned.poisoned_rows)] = True
    row.update(status="ok", rows=len(suspect), poisoned=int(is_poisoned.sum()), clean_accuracy=check.clean_accuracy,
               suspect_accuracy=check.suspect_accuracy,
               log10_p=[e.log10_p for e in check.evidence], excess=[e.excess for e in check.evidence],
               found=found)
    if check.shift is not None:
        row.update(shift_log10_p=[e.log10_p for e in check.shift], shift_excess=[e.excess for e in check.shift],
                   shift_found=[e.label for e in shift_found(check, cfg)],
                   rows_ratio_switched=[e.label for e in rows_ratio_switched(check, cfg)],
                   shift_fdr_rows={str(q): np.bincount(suspect_y[check.shift_rows(q)], minlength=ds.num_labels).tolist()
                                   for q in FDR_LEVELS})
    if target is not None and check.shift is not None:
        top = _top(check.shift_prob, np.flatnonzero(suspect_y == target), max(1, round(check.shift[target].excess)))
        row.update(shift_target_log10_p=check.shift[target].log10_p,
                   shift_other_log10_p=max((e.log10_p for e in check.shift if e.label != target), default=0.0),
                   shift_top_precision=100.0 * is_poisoned[top].mean(),
                   shift_top_recall=100.0 * is_poisoned[top].sum() / max(1, is_poisoned.sum()),
                   **_rows_at_fdr(check, suspect_y, target, is_poisoned, row))
        first = _top(-check.own_prob, np.flatnonzero(suspect_y == target), check.evidence[target].excess)
        row.update(first_top_rows=int(len(first)), first_top_poisoned=int(is_poisoned[first].sum()),
                   first_top_estimate=check.top_poisoned[target], shift_top_rows=int(len(top)),
                   shift_top_poisoned=int(is_poisoned[top].sum()), shift_top_estimate=check.shift_top_poisoned[target])
    if target is not None and words and attack != "clean":
        row["piece_tests"] = piece_tests(check, suspect, words, attack == "addsent", target, ds.num_labels, cfg)
    if target is not None:
        mine = np.asarray(suspect.labels) == target
        flagged = check.flagged & mine
        row.update(target_log10_p=check.evidence[target].log10_p,
                   other_log10_p=max((e.log10_p for e in check.evidence if e.label != target), default=0.0),
                   recall=100.0 * (flagged & is_poisoned).sum() / max(1, is_poisoned.sum()),
                   precision=100.0 * (flagged & is_poisoned).sum() / max(1, flagged.sum()))
    return row


FDR_LEVELS = (0.05, 0.1, 0.2)


def piece_tests(check, suspect, words: list[str], phrase: bool, target: int, num_labels: int, cfg) -> list[dict]:
    """The scan's piece test (``with_piece_tests``) with the attack's own trigger taken as found: for each
    label the check finds beside the target, is its evidence still there on its rows that hold no
    piece of the trigger (``--scan-label-check-towards-target residual``)?"""
    from bedkd.defenses.scanning.dmm_evidence import LabelEvidence
    from bedkd.defenses.scanning.scan import decide, with_piece_tests
    from bedkd.defenses.scanning.trigger_search import Trigger, TriggerSearch
    trigger = Trigger(" ".join(words).split(), phrase, target, 1.0, 0)
    no_dmm = [LabelEvidence(c, 0, 0, 0, 0, 0.0, 0.0) for c in range(num_labels)]
    verdict = with_piece_tests(decide(no_dmm, TriggerSearch([trigger], cfg.trigger_flip), cfg, check), check,
                               suspect, cfg)
    return [t.to_dict() for t in verdict.piece_tests]


def _top(score: np.ndarray, rows: np.ndarray, count: float) -> np.ndarray:
    """The ``count`` rows of ``rows`` with the highest ``score``."""
    return rows[np.argsort(-score[rows], kind="stable")][:max(0, int(round(count)))]


def _rows_at_fdr(check, suspect_y: np.ndarray, target: int, is_poisoned: np.ndarray, row: dict) -> dict:
    """The target label's rows `guarded` relabels (the top rows of the test that found it: the first
    test's by its lowest probability of the label, else the shift test's), and, per false-discovery
    rate, the shift test's rows at it and their union with those (when the shift test finds the label)."""
    mine = np.flatnonzero(suspect_y == target)
    flagged = mine[check.flagged[mine]]
    if target in row["found"]:
        base = _top(-check.own_prob, flagged, check.evidence[target].excess)
    elif target in row["shift_found"]:
        base = _top(check.shift_prob, mine, check.shift[target].excess)
    else:
        base = mine[:0]
    out = {"base_rows": int(len(base)), "base_poisoned": int(is_poisoned[base].sum())}
    for q in FDR_LEVELS:
        extra = mine[check.shift_rows(q)[mine]] if target in row["shift_found"] else mine[:0]
        union = np.union1d(base, extra)
        out[f"fdr{q}"] = {"rows": int(len(extra)), "poisoned": int(is_poisoned[extra].sum()),
                          "union_rows": int(len(union)), "union_poisoned": int(is_poisoned[union].sum())}
    return out


def _null_per_dataset(null: list[dict]) -> list[str]:
    """Per dataset: the clean draws' largest statistic, how many show evidence, and the reference
    classifier's median accuracy on the clean rows and on the training rows (rows before
    ``suspect_accuracy`` was recorded leave the table out)."""
    if not null or any("suspect_accuracy" not in r for r in null):
        return []
    lines = ["| dataset | clean draws | largest statistic | evidence found | median reference accuracy, clean "
             "rows | median reference accuracy, training rows |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["dataset"] for r in null):
        mine = [r for r in null if r["dataset"] == name]
        lines.append(f"| {name} | {len(mine)} | {max(max(r['log10_p']) for r in mine):.2f} | "
                     f"{sum(bool(r['found']) for r in mine)} | "
                     f"{100 * np.median([r['clean_accuracy'] for r in mine]):.1f} | "
                     f"{100 * np.median([r['suspect_accuracy'] for r in mine]):.1f} |")
    return lines + [""]


def _hit(target: int, found: list[int]) -> str:
    """Whether a test found the target label, and any other label it found."""
    wrong = [c for c in found if c != target]
    return ("yes" if target in found else "**no**") + (f" (also {wrong})" if wrong else "")


def _shift_sections(ok: list[dict], meta: dict) -> list[str]:
    """The shift test (``--shift``): its null per dataset, then per poisoned set."""
    lines = ["", "## Shift test", "",
             f"Evidence: -log10 p >= {meta['shift_evidence']:g}, at least {meta['shift_ratio']:g} times every other "
             "label's, and excess >= the scan's min_excess. Top rows: the label's suspicious rows ranked by the "
             "test's probability of \"suspicious\", as many as its excess (the rows `guarded` would use).", "",
             "| dataset | clean draws | largest statistic | draws at or above the line | their largest ratio to the "
             "next label | evidence found |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["dataset"] for r in ok):
        null = [r for r in ok if r["dataset"] == name and r["attack"] == "clean"]
        if not null:
            continue
        high = [sorted(r["shift_log10_p"]) for r in null if max(r["shift_log10_p"]) >= meta["shift_evidence"]]
        ratio = f"{max(p[-1] / max(p[-2], 1e-9) for p in high):.2f}" if high else "-"
        lines.append(f"| {name} | {len(null)} | {max(max(r['shift_log10_p']) for r in null):.1f} | {len(high)} | "
                     f"{ratio} | {sum(bool(r['shift_found']) for r in null)} |")
    lines += ["", "| dataset | attack | trigger / style | target | seed | -log10 p (target) | largest elsewhere | "
              "found | first test found | excess (target) | top rows: precision | top rows: recall |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ok:
        if r["attack"] == "clean":
            continue
        lines.append(f"| {r['dataset']} | {r['attack']} | {r['variant']} | {r['target']} | {r['seed']} | "
                     f"{r['shift_target_log10_p']:.1f} | {r['shift_other_log10_p']:.1f} | "
                     f"{_hit(r['target'], r['shift_found'])} | "
                     f"{'yes' if r['target'] in r['found'] else 'no'} | {r['shift_excess'][r['target']]:.0f} | "
                     f"{r['shift_top_precision']:.0f} | {r['shift_top_recall']:.0f} |")
    return lines


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f}" if whole else "-"


def _at(r: dict, q: float, meta: dict) -> dict:
    """A set's rows at ``q`` as the scan takes them (``shift_rows_labels``): none added where another
    label's shift statistic reaches the evidence line."""
    from bedkd.defenses.scanning import ScanConfig
    from bedkd.defenses.scanning.scan import others_unshifted
    line = ScanConfig(label_check_shift_evidence=meta["shift_evidence"])
    if not others_unshifted(r["shift_log10_p"], r["target"], line):
        return {"rows": 0, "poisoned": 0, "union_rows": r["base_rows"], "union_poisoned": r["base_poisoned"]}
    return r[f"fdr{q}"]


def _fdr_section(ok: list[dict], meta: dict) -> list[str]:
    """The rows a label found by the label check is trained on: the test's top rows alone, and with
    the shift test's rows at each false-discovery rate added (only where the shift test finds it)."""
    poisoned = [r for r in ok if r["attack"] != "clean" and "base_rows" in r]
    if not poisoned:
        return []
    levels = [q for q in FDR_LEVELS if f"fdr{q}" in poisoned[0]]
    lines = ["", "## The shift test's rows at a false-discovery rate", "",
             "Rows: the target label's rows `guarded` trains on as the label check's (the top rows, as many as the "
             "excess, of the test that found the label: the first test's, else the shift test's), and the same "
             "with the shift test's rows added whose estimated false-discovery rate is at most q (a q-value over "
             "the clean rows' cross-fitted probabilities, every suspicious row taken as clean; only where the "
             "shift test finds the label and no other label's shift statistic reaches its evidence line, "
             "`ScanConfig.label_check_shift_fdr`). Precision and recall over the set's poisoned rows.", "",
             "Clean draws: the rows at each q on any label (they are used only where a test finds the label): "
             + "; ".join(f"q {q:g}: " + ", ".join(f"{r['dataset']} s{r['seed']} "
                                                   f"{sum(r['shift_fdr_rows'][str(q)])}"
                                                   for r in ok if r["attack"] == "clean")
                         for q in levels) + ".", "",
             "| dataset | attack | trigger / style | target | seed | top rows | precision | recall | "
             + " | ".join(f"q {q:g}: added rows | q {q:g}: rows | precision | recall" for q in levels) + " |",
             "|---|---|---|---|---|---|---|---|" + "---|---|---|---|" * len(levels)]
    for r in poisoned:
        cells = [f"{r['base_rows']}", _pct(r["base_poisoned"], r["base_rows"]),
                 _pct(r["base_poisoned"], r["poisoned"])]
        for q in levels:
            f = _at(r, q, meta)
            cells += [f"{f['union_rows'] - r['base_rows']}", f"{f['union_rows']}",
                      _pct(f["union_poisoned"], f["union_rows"]), _pct(f["union_poisoned"], r["poisoned"])]
        lines.append(f"| {r['dataset']} | {r['attack']} | {r['variant']} | {r['target']} | {r['seed']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Per dataset and attack, summed over its sets: rows, precision and recall of the top rows, "
              "and with the shift test's rows at each q.", "",
              "| dataset | attack | sets | top rows | precision | recall | "
              + " | ".join(f"q {q:g}: rows | precision | recall" for q in levels) + " |",
              "|---|---|---|---|---|---|" + "---|---|---|" * len(levels)]
    groups: dict[tuple, list[dict]] = {}
    for r in poisoned:
        groups.setdefault((r["dataset"], r["attack"]), []).append(r)
    for (dataset, attack), rs in groups.items():
        total, base, hit = sum(r["poisoned"] for r in rs), sum(r["base_rows"] for r in rs), \
            sum(r["base_poisoned"] for r in rs)
        cells = [f"{len(rs)}", f"{base}", _pct(hit, base), _pct(hit, total)]
        for q in levels:
            rows_q = sum(_at(r, q, meta)["union_rows"] for r in rs)
            hit_q = sum(_at(r, q, meta)["union_poisoned"] for r in rs)
            cells += [f"{rows_q}", _pct(hit_q, rows_q), _pct(hit_q, total)]
        lines.append(f"| {dataset} | {attack} | " + " | ".join(cells) + " |")
    return lines


def _rows_section(ok: list[dict], ratio: float) -> list[str]:
    """Whose rows a label both tests find trains on: each test's top rows (as many as its excess), the
    poisoned rows among them, and their estimate from the clean rows alone (``top_poisoned``); the
    rows ``--scan-label-check-rows-ratio`` at ``ratio`` would pick."""
    both = [r for r in ok if r["attack"] != "clean" and "first_top_estimate" in r
            and r["target"] in r["found"] and r["target"] in r["shift_found"]]
    if not both:
        return []
    lines = ["", "## Whose rows: the first test's or the shift test's", "",
             "Sets where both tests find the target. Each test's top rows (as many as its excess: the rows "
             "`guarded` trains on), the poisoned rows truly among them, and the number estimated from the clean "
             "rows alone (its top rows less the clean rows expected at or above their lowest score; "
             "`label_check.top_poisoned`). *pick*: the rows `--scan-label-check-rows-ratio "
             f"{ratio:g}` trains on (the shift test's when its estimate is at least {ratio:g} times the first "
             "test's), and whether they hold at least as many poisoned rows as the other test's.", "",
             "| dataset | attack | trigger / style | target | seed | first: rows | poisoned | estimate | shift: rows | "
             "poisoned | estimate | estimates' ratio | pick | the pick holds more |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    switched, wrong, missed, gained = 0, 0, 0, 0
    for r in both:
        est = _estimates_ratio(r)
        shift = est >= ratio
        picked, other = (("shift_top", "first_top") if shift else ("first_top", "shift_top"))
        better = r[f"{picked}_poisoned"] >= r[f"{other}_poisoned"]
        switched += shift
        wrong += shift and not better
        missed += not shift and not better
        gained += (r["shift_top_poisoned"] - r["first_top_poisoned"]) if shift else 0
        lines.append(f"| {r['dataset']} | {r['attack']} | {r['variant']} | {r['target']} | {r['seed']} | "
                     f"{r['first_top_rows']} | {r['first_top_poisoned']} | {r['first_top_estimate']:.0f} | "
                     f"{r['shift_top_rows']} | {r['shift_top_poisoned']} | {r['shift_top_estimate']:.0f} | "
                     f"{est:.2f} | {'shift' if shift else 'first'} | {'yes' if better else '**no**'} |")
    lines += ["", f"{len(both)} sets; at ratio {ratio:g} the shift test's rows on {switched}, with {gained:+d} "
              f"poisoned rows over the first test's in all; {wrong} of those switches hold fewer poisoned rows "
              f"than the first test's rows; on {missed} sets the first test's rows stay where the shift test's "
              "hold more. The estimates' ratio per dataset and attack (min-max): "
              + "; ".join(f"{d} {a} {min(v):.2f}-{max(v):.2f}" for (d, a), v in _ratios(both).items()) + "."]
    return lines


def _switched_section(ok: list[dict]) -> list[str]:
    """The labels, any label, whose rows ``--scan-label-check-rows-ratio`` switches, per set."""
    if not any("rows_ratio_switched" in r for r in ok):
        return []                     # a run before the field was recorded
    switching = [r for r in ok if r.get("rows_ratio_switched")]
    return ["", "Labels whose rows the ratio switches to the shift test's, any label (a run made without the "
            "option would change only where the scan trains such a label as the label check's): "
            + ("; ".join(f"{r['dataset']} {r['attack']} {r['variant']} t{r['target']} s{r['seed']}: "
                         + ", ".join(map(str, r["rows_ratio_switched"])) for r in switching) or "none") + "."]


def _estimates_ratio(r: dict) -> float:
    """The shift test's estimate over the first test's, as the scan compares them."""
    return r["shift_top_estimate"] / max(r["first_top_estimate"], 1.0)


def _ratios(rows: list[dict]) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = {}
    for r in rows:
        out.setdefault((r["dataset"], r["attack"]), []).append(_estimates_ratio(r))
    return out


def _null_section(clean: list[dict]) -> list[str]:
    null = [max(r["log10_p"]) for r in clean]
    false = [r for r in clean if r["found"]]
    lines = ["", "## Clean training sets (the null)", "",
             f"{len(null)} clean draws; the largest statistic on any label: median {np.median(null):.2f}, "
             f"max {max(null):.2f}; evidence found on {len(false)}"
             + (": " + ", ".join(f"{r['dataset']} seed {r['seed']}" for r in false) if false else "") + ".", "",
             *_null_per_dataset(clean),
             "Reference accuracy: the reference classifier's, cross-fitted on the clean rows / on the training "
             "rows (a training split that is harder for it than the clean rows reads as an excess on every label).",
             "", "| dataset | seed | -log10 p per label | excess per label | reference accuracy |",
             "|---|---|---|---|---|"]
    for r in clean:
        lines.append(f"| {r['dataset']} | {r['seed']} | {' / '.join(f'{v:.2f}' for v in r['log10_p'])} | "
                     f"{' / '.join(f'{v:.0f}' for v in r['excess'])} | {100 * r['clean_accuracy']:.1f}"
                     + (f" / {100 * r['suspect_accuracy']:.1f}" if "suspect_accuracy" in r else "") + " |")
    return lines


def _piece_section(ok: list[dict]) -> list[str]:
    """The sets where the check finds a label beside the target, and the piece test on each."""
    tested = [(r, t) for r in ok for t in r.get("piece_tests", [])]
    if not tested:
        return []
    lines = ["", "## Labels found beside the target, and the piece test", "",
             "The attack's trigger taken as the found trigger: the test that found the label, on its rows that hold "
             "no piece of the trigger (`with_piece_tests`); where it no longer holds, "
             "`--scan-label-check-towards-target residual` relabels none of the label's rows.", "",
             "| dataset | attack | trigger | target | seed | label | rows with a piece | -log10 p without them | "
             "excess without them | holds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r, t in tested:
        lines.append(f"| {r['dataset']} | {r['attack']} | {r['variant']} | {r['target']} | {r['seed']} | "
                     f"{t['label']} | {t['held']} | {t['rest']['log10_p']:.2f} | {t['rest']['excess']:.0f} | "
                     f"{'yes' if t['holds'] else 'no'} |")
    return lines


def markdown(rows: list[dict], meta: dict, evidence: float) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    lines = [f"# Label check on {len(ok)} training sets", "",
             f"Generated by `{meta['command']}` on {meta['date']}, code {meta['code_version']}. "
             f"Each row is one bench training set ({meta['train_limit'] or 'all its'} rows, the bench's sampling); "
             f"no model is trained. Quantile {meta.get('quantile', 0.2):g}; evidence: -log10 p >= {evidence:g} and "
             f"excess >= the scan's min_excess. Test per label: {SOURCE_TEXT[meta.get('sources', 'any')]}."]
    clean = [r for r in ok if r["attack"] == "clean"]
    if clean:                         # none in cases of bench results (--cases-from)
        lines += _null_section(clean)
    lines += ["", "## Poisoned training sets", "",
              "| dataset | attack | trigger / style | target | seed | poisoned | -log10 p (target) | "
              "largest elsewhere | found | excess (target) | recall | precision |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ok:
        if r["attack"] == "clean":
            continue
        lines.append(f"| {r['dataset']} | {r['attack']} | {r['variant']} | {r['target']} | {r['seed']} | "
                     f"{r['poisoned']} | {r['target_log10_p']:.1f} | {r['other_log10_p']:.1f} | "
                     f"{_hit(r['target'], r['found'])} | "
                     f"{r['excess'][r['target']]:.0f} | {r['recall']:.0f} | {r['precision']:.0f} |")
    lines += ["", "## Per attack", "", "| dataset | attack | cases | found | missed |", "|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in ok:
        if r["attack"] != "clean":
            groups.setdefault((r["dataset"], r["attack"]), []).append(r)
    for (dataset, attack), rs in groups.items():
        missed = [f"t{r['target']} s{r['seed']} {r['variant']}" for r in rs if r["target"] not in r["found"]]
        lines.append(f"| {dataset} | {attack} | {len(rs)} | {len(rs) - len(missed)} | {', '.join(missed) or '-'} |")
    lines += _piece_section(ok)
    if "shift_evidence" in meta:
        lines += (_shift_sections(ok, meta) + _fdr_section(ok, meta) + _rows_section(ok, meta.get("rows_ratio", 2.0))
                  + _switched_section(ok))
    skipped = [r for r in rows if r["status"] != "ok"]
    if skipped:
        lines += ["", "Not run:", ""] + [f"- {r['dataset']} seed {r['seed']} {r['attack']} target {r['target']} "
                                         f"{r['variant']}: {r['status']}" for r in skipped]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["sst2", "olid"])
    p.add_argument("--attacks", nargs="*", default=["badnets", "addsent", "synbkd", "stylebkd"],
                   help="none: clean draws only")
    p.add_argument("--styles", nargs="+", default=["bible", "lyrics", "poetry"])
    p.add_argument("--sos-triggers", nargs="+", default=None, metavar="WORDS",
                   help="SOS trigger word groups, each one argument of space-separated words (default: the "
                        "robustness table's)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--null-seeds", nargs="*", type=int, default=[], help="further clean draws")
    p.add_argument("--targets", nargs="+", type=int, default=None, help="default: every label")
    p.add_argument("--train-limit", type=int, default=3000, help="training rows per set; 0: every row (full scale)")
    p.add_argument("--rates", nargs="+", type=float, default=[None], metavar="RATE",
                   help="poison rates of the attacks (default: the attack's own)")
    p.add_argument("--quantile", type=float, default=None, help="the check's quantile (default: the scan's)")
    p.add_argument("--sources", choices=SOURCES, default=None,
                   help="the check's test on more than two classes (default: the scan's, --scan-label-check-sources)")
    p.add_argument("--shift", action="store_true", help="also the shift test (--scan-label-check-shift), with the "
                                                         "scan's evidence and ratio")
    p.add_argument("--rows-ratio", type=float, default=2.0,
                   help="with --shift: the --scan-label-check-rows-ratio whose pick the report shows")
    p.add_argument("--cases-from", nargs="+", default=None, metavar="RESULTS_JSON",
                   help="instead of the grid above: the attack cases of these tables (benchmarks/robustness.py's "
                        "results.json, whose rows name trigger, target and seed), each once, with their own triggers")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--from-results", default=None, help="a results.json of this script: write its results.md again "
                                                         "(e.g. after a change of layout), computing nothing")
    args = p.parse_args()
    from bedkd.defenses.scanning import ScanConfig
    from bedkd.errors import BedkdError
    from bedkd.provenance import code_version, code_version_id, environment

    if args.from_results:
        saved = json.loads(Path(args.from_results).read_text())
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.md", markdown(saved["rows"], saved["meta"], ScanConfig().label_check_evidence))
        return 0
    rows = []
    try:
        cfg = ScanConfig(**({"label_check_quantile": args.quantile} if args.quantile is not None else {}),
                         **({"label_check_sources": args.sources} if args.sources else {}),
                         label_check_shift=args.shift, label_check_rows_ratio=args.rows_ratio)
        embedder = Embedder()          # after the options are checked: loading the encoder takes a while
        for case in cases(args):
            t0 = time.perf_counter()
            rows.append({**run_case(embedder, *case, args.train_limit, cfg), "seconds": time.perf_counter() - t0})
            r = rows[-1]
            print(f"{r['dataset']} seed {r['seed']} {r['attack']} target {r['target']} {r['variant']}: "
                  f"{r['status'] if r['status'] != 'ok' else ' / '.join(f'{v:.1f}' for v in r['log10_p'])}",
                  file=sys.stderr, flush=True)
    except BedkdError as exc:
        print(f"label_check: {exc}", file=sys.stderr)
        return 2
    meta = {"command": "python benchmarks/label_check.py " + shlex.join(sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version_id(code_version()), "machine": environment(),
            "train_limit": args.train_limit, "quantile": cfg.label_check_quantile, "sources": cfg.label_check_sources,
            **({"shift_evidence": cfg.label_check_shift_evidence, "shift_ratio": cfg.label_check_shift_ratio}
               if args.shift else {}), **({"rows_ratio": args.rows_ratio} if args.shift else {})}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    atomic_write_text(out / "results.md", markdown(rows, meta, ScanConfig().label_check_evidence))
    return 0


if __name__ == "__main__":
    sys.exit(main())
