"""``bedkd`` command line: user errors become one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import BedkdError
from . import bench_cmd, commands, data_cmd, demo, lm_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bedkd", description="Remove backdoors from text classifiers (BeDKD).",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"bedkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (commands.add_attack, commands.add_train, commands.add_detect, commands.add_purify,
                commands.add_evaluate, demo.add_demo, bench_cmd.add_bench, data_cmd.add_data,
                lm_cmd.add_lm):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except BedkdError as exc:
        sys.stderr.write(f"bedkd {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"bedkd {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
