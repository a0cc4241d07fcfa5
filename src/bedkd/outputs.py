"""Output directories that appear whole or not at all, and never clobber user files by accident."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import BedkdError


def check_output_dir(out, overwrite: bool, protect: tuple = ()) -> Path:
    """Refuse a non-empty ``out`` unless ``overwrite``; never let ``out`` be one of ``protect``."""
    out = Path(out)
    for p in protect:
        if p and Path(p).exists():
            inp = Path(p).resolve()
            if inp == out.resolve() or out.resolve() in inp.parents:
                raise BedkdError(f"{out}: output would replace an input or a folder holding one ({p}); choose another directory")
    if out.exists() and not out.is_dir():
        raise BedkdError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise BedkdError(f"{out}: directory exists and is not empty; pass --overwrite to replace it")
    return out


def check_output_file(out, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not overwrite:
        raise BedkdError(f"{out}: file exists; pass --overwrite to replace it")
    if out.is_dir():
        raise BedkdError(f"{out}: is a directory")
    return out


@contextlib.contextmanager
def atomic_dir(out, overwrite: bool = False, protect: tuple = ()):
    """Yield a temporary sibling directory; on success it replaces ``out`` in one rename."""
    out = check_output_dir(out, overwrite, protect)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _replace_dir(new: Path, out: Path) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
