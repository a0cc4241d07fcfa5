"""``bedkd.provenance``: file hashes, the code version in and outside a checkout, the record."""
from __future__ import annotations

import hashlib
import shutil

from bedkd import __version__, provenance
from bedkd.provenance import environment as machine


def test_sha256_file_and_file_hashes(tmp_path):
    a = tmp_path / "data" / "a.tsv"
    a.parent.mkdir()
    a.write_bytes(b"sentence\tlabel\nhi\t1\n")
    (tmp_path / "data" / "sub").mkdir()
    (tmp_path / "data" / "sub" / "b.txt").write_bytes(b"b")
    assert provenance.sha256_file(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    a.write_bytes(b"changed, and longer than before")       # a changed file is hashed again
    assert provenance.sha256_file(a) == hashlib.sha256(b"changed, and longer than before").hexdigest()
    hashes = provenance.file_hashes([a, tmp_path / "data" / "sub", None, "org/hub-model"], root=tmp_path / "data")
    assert hashes == {"a.tsv": provenance.sha256_file(a), "sub/b.txt": hashlib.sha256(b"b").hexdigest(),
                      "org/hub-model": None}
    assert list(provenance.file_hashes([a])) == [str(a)]          # no root: the path as given


def test_code_version_of_this_checkout():
    v = provenance.code_version()
    assert v["bedkd"] == __version__ and len(v["source_sha256"]) == 64
    assert v["code_version"] == provenance.code_version_id(v)
    if v["commit"] != provenance.UNKNOWN:
        assert len(v["commit"]) == 40 and isinstance(v["dirty"], bool)


def test_code_version_id_pins_the_source_unless_a_clean_commit_does():
    base = {"bedkd": "1.2.3", "commit": "a" * 40, "dirty": False, "source_sha256": "b" * 64}
    assert provenance.code_version_id(base) == "1.2.3+" + "a" * 12
    assert provenance.code_version_id({**base, "dirty": True}) == "1.2.3+" + "a" * 12 + ".dirty-" + "b" * 12
    assert provenance.code_version_id({**base, "commit": "unknown", "dirty": None}) == "1.2.3+unknown.src-" + "b" * 12


def test_code_version_outside_a_checkout_is_unknown(tmp_path, monkeypatch):
    copy = tmp_path / "site-packages" / "bedkd"
    shutil.copytree(provenance.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE_DIR", copy)
    v = provenance.code_version.__wrapped__()                 # not the cached value of this process
    assert v["commit"] == "unknown" and v["dirty"] is None
    assert v["code_version"].startswith(f"{__version__}+unknown.src-")
    (copy / "extra.py").write_text("x = 1\n")                 # other source, other version
    assert provenance.code_version.__wrapped__()["code_version"] != v["code_version"]


def test_record_has_code_machine_and_files(tmp_path):
    f = tmp_path / "x.tsv"
    f.write_text("sentence\tlabel\n")
    rec = provenance.record(files=[f, None], root=tmp_path)
    for key in ("bedkd", "commit", "dirty", "code_version", "python", "torch", "transformers", "device",
                "platform", "cpu_count", "torch_threads"):
        assert key in rec, key
    assert rec["device"].startswith(("cpu", "cuda")) and rec["files"] == {"x.tsv": provenance.sha256_file(f)}
    assert {"platform", "torch", "torch_threads"} <= set(machine())


def test_the_record_names_the_cpu_model_and_torchs_vector_level(monkeypatch, tmp_path):
    trained = provenance.trained_on()
    assert {"cpu_model", "cpu_capability"} <= set(trained)
    import torch
    assert trained["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    real_path = provenance.Path
    monkeypatch.setattr(provenance, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    assert provenance.cpu_model() == "AMD EPYC 9654 96-Core Processor"
    monkeypatch.setattr(provenance, "Path", lambda p: real_path(tmp_path / "missing"))
    assert provenance.cpu_model() == (provenance.platform.processor() or provenance.platform.machine())
