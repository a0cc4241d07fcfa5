"""``bedkd bench`` in operation: provenance and cache keys of data files, which earlier rows are
reused, early name checks, exit status 3, SIGINT/SIGTERM, lock files, full or unwritable disks;
and ``bedkd demo --out``. Cheap: the tiny random BERT of conftest, defenses faked where the defense
itself is not what is tested."""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bedkd import outputs, provenance
from bedkd.bench import runner
from bedkd.cli.main import main
from bedkd.errors import ConfigError
from bedkd.outputs import WriteError, atomic_write_text, file_lock

from test_bench import DATA, TINY, needs_data

RESUME = "finished cells are cached, rerun the same command to resume"


def tiny(out, backbone, *extra, data=DATA) -> list[str]:
    return ["bench", "--out", str(out), "--data-dir", str(data), "--backbone", str(backbone), *TINY, *extra]


def rows_of(out) -> list[dict]:
    return list(csv.DictReader((Path(out) / "results.csv").open()))


def fake_defense(spec, cell) -> dict:
    """Instant defense results: the victim's numbers for 'none', fixed ones for the others."""
    return {} if spec.name == "none" else {"cacc": 50.0, "asr": 10.0}


def one_line_error(err: str, command: str = "bench") -> str:
    assert err.count("\n") == 1 and err.startswith(f"bedkd {command}: error: "), err
    return err


# -- provenance and victim keys ---------------------------------------------------------------------
@needs_data
def test_paraphrase_victim_keys_follow_file_content_and_results_record_data_hashes(tiny_model_dir, tmp_path):
    pack = tmp_path / "pack"
    for sub in ("clean", "syntactic", "syntactic-all", "style-bible"):
        shutil.copytree(DATA / "sst2" / sub, pack / "sst2" / sub)

    def run(data, name):
        out = tmp_path / "out" / name
        assert main(tiny(out, tiny_model_dir, "--attacks", "synbkd", "stylebkd", "--defenses", "none",
                         "--report-only", data=data)) == 0
        saved = json.loads((out / "results.json").read_text())
        return {r["attack"]: r["victim_key"] for r in saved["rows"]}, saved["meta"], out

    keys, meta, out = run(pack, "first")
    sums = dict(reversed(line.split()) for line in (DATA / "SHA256SUMS").read_text().splitlines() if line.strip())
    read = ["sst2/clean/train.tsv", "sst2/clean/dev.tsv", "sst2/clean/test.tsv", "sst2/syntactic-all/train.tsv",
            "sst2/syntactic/test.tsv", "sst2/style-bible/train.tsv", "sst2/style-bible/test.tsv"]
    assert meta["provenance"]["files"] == {"sst2": {name: sums[name] for name in read}}
    code = provenance.code_version()["code_version"]
    assert meta["code_version"] == meta["provenance"]["code_version"] == code
    assert {"commit", "dirty", "python", "torch", "transformers", "device", "cpu_count"} <= set(meta["provenance"])
    assert f"Code version: {code}" in (out / "results.md").read_text()

    moved = tmp_path / "moved"                   # the same files elsewhere: the same victims
    shutil.copytree(pack, moved)
    assert run(moved, "moved")[0] == keys

    def edit(path: Path):                        # one paraphrase changes, its label stays
        lines = path.read_text().splitlines(keepends=True)
        lines[5] = "an edited paraphrase " + lines[5]
        path.write_text("".join(lines))

    edit(moved / "sst2" / "syntactic-all" / "train.tsv")
    after = run(moved, "synbkd-edited")[0]
    assert after["synbkd"] != keys["synbkd"] and after["stylebkd"] == keys["stylebkd"]
    edit(moved / "sst2" / "style-bible" / "test.tsv")
    assert run(moved, "style-edited")[0]["stylebkd"] != keys["stylebkd"]


# -- reuse rules ------------------------------------------------------------------------------------
@needs_data
def test_reused_rows_and_cached_cells_need_their_victim_key_and_code_version(tiny_model_dir, tmp_path):
    out = tmp_path / "o"
    args = tiny(out, tiny_model_dir, "--defenses", "none")
    assert main(args) == 0
    saved = json.loads((out / "results.json").read_text())
    row = saved["rows"][0]
    assert row["victim_key"] and row["code_version"] == provenance.code_version()["code_version"]
    assert rows_of(out)[0]["victim_key"] == row["victim_key"]

    # a cached cell of another code version is computed again, unless any version is allowed
    cell_file = out / "work" / "cells" / "sst2" / "badnets" / row["victim_key"] / "none.json"
    cell = json.loads(cell_file.read_text())
    cell["row"]["code_version"] = "0.0.1+0123456789ab"
    cell_file.write_text(json.dumps(cell))
    (out / "results.json").unlink()
    assert main([*args, "--report-only"]) == 0
    assert [r["status"] for r in rows_of(out)] == [runner.NOT_RUN]
    assert main([*args, "--report-only", "--reuse-any-version"]) == 0
    assert [(r["status"], r["code_version"]) for r in rows_of(out)] == [("ok", "0.0.1+0123456789ab")]
    cell_file.rename(cell_file.parent.parent / "none.json")           # the layout before victim-key folders
    assert main([*args, "--report-only", "--reuse-any-version"]) == 0
    assert [r["status"] for r in rows_of(out)] == ["ok"]

    # rows of results.json alone
    shutil.rmtree(out / "work")

    def rerun(earlier: dict, *extra) -> list[str]:
        (out / "results.json").write_text(json.dumps({**saved, "rows": [earlier]}))
        assert main([*args, "--report-only", *extra]) == 0
        return [r["status"] for r in json.loads((out / "results.json").read_text())["rows"]]

    assert rerun(row) == ["ok"]                                        # same victim, same code
    other_code = {**row, "code_version": "0.0.1+0123456789ab"}
    assert rerun(other_code) == [runner.NOT_RUN]
    assert rerun(other_code, "--reuse-any-version") == ["ok"]
    assert json.loads((out / "results.json").read_text())["rows"][0]["code_version"] == "0.0.1+0123456789ab"
    assert rerun({**row, "victim_key": "0" * 16}, "--reuse-any-version") == [runner.NOT_RUN]   # another victim
    legacy = {k: v for k, v in row.items() if k not in ("victim_key", "code_version")}
    assert rerun(legacy, "--reuse-any-version") == [runner.NOT_RUN]   # written before keys were recorded


# -- names ------------------------------------------------------------------------------------------
@needs_data
@pytest.mark.parametrize("flags, message", [
    (["--datasets", "sst2", "sstt2"], "unknown dataset 'sstt2'; choose from sst2, olid, agnews"),
    (["--attacks", "badnets", "badnet"],
     "unknown attack 'badnet'; choose from clean, badnets, addsent, synbkd, stylebkd, ep, sos"),
    (["--defenses", "none", "bedk"], "unknown defense 'bedk'; choose from none, bedkd, finetune"),
    (["--attacks", "stylebkd", "--attack-style", "bibel"],
     "unknown style 'bibel': no dataset has its train and test paraphrases; "
     "choose from sst2: bible, lyrics, poetry, shakespeare"),
    (["--attacks", "badnets", "--attack-style", "bible"], "style 'bible' is used only by stylebkd"),
])
def test_bench_fails_on_a_bad_name_before_reading_or_training(flags, message, tmp_path, monkeypatch, capsys):
    def forbidden(*args, **kwargs):
        raise AssertionError("nothing may be read or trained")

    monkeypatch.setattr(runner, "load_dataset", forbidden)
    monkeypatch.setattr(runner, "train_victim", forbidden)
    out = tmp_path / "o"
    assert main(["bench", "--out", str(out), "--data-dir", str(DATA), "--datasets", "sst2", *flags]) == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert not out.exists()


@needs_data
def test_a_style_one_datasets_pack_lacks_skips_that_cell_only(tiny_model_dir, tmp_path):
    # the pack has OLID's poetry paraphrases for the dev split only (its README, section 6)
    pack = tmp_path / "pack"
    for ds, sub in (("sst2", "clean"), ("sst2", "style-poetry"), ("olid", "clean")):
        shutil.copytree(DATA / ds / sub, pack / ds / sub)
    (pack / "olid" / "style-poetry").mkdir()
    shutil.copy(DATA / "olid" / "style-poetry" / "dev.tsv", pack / "olid" / "style-poetry" / "dev.tsv")
    out = tmp_path / "o"
    assert main(tiny(out, tiny_model_dir, "--datasets", "sst2", "olid", "--attacks", "stylebkd",
                     "--attack-style", "poetry", "--defenses", "none", "--report-only", "--allow-skipped",
                     data=pack)) == 0
    status = {r["dataset"]: r["status"] for r in rows_of(out)}
    assert status["sst2"] == runner.NOT_RUN
    assert status["olid"].startswith("skipped: stylebkd: ") and "style-poetry/train.tsv is missing" in status["olid"]
    assert status["olid"].endswith("with train and test paraphrases: (none)")    # this pack has no other olid style


# -- exit status ------------------------------------------------------------------------------------
@needs_data
def test_a_failed_cell_gives_exit_status_3_and_runs_again_next_time(tiny_model_dir, tmp_path, monkeypatch, capsys):
    def failing(spec, cell):
        if spec.name == "bedkd":
            raise ConfigError("this defense cannot run here")
        return fake_defense(spec, cell)

    monkeypatch.setattr(runner, "run_defense", failing)
    out = tmp_path / "f"
    assert main(tiny(out, tiny_model_dir)) == 3
    assert [(r["defense"], r["status"]) for r in rows_of(out)] == [("none", "ok"),
                                                                   ("bedkd", "failed: this defense cannot run here")]
    assert "1 of 2 rows skipped or failed (sst2/badnets/bedkd): exit status 3" in capsys.readouterr().err
    assert main([*tiny(out, tiny_model_dir), "--allow-skipped"]) == 0
    monkeypatch.setattr(runner, "run_defense", fake_defense)
    assert main(tiny(out, tiny_model_dir)) == 0                        # a failed cell is not cached
    assert [r["status"] for r in rows_of(out)] == ["ok", "ok"]


# -- signals ----------------------------------------------------------------------------------------
HANGING_BENCH = """
import sys, time
from bedkd.bench import runner
from bedkd.cli.main import main
real = runner.run_defense
def hang(spec, cell):
    if spec.name == "bedkd":
        print("HANGING", file=sys.stderr, flush=True)
        time.sleep(300)
    return real(spec, cell)
runner.run_defense = hang
sys.exit(main(sys.argv[1:]))
"""


@needs_data
@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_ends_the_bench_with_one_line_and_the_rerun_resumes(sig, status, tiny_model_dir, tmp_path,
                                                                      monkeypatch):
    out = tmp_path / "s"
    # SIG_DFL first: a suite started in the background (``cmd &``) inherits an ignored SIGINT, and
    # Python then installs no KeyboardInterrupt handler in the child
    proc = subprocess.Popen([sys.executable, "-c", HANGING_BENCH, *tiny(out, tiny_model_dir)[:]],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while "HANGING\n" not in lines:          # the victim and the 'none' cell are done; 'bedkd' runs
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.2)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == status
    reader.join(timeout=10)
    name = signal.Signals(sig).name
    assert lines[-1] == f"bedkd bench: interrupted ({name}); {RESUME}\n", "".join(lines)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]        # no half-written file left
    [cells] = (out / "work" / "cells" / "sst2" / "badnets").iterdir()      # the victim's folder
    assert (cells / "none.json").is_file() and not (cells / "bedkd.json").exists()

    trained, computed = [], []
    monkeypatch.setattr(runner, "train_victim", lambda *a: trained.append(a))
    monkeypatch.setattr(runner, "run_defense", lambda spec, cell: computed.append(spec.name) or fake_defense(spec, cell))
    # (any version: another engineer's edit of the source between the two processes must not matter here)
    assert main([*tiny(out, tiny_model_dir), "--reuse-any-version"]) == 0
    assert trained == [] and computed == ["bedkd"]
    assert [r["status"] for r in rows_of(out)] == ["ok", "ok"]


def test_sigterm_handler_is_restored_after_a_command(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    main(["bench", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path), "--defenses", "magic"])
    assert signal.getsignal(signal.SIGTERM) is before


# -- locks ------------------------------------------------------------------------------------------
def test_file_lock_makes_another_process_wait(tmp_path):
    lock = tmp_path / "locks" / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom bedkd.outputs import file_lock\n"
                               "with file_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(1.5)\n",
                               str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    waited = []
    start = time.monotonic()
    with file_lock(lock, on_wait=lambda: waited.append(True)):
        elapsed = time.monotonic() - start
    assert holder.wait(timeout=30) == 0
    assert waited == [True] and elapsed > 0.5


@needs_data
def test_two_runs_sharing_a_workdir_train_each_victim_and_compute_each_cell_once(tiny_model_dir, tmp_path,
                                                                                  monkeypatch, capsys):
    trained, computed = [], []
    real_victim = runner.train_victim

    def slow_victim(attack, *rest):
        trained.append(attack.name)
        time.sleep(2)
        return real_victim(attack, *rest)

    def slow_defense(spec, cell):
        computed.append(spec.name)
        time.sleep(1)
        return fake_defense(spec, cell)

    monkeypatch.setattr(runner, "train_victim", slow_victim)
    monkeypatch.setattr(runner, "run_defense", slow_defense)
    work = tmp_path / "shared-work"
    status = {}

    def run(name):
        status[name] = main([*tiny(tmp_path / name, tiny_model_dir), "--workdir", str(work)])

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert status == {"a": 0, "b": 0}
    assert sorted(trained) == ["badnets", "clean"] and sorted(computed) == ["bedkd", "none"]
    assert "waiting for another run" in capsys.readouterr().err
    assert rows_of(tmp_path / "a") == rows_of(tmp_path / "b")


# -- full or unwritable disks -----------------------------------------------------------------------
class FullDisk:
    """A file whose writes fail as on a full disk."""

    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def full_disk(monkeypatch):
    monkeypatch.setattr(outputs, "open", lambda path, mode: FullDisk(open(path, mode)), raising=False)


def test_a_full_disk_gives_a_write_error_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "cells" / "x.json"
    full_disk(monkeypatch)
    with pytest.raises(WriteError, match=r"x\.json: cannot write \(No space left on device\)"):
        atomic_write_text(target, "{}")
    assert list(target.parent.iterdir()) == []


def test_bench_on_a_full_disk_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    full_disk(monkeypatch)
    assert main(["bench", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path)]) == 2
    assert "bench.json: cannot write (No space left on device)" in one_line_error(capsys.readouterr().err)


def read_only(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    if os.access(path, os.W_OK):
        path.chmod(0o755)
        pytest.skip("chmod does not stop this user's writes (root)")
    return path


def test_an_unwritable_out_directory_exits_2_with_one_line(tmp_path, capsys):
    parent = read_only(tmp_path / "ro")
    try:
        assert main(["bench", "--out", str(parent / "bench"), "--data-dir", str(tmp_path)]) == 2
    finally:
        parent.chmod(0o755)
    assert "cannot write (Permission denied)" in one_line_error(capsys.readouterr().err)


@needs_data
def test_an_unwritable_cache_exits_2_with_one_line_before_training(tiny_model_dir, tmp_path, monkeypatch, capsys):
    def no_training(*args):
        raise AssertionError("must fail before training")

    monkeypatch.setattr(runner, "train_victim", no_training)
    work = tmp_path / "work"
    work.mkdir()
    (work / "bench.json").write_text("{}\n")           # an earlier run's workdir ...
    victims = read_only(work / "victims")              # ... whose victim cache cannot take a new victim
    try:
        assert main([*tiny(tmp_path / "o", tiny_model_dir), "--workdir", str(work)]) == 2
    finally:
        victims.chmod(0o755)
    err = one_line_error(capsys.readouterr().err)
    assert f"{victims}/" in err and ".lock: cannot write (Permission denied)" in err


# -- demo -------------------------------------------------------------------------------------------
def fake_bedkd(spec, cell) -> dict:
    return fake_defense(spec, cell) if spec.name == "none" else {
        "cacc": 89.0, "asr": 5.0, "selected_epoch": 1, "backdoor_found": True, "target_found": 1, "trigger_found": "cf",
        "detection": {"flagged": 10, "kept": 3, "flagged_precision": 60.0, "kept_precision": 100.0},
        "seconds": {"total": 2.0, "dmm": 1.0, "scan": 0.1, "akd": 0.9}}


@needs_data
def test_demo_is_a_one_cell_bench_run_with_its_table_and_provenance(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_defense", fake_bedkd)      # the defense itself is tested elsewhere
    out = tmp_path / "demo"
    argv = ["demo", "--data-dir", str(DATA), "--out", str(out), "--backbone", str(tiny_model_dir), "--limit", "40",
            "--epochs", "1", "--preset", "guarded", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "after BeDKD (guarded)" in printed and printed.strip() in (out / "table.md").read_text()
    assert "scan: backdoor found, target 1, trigger 'cf'" in printed and "precision 60.0%" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["meta"]["command"] == "bedkd " + " ".join(argv)
    assert [(r["dataset"], r["attack"], r["defense"]) for r in saved["rows"]] == [("sst2", "badnets", "none"),
                                                                               ("sst2", "badnets", "bedkd")]
    assert saved["meta"]["setup"]["preset"] == "guarded" and saved["meta"]["setup"]["train_limit"] == 40
    sums = dict(reversed(line.split()) for line in (DATA / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert saved["meta"]["provenance"]["files"]["sst2"] == {f"sst2/clean/{s}.tsv": sums[f"sst2/clean/{s}.tsv"]
                                                            for s in ("train", "dev", "test")}
    assert saved["meta"]["provenance"]["code_version"] == provenance.code_version()["code_version"]
    victim = saved["rows"][0]
    assert f"{victim['victim_cacc']:.2f}" in printed and f"{victim['floor_asr']:.2f}" in printed

    assert main(argv) == 0                                             # rerun: resumed from the cache
    assert "all 2 rows cached or reused" in capsys.readouterr().err
    assert main(argv[:3] + argv[5:]) == 0                              # without --out: the table only
    assert "after BeDKD" in capsys.readouterr().out


@needs_data
def test_runs_of_other_seeds_sharing_a_workdir_keep_their_own_cells(tiny_model_dir, tmp_path, monkeypatch):
    computed = []
    monkeypatch.setattr(runner, "run_defense", lambda spec, cell: computed.append(spec.name) or fake_defense(spec, cell))
    work = tmp_path / "w"
    for seed in ("0", "1", "0"):                      # the third run finds the first one's cells
        assert main([*tiny(tmp_path / f"o{seed}", tiny_model_dir), "--workdir", str(work), "--seed", seed]) == 0
    assert computed == ["none", "bedkd", "none", "bedkd"]      # the third run computed nothing
    assert len(list((work / "cells" / "sst2" / "badnets").iterdir())) == 2
