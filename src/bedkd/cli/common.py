"""Flags and helpers shared by several commands."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..data import read_labeled
from ..errors import BedkdError

DATA_DIR_ENV = "BEDKD_DATA_DIR"


def add_model_flags(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="model directory (or hub id when online)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading a pickle checkpoint (pytorch_model.bin); only for models you trust")


def add_output_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", required=True, help=what)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def data_dir(value: str | None) -> Path:
    """The benchmark data directory, from ``--data-dir`` or ``$BEDKD_DATA_DIR``."""
    raw = value or os.environ.get(DATA_DIR_ENV)
    if not raw:
        raise BedkdError(f"no data directory: pass --data-dir or set {DATA_DIR_ENV}")
    path = Path(raw)
    if not path.is_dir():
        raise BedkdError(f"{path}: data directory not found")
    return path


def load(path):
    return read_labeled(path)


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=None, sort_keys=True) + "\n")


def note(message: str) -> None:
    sys.stderr.write(message + "\n")
