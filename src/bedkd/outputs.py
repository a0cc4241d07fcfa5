"""Output directories and files that appear whole or not at all, never clobber user files by
accident, and fail with one line (not a traceback) on a full disk or an unwritable folder."""
from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from .errors import BedkdError


class WriteError(BedkdError):
    """A write failed for a reason outside bedkd: full disk, no permission, read-only file system."""

    def __init__(self, path, exc: Exception):
        reason = getattr(exc, "strerror", None) or str(exc)
        super().__init__(f"{path}: cannot write ({reason})")


def _is_write_failure(exc: Exception) -> bool:
    # safetensors reports a failed model write as SafetensorError("... I/O error: No space left ...")
    return isinstance(exc, OSError) or (type(exc).__name__ == "SafetensorError" and "I/O error" in str(exc))


@contextlib.contextmanager
def writing(path):
    """Turn an ``OSError`` of the writes in the block (or safetensors' I/O error) into a
    :class:`WriteError` naming ``path``."""
    try:
        yield
    except Exception as exc:
        if _is_write_failure(exc):
            raise WriteError(path, exc) from None
        raise


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
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        with writing(out):
            _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, then rename it over ``path``: readers (and a rerun
    after an interruption) see the old file or the new one, never half of one."""
    path = Path(path)
    tmp = None
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")   # unique per writer
            with open(tmp, "xb") as fh:
                fh.write(data)
            os.replace(tmp, path)
            tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def file_lock(path, on_wait=None):
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block. Another process,
    or another thread with its own lock, blocks until it is released; ``on_wait()`` is called
    once before blocking. The lock file is left in place (deleting it would race)."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()      # releases the lock


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
