"""``bedkd data fetch`` / ``verify``: download from a local HTTP server, normalise, check SHA-256.

Everything is served by an ``http.server`` on 127.0.0.1 from a tmp directory laid out as
``<repo>/<commit>/<source_path>``, built from a few real pack files; nothing leaves the machine.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bedkd.cli import main
from bedkd.errors import BedkdError, InputError
from bedkd.fetch import (DEFAULT_BASE_URL, PackFile, fetch_pack, load_manifest, normalise, select,
                         verify_pack)

PACK = Path(os.environ.get("BEDKD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")).resolve()
needs_pack = pytest.mark.skipif(not (PACK / "SHA256SUMS").is_file(),
                                reason=f"data pack not found at {PACK} (set BEDKD_DATA_DIR)")
REPO_ROOT = Path(__file__).resolve().parents[1]
SST2_DEV, SST2_TEST, SYN_DEV = "sst2/clean/dev.tsv", "sst2/clean/test.tsv", "sst2/syntactic/dev.tsv"
SMALL = [SST2_DEV, SST2_TEST, SYN_DEV]


def entry(pack_path: str) -> PackFile:
    return select(load_manifest(), files=[pack_path])[0]


def as_source(data: bytes) -> bytes:
    """De-normalise a pack file the way README section 1 says the sources were written."""
    lines = data.decode("utf-8").split("\n")[:-1]
    return "\r\n".join(line.replace("\t", " \t ") for line in lines).encode("utf-8")


def serve_path(root: Path, pack_path: str) -> Path:
    e = entry(pack_path)
    path = root / e.repo / e.commit / e.source_path
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class Server:
    """A local static server that records the paths it was asked for."""

    def __init__(self, root: Path):
        self.root, self.requests = root, []
        log = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                log.append(self.path)
                super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    srv = Server(root)
    yield srv
    srv.close()


@pytest.fixture
def small_server(server):
    """Serves the three SMALL files: sst2 clean dev in source format, the others as in the pack."""
    if not (PACK / "SHA256SUMS").is_file():
        pytest.skip(f"data pack not found at {PACK} (set BEDKD_DATA_DIR)")
    serve_path(server.root, SST2_DEV).write_bytes(as_source((PACK / SST2_DEV).read_bytes()))
    for name in (SST2_TEST, SYN_DEV):
        shutil.copyfile(PACK / name, serve_path(server.root, name))
    return server


def refused_url() -> str:
    """A 127.0.0.1 URL on a port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- manifest -------------------------------------------------------------------------------------
@needs_pack
def test_manifest_is_current_and_matches_pack_checksums():
    spec = importlib.util.spec_from_file_location("make_pack_manifest", REPO_ROOT / "scripts" / "make_pack_manifest.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rows = gen.build_rows((PACK / "README.md").read_text(encoding="utf-8"), gen.read_sums(PACK / "SHA256SUMS"))
    shipped = (REPO_ROOT / "src" / "bedkd" / "resources" / "pack_manifest.tsv").read_text(encoding="utf-8")
    assert gen.render(rows) == shipped, "run scripts/make_pack_manifest.py"
    manifest = load_manifest()
    sums = dict(line.split()[::-1] for line in (PACK / "SHA256SUMS").read_text().splitlines())
    assert {e.pack_path: e.sha256 for e in manifest} == sums
    assert all(len(e.commit) == 40 and e.repo.startswith("thunlp/") for e in manifest)
    assert [e.pack_path for e in manifest if e.quoting == "csv"] == ["olid/syntactic/train.tsv"]
    assert entry(SST2_DEV).url() == (f"{DEFAULT_BASE_URL}/thunlp/HiddenKiller/"
                                     "a08e959e228327baa0c2906bf943e99a3c89961c/data/clean/sst-2/dev.tsv")


# -- normalisation --------------------------------------------------------------------------------
@needs_pack
def test_normalise_reverses_the_source_format_and_is_idempotent():
    for name in (SST2_DEV, "olid/syntactic/train.tsv"):
        e = entry(name)
        pack = (PACK / name).read_bytes()
        again = normalise(pack, e.quoting, name)
        assert again.data == pack and again.rows == e.rows and again.csv_decoded == 0
        assert normalise(as_source(pack), e.quoting, name).data == pack
    # olid/syntactic/train: 777 rows CSV-quoted in the source, and clean copies with two trailing spaces
    pack = (PACK / "olid/syntactic/train.tsv").read_bytes()
    lines = pack.decode("utf-8").split("\n")[:-1]
    quoted = [(f'"{s.replace(chr(34), 2 * chr(34))}"' if '"' in s else s) + "  \t " + label
              for s, label in (line.split("\t") for line in lines[1:])]
    result = normalise(("sentence \t label\r\n" + "\r\n".join(quoted) + "\r\n").encode(), "csv")
    assert result.data == pack and result.csv_decoded == 777
    # the same bytes are left alone where quoting is not CSV (every other file)
    assert normalise(b'sentence\tlabel\n"a ""b"""\t1\n').data == b'sentence\tlabel\n"a ""b"""\t1\n'


def test_normalise_trims_spaces_only_and_names_bad_lines():
    raw = "sentence \t label\r\nkeeps nbsp\u00a0 \t 1\r\n  \t 0\r\nnel\u0085inside\t1".encode()
    assert normalise(raw).data == "sentence\tlabel\nkeeps nbsp\u00a0\t1\n\t0\nnel\u0085inside\t1\n".encode()
    with pytest.raises(InputError, match=r"x\.tsv:3: expected sentence<TAB>label, found 0 TABs"):
        normalise(b"sentence\tlabel\na\t1\nno tab here\n", name="x.tsv")
    with pytest.raises(InputError, match=r":2: label 'pos' is not an integer"):
        normalise(b"sentence\tlabel\na\tpos\n")
    with pytest.raises(InputError, match=r":1: first line is not a sentence/label header"):
        normalise(b"a\t1\n")


# -- fetch ----------------------------------------------------------------------------------------
def test_fetch_subset_matches_pack_and_resumes(small_server, tmp_path):
    out = tmp_path / "pack"
    report = fetch_pack(out, base_url=small_server.url, files=SMALL, progress=False)
    assert sorted(report.downloaded) == sorted(SMALL) and report.skipped == []
    for name in SMALL:
        got = (out / name).read_bytes()
        assert got == (PACK / name).read_bytes()
        assert hashlib.sha256(got).hexdigest() == entry(name).sha256
        assert got.count(b"\n") - 1 == entry(name).rows
    assert len(small_server.requests) == 3
    assert not list(out.rglob(".*tmp*"))
    # the de-normalised dev file is not the README's source blob: said in the notes
    assert any(n.startswith(f"{SST2_DEV}: served file is not the README's source blob") for n in report.notes)

    again = fetch_pack(out, base_url=small_server.url, files=SMALL, progress=False)
    assert again.downloaded == [] and sorted(again.skipped) == sorted(SMALL)
    assert len(small_server.requests) == 3           # nothing downloaded the second time
    assert verify_pack(out, files=SMALL) == []


def test_checksum_mismatch_names_both_hashes_and_leaves_no_file(small_server, tmp_path):
    served = serve_path(small_server.root, SST2_TEST)
    served.write_bytes(served.read_bytes().replace(b"\t0\n", b"\t1\n", 1))   # one flipped label
    got = hashlib.sha256(served.read_bytes()).hexdigest()
    out = tmp_path / "pack"
    with pytest.raises(BedkdError) as err:
        fetch_pack(out, base_url=small_server.url, files=[SST2_TEST], progress=False)
    msg = str(err.value)
    assert SST2_TEST in msg and entry(SST2_TEST).sha256 in msg and got in msg and "not written" in msg
    assert "not the README's 5b6ee8ff4f" in msg
    assert not (out / SST2_TEST).exists()
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_existing_wrong_file_needs_overwrite(small_server, tmp_path):
    out = tmp_path / "pack"
    (out / "sst2/clean").mkdir(parents=True)
    (out / SST2_DEV).write_text("sentence\tlabel\nstale\t0\n")
    with pytest.raises(BedkdError, match=r"1 existing file\(s\) differ from the pack \(sst2/clean/dev.tsv\); "
                                         r"pass --overwrite"):
        fetch_pack(out, base_url=small_server.url, files=SMALL, progress=False)
    assert small_server.requests == []               # refused before any download
    report = fetch_pack(out, base_url=small_server.url, files=[SST2_DEV], overwrite=True, progress=False)
    assert report.downloaded == [SST2_DEV]
    assert (out / SST2_DEV).read_bytes() == (PACK / SST2_DEV).read_bytes()


def test_clear_errors_for_404_refused_connection_and_bad_out_dir(server, tmp_path):
    with pytest.raises(BedkdError, match=r"/data/clean/sst-2/train\.tsv: not found \(HTTP 404\)") as err:
        fetch_pack(tmp_path / "a", base_url=server.url, files=["sst2/clean/train.tsv"], progress=False)
    assert server.url in str(err.value) and not (tmp_path / "a" / "sst2").exists()
    base = refused_url()
    with pytest.raises(BedkdError, match="cannot reach the server") as err:
        fetch_pack(tmp_path / "b", base_url=base, files=[SST2_DEV], progress=False, timeout=5)
    assert f"{base}/thunlp/HiddenKiller/" in str(err.value)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(BedkdError, match="exists and is not a directory"):
        fetch_pack(a_file, base_url=server.url, files=[SST2_DEV], progress=False)
    with pytest.raises(BedkdError, match="unknown dataset imdb; choose from agnews, olid, sst2"):
        fetch_pack(tmp_path / "c", base_url=server.url, datasets=["imdb"], progress=False)


# -- command line ---------------------------------------------------------------------------------
@needs_pack
def test_cli_fetch_dataset_then_verify_reports_tampering(server, tmp_path, capsys):
    sst2 = select(load_manifest(), datasets=["sst2"])
    for e in sst2:                                      # pack files are already normalised
        os.symlink(PACK / e.pack_path, serve_path(server.root, e.pack_path))
    out = tmp_path / "pack"
    assert main(["data", "fetch", "--out", str(out), "--base-url", server.url, "--dataset", "sst2", "--quiet"]) == 0
    assert f"{len(sst2)} file(s) downloaded and verified" in capsys.readouterr().err
    assert verify_pack(out, datasets=["sst2"]) == []

    # verify the whole pack: olid/agnews missing, one sst2 file tampered
    (out / SST2_TEST).write_bytes((out / SST2_TEST).read_bytes() + b"extra\t1\n")
    assert main(["data", "verify", "--data-dir", str(out)]) == 2
    captured = capsys.readouterr()
    problems = captured.out.splitlines()
    assert f"{SST2_TEST}: SHA-256 {hashlib.sha256((out / SST2_TEST).read_bytes()).hexdigest()}, " \
           f"expected {entry(SST2_TEST).sha256}" in problems
    assert "olid/clean/train.tsv: missing" in problems
    assert len(problems) == 1 + len(load_manifest()) - len(sst2)
    assert "problem(s)" in captured.err

    assert main(["data", "verify", "--data-dir", str(PACK)]) == 0
    assert f"all {len(load_manifest())} files match" in capsys.readouterr().err
    assert main(["data", "fetch", "--out", str(tmp_path / "x"), "--base-url", refused_url(),
                 "--dataset", "olid", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bedkd data: error: http://127.0.0.1:") and "cannot reach" in err
