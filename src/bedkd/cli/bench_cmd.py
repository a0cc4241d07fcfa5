"""``bedkd bench``: the datasets x attacks x defenses table, resumable.

Exit status: 0 when every row is finished (or, with --report-only, cached or "not run"); 2 on a
bad option or name, unreadable input or unwritable output (before any training for names); 3 when
some rows were skipped or failed (results are written all the same; --allow-skipped gives 0);
130 / 143 on SIGINT / SIGTERM (finished cells stay cached: rerun the same command to resume).
"""
from __future__ import annotations

import datetime
import json
import shlex
import sys
import time
from pathlib import Path

from ..bench import BenchConfig, run_bench
from ..bench.defenses import build_specs
from ..bench.report import write_results
from ..bench.reuse import reusable
from ..bench.runner import BenchSetup, check_matrix
from ..defenses.registry import METHODS
from ..errors import BedkdError
from ..modeling import TrainConfig
from ..options import add_options, options_from_args
from ..outputs import atomic_write_text, writing
from ..provenance import code_version, environment
from .common import add_attack_options, attack_options_from_args, data_dir, note

MARKER = "bench.json"
EXIT_SKIPPED = 3        # some rows skipped or failed (see the module doc)


def add_bench(sub) -> None:
    p = sub.add_parser("bench", allow_abbrev=False,
                       help="run datasets x attacks x defenses on cached victims; resumable; writes results.{csv,json,md,png}",
                       epilog="exit status: 0 all rows finished; 2 bad option, name, input or output; "
                              f"{EXIT_SKIPPED} some rows skipped or failed (results still written; see --allow-skipped); "
                              "130/143 interrupted by SIGINT/SIGTERM (rerun the same command to resume)")
    p.add_argument("--out", required=True,
                   help="output directory for results.{csv,json,md,png} (and work/ unless --workdir is given); "
                        "rerun with the same --out to resume")
    p.add_argument("--workdir", default=None, help="cache of victims and finished cells (default: OUT/work)")
    p.add_argument("--data-dir", default=None, help="data pack directory (default: $BEDKD_DATA_DIR)")
    p.add_argument("--backbone", default=None, help="pretrained model directory (default: all-MiniLM-L6-v2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--reuse-from", nargs="+", default=[], metavar="DIR",
                   help="also take finished rows from the results.json of these earlier bench outputs, where "
                        "their setup equals this run's (rows of --out itself are always reused)")
    p.add_argument("--reuse-any-version", action="store_true",
                   help="also take cached cells and earlier rows computed by another code version "
                        "(bedkd version + git commit); by default they are computed again")
    p.add_argument("--allow-skipped", action="store_true",
                   help=f"exit 0, not {EXIT_SKIPPED}, when some rows were skipped or failed "
                        "(e.g. SynBkd on AG News: the pack has no syntactic training file)")
    p.add_argument("--report-only", action="store_true",
                   help="compute nothing: write the results of the cached cells, the rest marked 'not run'")
    add_options(p, BenchConfig)
    add_attack_options(p, prefix="attack-", exclude=("seed",))
    add_options(p, TrainConfig, prefix="train-", exclude=("seed",))
    for method in (m for m in METHODS.values() if m.flags):
        for prefix, cls in method.configs:
            add_options(p, cls, prefix=f"{prefix}-", exclude=("seed",), title=f"{method.name}: {cls.__doc__.strip()}")
    p.set_defaults(run=run_bench_cmd, interrupted_hint="finished cells are cached, rerun the same command to resume")


def run_bench_cmd(args) -> int:
    rows = run_bench_args(args)
    bad = [f"{r['dataset']}/{r['attack']}/{r['defense']}" for r in rows
           if str(r.get("status", "")).startswith(("skipped", "failed"))]
    if bad and not args.allow_skipped:
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        note(f"{len(bad)} of {len(rows)} rows skipped or failed ({shown}): exit status {EXIT_SKIPPED} "
             "(--allow-skipped accepts them)")
        return EXIT_SKIPPED
    return 0


def run_bench_args(args) -> list[dict]:
    """Run the bench of parsed ``bedkd bench`` arguments, write its results to ``--out``; the rows.
    (``bedkd demo`` runs through here too: ``args.argv`` is the command recorded.)"""
    code = code_version()
    cfg, setup, specs = bench_inputs(args, code["code_version"])
    check_matrix(cfg, setup)             # every name is known before anything is read or trained
    out = _claim(Path(args.out))
    start = time.perf_counter()
    work = _claim(Path(args.workdir)) if args.workdir else out / "work"
    setup_now = setup.identity(cfg, specs)
    reuse, earlier_runs = reusable(out, [Path(d) for d in args.reuse_from], setup_now, log=note,
                                   code=None if args.reuse_any_version else code["code_version"])
    machine = environment()
    data_files: dict = {}               # dataset -> {data file: SHA-256}, filled as the run reads them

    def metadata() -> dict:
        meta = {"command": "bedkd " + shlex.join(args.argv),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": machine, "code_version": code["code_version"],
                "provenance": {**code, **machine, "files": data_files},
                "setup": setup_now, "seconds_this_run": time.perf_counter() - start}
        if earlier_runs:
            meta["earlier_runs"] = earlier_runs
        return meta

    rows = run_bench(cfg, specs, setup, work, log=note, on_rows=lambda rows: write_results(rows, metadata(), out),
                     reuse=reuse, data_files=data_files)
    for path in write_results(rows, metadata(), out):
        note(f"wrote {path}")
    return rows


def bench_inputs(args, code: str | None = None) -> tuple[BenchConfig, BenchSetup, list]:
    """The matrix, the setup and the defense specs of parsed ``bedkd bench`` arguments (also how a
    script rebuilds a recorded run: ``benchmarks/prior_shift.py``)."""
    cfg = options_from_args(BenchConfig, args)
    attack, attack_options = attack_options_from_args(args, "attack-")
    setup = BenchSetup(data_dir=data_dir(args.data_dir), attack=attack, attack_options=attack_options,
                       train=options_from_args(TrainConfig, args, "train-"),
                       backbone=args.backbone, progress=not args.quiet and sys.stderr.isatty(),
                       compute=not args.report_only, reuse_any_version=args.reuse_any_version,
                       code_version=code)
    return cfg, setup, build_specs(cfg.defenses, defense_configs(args, cfg), cfg.preset)


def defense_configs(args, cfg: BenchConfig) -> dict:
    """Each method's option records: its defaults (``defenses.registry``: BeDKD's preset, KD matched
    to BeDKD's AKD) with the bench seed, then the user's ``--<prefix>-*`` flags (methods with flags)."""
    out: dict = {}
    for name, method in METHODS.items():
        bases = method.default_configs(cfg.preset, out)
        out[name] = tuple(options_from_args(cls, args, f"{prefix}-", base.replace(seed=cfg.seed)) if method.flags
                          else base.replace(seed=cfg.seed)
                          for (prefix, cls), base in zip(method.configs, bases))
    return out


def _claim(out: Path) -> Path:
    """A new or empty directory, or one of our earlier runs (resume); never someone else's folder."""
    if out.exists() and not out.is_dir():
        raise BedkdError(f"{out}: exists and is not a directory")
    # a marker still being written by a run started at the same moment does not make the folder foreign
    content = [p for p in out.iterdir() if not p.name.startswith(f".{MARKER}.")] if out.is_dir() else []
    if content and not (out / MARKER).is_file():
        raise BedkdError(f"{out}: directory is not empty and holds no earlier bench run ({MARKER}); choose another --out")
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():
        atomic_write_text(out / MARKER, json.dumps({"created": datetime.datetime.now().isoformat()}) + "\n")
    return out
