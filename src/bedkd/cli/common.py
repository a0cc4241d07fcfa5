"""Flags and helpers shared by several commands."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..attacks import ATTACK_OPTIONS, AttackConfig
from ..data import read_labeled
from ..errors import BedkdError
from ..options import add_options, options_from_args

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


def add_attack_options(p: argparse.ArgumentParser, prefix: str = "", exclude: tuple[str, ...] = ()) -> None:
    """AttackConfig flags (``--<prefix>rate`` ...) and each attack's own (``--ep-epochs`` ...)."""
    add_options(p, AttackConfig, prefix=prefix, exclude=exclude)
    for name, cls in ATTACK_OPTIONS.items():
        add_options(p, cls, prefix=f"{name}-", exclude=exclude)


def attack_options_from_args(args, prefix: str = "", base: AttackConfig | None = None):
    """(AttackConfig, {attack name: its own options}) from the flags of :func:`add_attack_options`."""
    cfg = options_from_args(AttackConfig, args, prefix, base)
    return cfg, {name: options_from_args(cls, args, f"{name}-") for name, cls in ATTACK_OPTIONS.items()}


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
