"""``bedkd data fetch`` and ``bedkd data verify``: rebuild the benchmark data pack and check it."""
from __future__ import annotations

import sys

from ..fetch import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, fetch_pack, load_manifest, verify_pack
from .common import data_dir, note


def add_data(sub) -> None:
    p = sub.add_parser("data", allow_abbrev=False, help="download or verify the benchmark data pack")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    f = actions.add_parser("fetch", allow_abbrev=False,
                           help="download the pack's source files, normalise them and check their SHA-256")
    f.add_argument("--out", required=True, help="pack directory to create or complete")
    f.add_argument("--base-url", default=DEFAULT_BASE_URL,
                   help=f"server laid out as URL/OWNER/REPO/COMMIT/PATH (default: {DEFAULT_BASE_URL})")
    f.add_argument("--dataset", nargs="+", action="extend", default=None,
                   choices=sorted({e.dataset for e in load_manifest()}), help="only these datasets (default: all)")
    f.add_argument("--overwrite", action="store_true", help="replace existing files whose hash is wrong")
    f.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the server")
    f.add_argument("--quiet", action="store_true", help="no progress bar, no notes")
    f.set_defaults(run=run_fetch)

    v = actions.add_parser("verify", allow_abbrev=False, help="check a pack directory against the pack's SHA-256 list")
    v.add_argument("--data-dir", default=None, help="pack directory (default: $BEDKD_DATA_DIR)")
    v.set_defaults(run=run_verify)


def run_fetch(args) -> int:
    report = fetch_pack(args.out, base_url=args.base_url, datasets=args.dataset, overwrite=args.overwrite,
                        progress=not args.quiet, timeout=args.timeout)
    if not args.quiet:
        for line in report.notes:
            note(f"note: {line}")
    note(f"{args.out}: {len(report.downloaded)} file(s) downloaded and verified, "
         f"{len(report.skipped)} already present and verified")
    return 0


def run_verify(args) -> int:
    root = data_dir(args.data_dir)
    problems = verify_pack(root)
    for line in problems:
        sys.stdout.write(line + "\n")
    if problems:
        note(f"bedkd data verify: {root}: {len(problems)} problem(s)")
        return 2
    note(f"{root}: all {len(load_manifest())} files match the pack checksums")
    return 0
