"""Where a result came from: the code version, the machine and the SHA-256 of the files it read.

``record(files=[...])`` is what result files embed (bench ``results.json``, purify ``report.json``,
demo ``demo.json``). The code version is the bedkd version plus the git commit of the source
checkout ("unknown" outside one); when the package source differs from that commit it is marked
dirty and identified by a hash of the source files, so that two runs compare equal only when they
ran the same code (:func:`code_version_id`).
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Iterable

from . import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
UNKNOWN = "unknown"


@functools.lru_cache(maxsize=256)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path) -> str:
    """Hex SHA-256 of a file's bytes (computed once per process while the file is unchanged)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def file_hashes(paths: Iterable, root=None) -> dict[str, str | None]:
    """``{name: sha256}`` of each file; a directory gives each file under it; a path that is not
    on disk (a hub id, a missing file) gives None. Names are relative to ``root`` when under it."""
    out: dict[str, str | None] = {}
    base = Path(root).resolve() if root is not None else None
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            out[_name(f, base)] = sha256_file(f) if f.is_file() else None
    return out


def _name(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.resolve().relative_to(base).as_posix()
        except ValueError:
            pass
    return str(path)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-c", f"safe.directory={PACKAGE_DIR.parents[1]}", "-C", str(PACKAGE_DIR), *args],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_sha256() -> str:
    """Hash of the package's source files (names and bytes; caches and bytecode left out)."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE_DIR.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
            h.update(f.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def code_version() -> dict:
    """``{bedkd, commit, dirty, source_sha256, code_version}``, computed once per process.

    ``commit`` is the HEAD of the git checkout the package is imported from ("unknown" when it is
    not tracked by one, e.g. an installed wheel); ``dirty`` says whether the package source
    (``src/bedkd``, untracked files included) differs from it (None when unknown)."""
    commit, dirty = UNKNOWN, None
    if _git("ls-files", "--error-unmatch", "__init__.py") is not None:     # tracked: a source checkout
        commit = _git("rev-parse", "HEAD") or UNKNOWN
        status = _git("status", "--porcelain", "--", ".")
        dirty = None if status is None else bool(status)
    source = source_sha256()
    out = {"bedkd": __version__, "commit": commit, "dirty": dirty, "source_sha256": source}
    return {**out, "code_version": code_version_id(out)}


def code_version_id(v: dict) -> str:
    """One string per code version: ``<bedkd version>+<commit>``, plus the source hash when the
    commit does not pin the code (dirty tree, or no checkout)."""
    if v["commit"] != UNKNOWN and v["dirty"] is False:
        return f"{v['bedkd']}+{v['commit'][:12]}"
    state = "dirty" if v["commit"] != UNKNOWN else "src"
    return f"{v['bedkd']}+{v['commit'][:12]}.{state}-{v['source_sha256'][:12]}"


def device() -> str:
    """The device models run on (``$BEDKD_DEVICE`` or CUDA when present), with the GPU's name."""
    import torch

    from .errors import BedkdError
    from .modeling.device import default_device
    try:
        dev = default_device()
    except BedkdError as exc:
        return f"invalid ({exc})"
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability() -> str | None:
    """The vector instructions torch's CPU kernels use (e.g. AVX512): they set the float rounding, so
    a model trained on another capability may not have the same digits."""
    import torch
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return get() if get is not None else None


def environment() -> dict:
    """Python, torch, transformers, device, platform, CPUs (model, count, torch's vector level) and
    torch threads."""
    import torch
    try:
        import transformers
        tf_version = transformers.__version__
    except ImportError:
        tf_version = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": tf_version,
            "device": device(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_model": cpu_model(),
            "cpu_capability": cpu_capability(), "cpu_count": os.cpu_count(),
            "cpus_usable": usable, "torch_threads": torch.get_num_threads()}


def trained_on() -> dict:
    """What a trained model's digits depend on beyond its seed: the device, torch's version, its
    thread count (float summation order) and the CPU's model and vector level (float rounding), and the
    code version."""
    env = environment()
    return {"device": env["device"], "torch": env["torch"], "torch_threads": env["torch_threads"],
            "cpu_model": env["cpu_model"], "cpu_capability": env["cpu_capability"],
            "code_version": code_version_id(code_version())}


def record(files: Iterable = (), root=None) -> dict:
    """Provenance of a result: :func:`code_version`, :func:`environment` and ``files``: the SHA-256
    of each input file read (directories: every file under them; None entries are skipped)."""
    return {**code_version(), **environment(), "files": file_hashes(files, root)}
