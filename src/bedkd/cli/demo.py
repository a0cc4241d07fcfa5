"""``bedkd demo``: a backdoored SST-2 victim, defended by BeDKD, with a before/after table.

The demo is a one-cell ``bedkd bench`` run (SST-2 x one attack x ``none bedkd``, no clean row), so
it shares the bench's caches, provenance and outputs. The table is printed; with ``--out DIR`` the
bench results (``results.{json,md,csv,png}``, with the command, code version, machine and data
hashes) and ``table.md`` are written there, and rerunning the same command resumes from its cache.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..attacks import ATTACKS
from ..defenses import DEFAULT_PRESET, PRESETS
from ..outputs import atomic_write_text
from .common import note


def add_demo(sub) -> None:
    p = sub.add_parser("demo", allow_abbrev=False,
                       help="end to end on SST-2: train a backdoored victim, detect, purify, compare")
    p.add_argument("--data-dir", default=None, help="benchmark data directory (default: $BEDKD_DATA_DIR)")
    p.add_argument("--attack", choices=sorted(ATTACKS), default="badnets")
    p.add_argument("--limit", type=int, default=3000, help="victim training rows drawn from SST-2 train")
    p.add_argument("--epochs", type=int, default=3, help="victim training epochs")
    p.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default=None, help="pretrained model directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--out", default=None,
                   help="directory for the bench results and table.md (new, or an earlier demo's: it resumes)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_demo, interrupted_hint="with --out, rerun the same command to resume")


def bench_argv(args, out: str) -> list[str]:
    """The ``bedkd bench`` arguments of this demo."""
    return ["bench", "--out", out, "--datasets", "sst2", "--attacks", args.attack, "--no-clean-row",
            "--defenses", "none", "bedkd", "--preset", args.preset, "--train-limit", str(args.limit),
            "--train-epochs", str(args.epochs), "--seed", str(args.seed),
            *(["--data-dir", args.data_dir] if args.data_dir else []),
            *(["--backbone", args.backbone] if args.backbone else []), *(["--quiet"] if args.quiet else [])]


def run_demo(args) -> int:
    from .bench_cmd import run_bench_args
    from .main import build_parser      # here: main imports this module

    def run(out: str) -> list[dict]:
        bench = build_parser().parse_args(bench_argv(args, out))
        bench.argv = args.argv          # results.json records the command the user ran
        return run_bench_args(bench)

    if args.out:
        rows = run(args.out)
        table = format_table(rows, args.preset)
        atomic_write_text(Path(args.out) / "table.md",
                          f"# bedkd demo\n\nFrom `results.json` beside this file (command, date, code version, "
                          f"machine, data hashes).\n\n```\n{table}\n```\n")
        note(f"wrote {Path(args.out) / 'table.md'}")
    else:
        with tempfile.TemporaryDirectory(prefix="bedkd-demo-") as work:
            table = format_table(run(work), args.preset)
    print(table)
    return 0


def format_table(rows: list[dict], preset: str) -> str:
    """The before/after table from the bench rows of the victim (``none``) and ``bedkd``."""
    by = {r["defense"]: r for r in rows}
    victim, after = by["none"], by["bedkd"]
    if after.get("status") != "ok":
        return f"BeDKD: {after.get('status')}"
    num = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    pct = lambda v: "-" if v is None else f"{v:.1f}%"  # noqa: E731
    lines = [f"{'':<22}{'CACC':>8}{'ASR':>8}",
             f"{'victim':<22}{num(victim['victim_cacc']):>8}{num(victim['victim_asr']):>8}",
             f"{'after BeDKD (' + preset + ')':<22}{num(after['cacc']):>8}{num(after['asr']):>8}",
             f"{'clean model':<22}{num(victim['clean_model_cacc']):>8}{num(victim['floor_asr']):>8}  (the ASR floor)",
             "",
             f"SST-2, {victim['attack']}, {victim['train_rows']} training rows ({victim['poisoned_rows']} poisoned), "
             f"clean pool {victim['clean_pool_rows']} rows"]
    if after.get("backdoor_found") is not None:
        lines.append("scan: " + (f"backdoor found, target {after['target_found']}"
                                 + (f", trigger '{after['trigger_found']}'" if after.get("trigger_found") else "")
                                 if after["backdoor_found"] else "no evidence: the model is returned unchanged"))
    if after.get("flagged") is not None:
        lines.append(f"DMM flagged {after['flagged']} rows: precision {pct(after['flagged_precision'])}; "
                     f"kept {after['kept']} for punishment: precision {pct(after['kept_precision'])}")
    stages = ", ".join(f"{name} {after[f'{name}_seconds']:.0f}" for name in ("dmm", "scan", "akd")
                       if after.get(f"{name}_seconds") is not None)
    lines.append(f"victim training {victim['victim_train_seconds']:.0f} s; defense {after['defense_seconds']:.0f} s"
                 + (f" ({stages})" if stages else ""))
    return "\n".join(lines)
