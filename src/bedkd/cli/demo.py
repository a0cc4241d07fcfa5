"""``bedkd demo``: a BadNets victim on SST-2, defended by BeDKD, with a before/after table."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ..attacks import ATTACKS, AttackConfig
from ..data import read_labeled
from ..defenses import PRESETS
from ..modeling import TrainConfig
from ..outputs import atomic_dir
from ..pipeline import Experiment, run_experiment
from .common import data_dir, note


def add_demo(sub) -> None:
    p = sub.add_parser("demo", allow_abbrev=False, help="end to end on SST-2: train a backdoored victim, detect, purify, compare")
    p.add_argument("--data-dir", default=None, help="benchmark data directory (default: $BEDKD_DATA_DIR)")
    p.add_argument("--attack", choices=sorted(ATTACKS), default="badnets")
    p.add_argument("--limit", type=int, default=3000, help="victim training rows drawn from SST-2 train")
    p.add_argument("--epochs", type=int, default=3, help="victim training epochs")
    p.add_argument("--preset", choices=sorted(PRESETS), default="fast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="keep models and reports in this new directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_demo)


def run_demo(args) -> int:
    root = data_dir(args.data_dir) / "sst2" / "clean"
    dmm, akd = PRESETS[args.preset]
    exp = Experiment(train=read_labeled(root / "train.tsv"), test=read_labeled(root / "test.tsv"),
                     clean_pool=read_labeled(root / "dev.tsv"), attack=args.attack,
                     attack_cfg=AttackConfig(seed=args.seed),
                     train_cfg=TrainConfig(epochs=args.epochs, seed=args.seed),
                     defenses={"bedkd": (dmm.replace(seed=args.seed), akd.replace(seed=args.seed))},
                     train_limit=args.limit)
    start = time.perf_counter()
    if args.out:
        with atomic_dir(args.out, args.overwrite) as work:
            result = run_experiment(exp, work, progress=not args.quiet, log=note)
            (work / "demo.json").write_text(json.dumps(result, indent=2))
    else:
        with tempfile.TemporaryDirectory(prefix="bedkd-demo-") as work:
            result = run_experiment(exp, Path(work), progress=not args.quiet, log=note)
    print(format_table(result, time.perf_counter() - start))
    return 0


def format_table(result: dict, seconds: float) -> str:
    d = result["defenses"]["bedkd"]
    det = d["detection"]
    prec = det.get("flagged_precision")
    kept = det.get("kept_precision")
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    rows = [("", "CACC", "ASR"), ("victim", f"{result['victim']['cacc']:.2f}", f"{result['victim']['asr']:.2f}"),
            ("after BeDKD", f"{d['cacc']:.2f}", f"{d['asr']:.2f}")]
    lines = [f"{a:<14}{b:>8}{c:>8}" for a, b, c in rows]
    lines += ["", f"SST-2, {result['attack']}, {result['train_rows']} training rows "
                  f"({result['poisoned_rows']} poisoned), clean pool {result['clean_pool_rows']} rows",
              f"DMM flagged {det['flagged']} of {det['scanned']} scanned rows: precision {pct(prec)}; "
              f"kept {det['kept']} for punishment: precision {pct(kept)}",
              f"defense {d['seconds']['total']:.0f} s (DMM {d['seconds'].get('dmm', 0):.0f}, "
              f"scan {d['seconds'].get('scan', 0):.0f}, AKD {d['seconds']['akd']:.0f}); whole demo {seconds:.0f} s"]
    return "\n".join(lines)
