"""``bedkd`` command line: user errors become one line on stderr and exit status 2.

SIGINT and SIGTERM end a command with one line and exit status 130 / 143; both unwind the stack as
an exception, so that temporary outputs are removed and every cache keeps only whole files.
``bedkd bench`` also exits with 3 when some rows were skipped or failed (see ``bench_cmd``).
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from .. import __version__
from ..errors import BedkdError
from . import bench_cmd, commands, data_cmd, demo, lm_cmd


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler: unwinds like Ctrl-C (``finally`` blocks and cleanups run)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bedkd", description="Remove backdoors from text classifiers (BeDKD).",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"bedkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (commands.add_attack, commands.add_train, commands.add_detect, commands.add_purify, commands.add_scan,
                commands.add_evaluate, demo.add_demo, bench_cmd.add_bench, data_cmd.add_data,
                lm_cmd.add_lm):
        add(sub)
    return parser


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)     # a second SIGTERM must not cut the cleanup short
    raise Terminated()


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises :class:`Terminated` while the command runs (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        with _sigterm_raises():
            return args.run(args)
    except BedkdError as exc:
        sys.stderr.write(f"bedkd {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt as exc:
        name, status = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("SIGINT", 130)
        hint = getattr(args, "interrupted_hint", None)
        sys.stderr.write(f"bedkd {args.command}: interrupted ({name})" + (f"; {hint}" if hint else "") + "\n")
        return status


if __name__ == "__main__":
    sys.exit(main())
