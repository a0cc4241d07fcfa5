"""One function per subcommand; each returns the process exit status."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..attacks import ATTACKS, make_attack
from ..attacks.attack_dir import load_attack_dir, save_attack_dir
from ..datasets import DATASETS
from ..data import check_labels, check_rows, random_limit, read_row_indices
from ..defenses import DEFAULT_PRESET, PRESETS, AKDConfig, BeDKD, Detection, DMMConfig, ScanConfig
from ..provenance import record
from ..evaluation import evaluate
from ..modeling import TrainConfig, default_backbone, finetune, load_classifier, save_classifier
from ..options import add_options, options_from_args
from ..seeding import seed_everything
from ..errors import ConfigError
from ..outputs import atomic_dir, atomic_write_text, check_output_dir, check_output_file
from .common import add_attack_options, add_model_flags, attack_options_from_args, add_output_flags, add_run_flags, emit_json, load, note


# -- attack ---------------------------------------------------------------------------------------
def add_attack(sub) -> None:
    p = sub.add_parser("attack", allow_abbrev=False, help="build a poisoned training set and a triggered test set")
    p.add_argument("--attack", required=True, choices=sorted(ATTACKS))
    p.add_argument("--train", required=True, help="clean training file")
    p.add_argument("--test", required=True, help="clean test file")
    p.add_argument("--dataset", default=None, choices=sorted(DATASETS),
                   help="synbkd/stylebkd: the data-pack dataset whose clean files --train/--test are")
    p.add_argument("--data-dir", default=None, help="data pack directory (default: $BEDKD_DATA_DIR)")
    add_output_flags(p, "output directory for train.tsv, test_poison.tsv, poisoned_rows.txt")
    add_attack_options(p)
    p.set_defaults(run=run_attack)


def run_attack(args) -> int:
    cfg, own = attack_options_from_args(args)
    train, test = load(args.train), load(args.test)
    classes = max(2, max(train.labels) + 1)
    if cfg.target >= classes:
        raise ConfigError(f"--target {cfg.target} is not a class of {args.train} (classes 0..{classes - 1})")
    attack = make_attack(args.attack, cfg, args.dataset, args.data_dir, own.get(args.attack))
    result = attack.poison(train, test)
    with atomic_dir(args.out, args.overwrite) as tmp:
        save_attack_dir(tmp, args.attack, attack, result,
                        {"dataset": args.dataset, "train": str(args.train), "test": str(args.test)})
    if attack.trains_victim:
        note(f"{args.attack} is a training-time attack: train its victim with "
             f"'bedkd train --attack-dir {args.out} --out VICTIM'")
    note(f"{args.out}: {len(result.poisoned_rows)} of {len(result.train)} training rows poisoned, "
         f"{len(result.test_poison)} triggered test rows")
    return 0


# -- train ----------------------------------------------------------------------------------------
def add_train(sub) -> None:
    p = sub.add_parser("train", allow_abbrev=False, help="fine-tune a classifier (e.g. a victim on poisoned data)")
    p.add_argument("--train", default=None, help="training file (or --attack-dir)")
    p.add_argument("--attack-dir", default=None,
                   help="output of 'bedkd attack': train the victim the attack's way (required for ep and sos)")
    add_output_flags(p, "output model directory")
    p.add_argument("--backbone", default=None, help="pretrained model directory or hub id (default: all-MiniLM-L6-v2)")
    p.add_argument("--limit", type=int, default=None, help="train on a random subset of this many rows")
    p.add_argument("--num-labels", type=int, default=None, help="number of classes (default: from the data)")
    p.add_argument("--allow-pickle", action="store_true", help="allow a pickle checkpoint as backbone")
    add_options(p, TrainConfig)
    add_run_flags(p)
    p.set_defaults(run=run_train)


def run_train(args) -> int:
    cfg = options_from_args(TrainConfig, args)
    check_output_dir(args.out, args.overwrite, (args.backbone,))
    if (args.train is None) == (args.attack_dir is None):
        raise ConfigError("give exactly one of --train and --attack-dir")
    attack, poisoned = load_attack_dir(args.attack_dir) if args.attack_dir else (None, None)
    data = poisoned.train if poisoned else load(args.train)
    if args.limit is not None:
        if args.limit < 1:
            raise ConfigError("--limit must be >= 1")
        if attack is not None:
            raise ConfigError("--limit cannot be combined with --attack-dir (it would drop poisoned rows)")
        data = data.subset(random_limit(data, args.limit, cfg.seed))
    num_labels = args.num_labels or max(2, max(data.labels) + 1)
    check_labels(data, num_labels)
    seed_everything(cfg.seed)   # the new classification head is drawn at load time
    clf = load_classifier(args.backbone or default_backbone(), num_labels=num_labels, allow_pickle=args.allow_pickle)
    start = time.perf_counter()
    if attack is not None:
        history = attack.train_victim(clf, poisoned, cfg, progress=not args.quiet)
    else:
        history = finetune(clf, data, cfg, progress=not args.quiet)
    report = {"train": str(args.train or Path(args.attack_dir) / "train.tsv"), "attack_dir": args.attack_dir, "rows": len(data), "empty_texts": data.num_empty, "num_labels": num_labels,
              "backbone": args.backbone or "all-MiniLM-L6-v2", "config": cfg.to_dict(), "history": history,
              "seconds": time.perf_counter() - start}
    save_classifier(clf, args.out, args.overwrite, {"train_report.json": json.dumps(report, indent=2)})
    note(f"{args.out}: trained on {len(data)} rows in {report['seconds']:.0f} s")
    return 0


def _add_defense_inputs(p) -> None:
    add_model_flags(p)
    p.add_argument("--clean", required=True, help="the defender's small clean labelled set")
    p.add_argument("--suspect", required=True, help="the suspicious training data")
    p.add_argument("--poisoned-rows", default=None,
                   help="file of 0-based poisoned rows of --suspect (ground truth, for precision/recall)")
    p.add_argument("--seed", type=int, default=None, help="seed for every stage (--dmm-seed/--akd-seed override it)")
    add_run_flags(p)


def _truth(args, suspect):
    if not args.poisoned_rows:
        return None
    rows = read_row_indices(args.poisoned_rows)
    check_rows(rows, len(suspect), args.poisoned_rows)
    return rows


def _config(cls, args, prefix: str, base):
    """Preset values, then ``--seed``, then the stage's own flags."""
    if args.seed is not None:
        base = base.replace(seed=args.seed)
    return options_from_args(cls, args, prefix, base)


def add_detect(sub) -> None:
    p = sub.add_parser("detect", allow_abbrev=False, help="flag poisoned training rows with DMM")
    _add_defense_inputs(p)
    add_output_flags(p, "output CSV, one row per scanned sample")
    _add_scan_options(p)
    p.set_defaults(run=run_detect)


# The AKD options that choose DMM's clean rows (``detect`` and ``scan`` take the same rows as ``purify``).
SPLIT_FIELDS = ("trust_per_class", "val_per_class", "val_extra", "clean_layout", "clean_order", "seed")


def _add_split_options(p) -> None:
    add_options(p, AKDConfig, prefix="akd-", title="how the clean pool is split, as purify splits it",
                exclude=tuple(f for f in AKDConfig.__dataclass_fields__ if f not in SPLIT_FIELDS))


PRESET_HELP = ("starting values for all options: 'reference' (the authors' released code: 50 cycles, no scan), "
               "'guarded' (this project's: a scan with a verdict first, no change without evidence, flagged rows "
               "of a label with DMM evidence punished, clean rows carrying a found trigger trained to their own "
               "labels, a rare one-token trigger word's embedding reset, epoch chosen with a noise margin of at "
               "most 1 point, each epoch measured with the clean-prior shift it is returned with, and a label "
               "check with its shift test, whose flagged rows of a label with no found trigger, joined by "
               "the shift test's rows at an estimated false-discovery rate of 0.1, are trained towards "
               "their likeliest other class, and a weak trigger (a candidate flipping 30-60 %% of held-out rows) "
               "taken where the tests that found its label flag the rows that hold it and those rows explain "
               "their evidence; it "
               "still misses the bar on some SynBkd and StyleBkd cells and costs more than a victim training at "
               "3000 rows, see docs/presets.md) "
               "or 'fast' (this project's earlier default: at full scale it met the "
               "paper's bar on 6 of 17 attack cells and cost a clean OLID model 11 CACC points; see docs/presets.md)")


def _add_preset_flag(p) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help=PRESET_HELP + " (default: %(default)s)")


def _add_scan_options(p) -> None:
    """detect and scan: the preset, DMM's options, purify's split of the clean pool, the scan's options."""
    _add_preset_flag(p)
    add_options(p, DMMConfig, prefix="dmm-")
    _add_split_options(p)
    add_options(p, ScanConfig, prefix="scan-")


def _bedkd(args) -> BeDKD:
    dmm_base, akd_base, scan_base = PRESETS[args.preset]
    return BeDKD(_config(DMMConfig, args, "dmm-", dmm_base), _config(AKDConfig, args, "akd-", akd_base),
                 _config(ScanConfig, args, "scan-", scan_base))


def run_detect(args) -> int:
    out = check_output_file(args.out, args.overwrite)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"{out}: --out must name a .csv file (a .json summary is written beside it)")
    summary_path = check_output_file(out.with_suffix(".json"), args.overwrite)
    bedkd = _bedkd(args)
    teacher = load_classifier(args.model, allow_pickle=args.allow_pickle)
    clean, suspect = load(args.clean), load(args.suspect)
    truth = _truth(args, suspect)
    check_labels(clean, teacher.num_labels)
    detection = bedkd.detect(teacher, clean, suspect, progress=not args.quiet)
    detection.to_csv(out)
    summary = {**detection.metrics(truth), "seconds": detection.seconds}
    atomic_write_text(summary_path, json.dumps({"preset": args.preset, "config": {"dmm": bedkd.dmm.to_dict(),
                      "akd": bedkd.akd.to_dict(), "scan": bedkd.scan_cfg.to_dict()}, **summary}, indent=2))
    emit_json(summary)
    return 0


def add_purify(sub) -> None:
    p = sub.add_parser("purify", allow_abbrev=False, help="detect, then purify the model with adversarial distillation")
    _add_defense_inputs(p)
    add_output_flags(p, "output directory for the purified model and report.json")
    p.add_argument("--flags", default=None, help="use this detect CSV instead of running DMM")
    _add_preset_flag(p)
    add_options(p, DMMConfig, prefix="dmm-")
    add_options(p, AKDConfig, prefix="akd-")
    add_options(p, ScanConfig, prefix="scan-")
    p.set_defaults(run=run_purify)


# -- scan -----------------------------------------------------------------------------------------
SCAN_BACKDOOR = 1     # exit status when the scan finds backdoor evidence (0: none)


def add_scan(sub) -> None:
    p = sub.add_parser("scan", allow_abbrev=False,
                       help="is there a backdoor? a verdict, the target label and its evidence; exit 0: no "
                            "evidence, 1: backdoor found")
    _add_defense_inputs(p)
    add_output_flags(p, "output JSON: verdict, target, statistics with their thresholds, trigger candidates")
    _add_scan_options(p)
    p.set_defaults(run=run_scan)


def run_scan(args) -> int:
    out = check_output_file(args.out, args.overwrite)
    bedkd = _bedkd(args)
    teacher = load_classifier(args.model, allow_pickle=args.allow_pickle)
    clean, suspect = load(args.clean), load(args.suspect)
    truth = _truth(args, suspect)
    result = bedkd.scan(teacher, clean, suspect, progress=not args.quiet)
    verdict = result.verdict.report()
    report = {"model": str(args.model), "clean": str(args.clean), "suspect": str(args.suspect),
              "preset": args.preset, **verdict, "detection": result.detection.metrics(truth),
              "seconds": result.seconds,
              "config": {"dmm": bedkd.dmm.to_dict(), "akd_split": {f: getattr(bedkd.akd, f) for f in SPLIT_FIELDS},
                         "scan": bedkd.scan_cfg.to_dict()},
              "provenance": record([args.model, args.clean, args.suspect])}
    atomic_write_text(out, json.dumps(report, indent=2))
    summary = "backdoor found" if verdict["backdoor"] else "no backdoor evidence"
    several = len(verdict["targets"]) > 1
    note(f"{summary}" + (f": target label {verdict['target']}" if verdict["backdoor"] else "")
         + (f" (targets {', '.join(map(str, verdict['targets']))})" if several else "") + "; "
         + "; ".join(verdict["reasons"]))
    emit_json({"out": str(out), "backdoor": verdict["backdoor"], "target": verdict["target"]})
    return SCAN_BACKDOOR if verdict["backdoor"] else 0


def run_purify(args) -> int:
    bedkd = _bedkd(args)
    teacher = load_classifier(args.model, allow_pickle=args.allow_pickle)
    check_output_dir(args.out, args.overwrite, (args.model,))
    clean, suspect = load(args.clean), load(args.suspect)
    truth = _truth(args, suspect)
    detection = Detection.from_csv(args.flags, len(suspect)) if args.flags else None
    result = bedkd.purify(teacher, clean, suspect, progress=not args.quiet, detection=detection)
    report = {"preset": args.preset, "model": str(args.model), "clean": str(args.clean),
              "suspect": str(args.suspect), **result.report, "detection": result.detection.metrics(truth),
              "provenance": record([args.model, args.clean, args.suspect, args.flags])}
    save_classifier(result.classifier, args.out, args.overwrite,
                    {"report.json": json.dumps(report, indent=2), "flags.csv": result.detection.to_csv_text()},
                    protect=(args.model,))
    retry = report.get("counter_retry")
    if retry:
        note(f"note: the first run of the cycles, {retry['relabelled_rows']} relabelled rows, kept no epoch; they ran "
             f"again with the counter cap ({report['data']['relabelled_rows']} rows); report.json has both runs")
    spared = report.get("data", {}).get("relabel_spared")
    if spared:
        note(f"note: {spared} label-check rows would have been relabelled towards a found trigger's target (holding a "
             "piece of it, or of a label whose evidence its pieces explain); they were left out "
             "(--scan-label-check-towards-target)")
    mean = report.get("epoch_mean")
    if mean:
        note(f"note: the mean of epochs {', '.join(map(str, mean['epochs']))}'s weights " +
             ("was returned" if mean["kept"] else
              f"fell outside the accuracy guard; epoch {report['selected_epoch']} was returned"))
    isolated = report.get("data", {}).get("isolated_words")
    if isolated:
        note(f"note: the purified model's tokenizer reads {', '.join(isolated)} as new whole-word token(s); load the "
             f"model from {args.out} with its own tokenizer")
    check = report.get("data", {}).get("isolate_check")
    if check and not check["kept"]:
        moved = (f"{check['rows_off_target']} held-out trigger rows left the target with new tokens and "
                 f"{check['rows_to_target']} joined it" if "rows_off_target" in check else "no held-out trigger rows")
        note(f"note: {', '.join(check['words'])} kept their pieces: {moved} (isolate_keep '{check['rule']}')")
    if report.get("warning"):
        note(f"warning: {report['warning']}")
    later = report.get("later_rounds", [])
    for n, one in enumerate(later, start=2):
        if one["unchanged"]:
            note(f"note: round {n}'s scan of the purified model: {one['stop_reason']} (round {n - 1}'s model)")
            continue
        words = one.get("data", {}).get("isolated_words")
        note(f"note: round {n}'s scan of the purified model found evidence (target {one['verdict'].get('target')}): "
             f"purified again, epoch {one['selected_epoch']} kept" +
             (f"; its tokenizer reads {', '.join(words)} as new whole-word token(s)" if words else "") +
             (f"; warning: {one['warning']}" if one.get("warning") else ""))
    emit_json({"out": str(args.out), "selected_epoch": report["selected_epoch"], "stop_reason": report["stop_reason"],
               "detection": report["detection"], "seconds": report["seconds"],
               **({"rounds": 1 + len(later)} if later else {}),
               **({"counter_retry": True} if retry else {}),
               **({"warning": report["warning"]} if report.get("warning") else {})})
    return 0


# -- evaluate -------------------------------------------------------------------------------------
def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", allow_abbrev=False, help="CACC on clean test data, ASR on triggered test data")
    add_model_flags(p)
    p.add_argument("--clean-test", required=True)
    p.add_argument("--poison-test", default=None, help="triggered non-target rows, labelled with the target")
    p.add_argument("--target", type=int, default=None, help="target label (default: each poison row's label)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_run_flags(p)
    p.set_defaults(run=run_evaluate)


def run_evaluate(args) -> int:
    clf = load_classifier(args.model, allow_pickle=args.allow_pickle)
    if args.target is not None and not 0 <= args.target < clf.num_labels:
        raise ConfigError(f"--target {args.target} is not a class of the model (0..{clf.num_labels - 1})")
    clean = load(args.clean_test)
    poison = load(args.poison_test) if args.poison_test else None
    result = evaluate(clf, clean, poison, args.target, progress=not args.quiet)
    if args.json:
        emit_json(result)
    else:
        untriggered = result.get("untriggered_asr")
        print(f"CACC {result['cacc']:.2f}%" + (f"   ASR {result['asr']:.2f}%" if "asr" in result else "")
              + (f" (untriggered {untriggered:.2f}%)" if untriggered is not None else ""))
    return 0
