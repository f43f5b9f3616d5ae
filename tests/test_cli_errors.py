"""What reaches a user when a command stops: Ctrl-C is one line and exit 130 with the old output intact, a full
disk names the path being written, a damaged shard names the shard and the fix. Ctrl-C runs `gte` as a
subprocess in its own process group and signals the whole group, as a terminal does (the command and its worker
processes at once)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gte_model.core import pairs
from gte_model.core.atomic import write_text
from gte_model.core.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, INTERRUPTED
from tests.train.tinydata import ROOT, subprocess_env, tiny_args, write_tiny_pairs
from train.app.cli import main as gte
from train.checkpoint import list_checkpoints
from train.data import DataError, PairsData


def _rows(n: int, start: int = 0) -> str:
    return "".join(json.dumps({"q": f"question {i} about w{i}", "p": f"the answer {i} is w{i} and w{i + 1} here"})
                   + "\n" for i in range(start, start + n))


def _prep_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["prep", "configs/prep.yaml", "sources=[]", f"out_dir={out}", "decontaminate.enabled=false",
            f"files=[{{name: notes, path: {src}, query: q, positive: p}}]", *extra]


def _gte_process(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "train.app.cli", *args], cwd=ROOT, env=subprocess_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _interrupt(child: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C to the child's whole process group -> (exit code, stderr); a child that hangs fails the test."""
    os.killpg(child.pid, signal.SIGINT)
    try:
        _, err = child.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        pytest.fail(f"still running 120 s after Ctrl-C: {child.communicate()[1][-2000:]}")
    return child.returncode, err


def _wait_until(condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _blocked_on_pipe(pid: int) -> bool:
    wchan = Path(f"/proc/{pid}/wchan")
    return wchan.is_file() and "pipe" in wchan.read_text()


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs Linux /proc to see where prep waits")
def test_ctrl_c_in_prep_with_worker_processes_is_one_line_exit_130_and_keeps_the_old_output(tmp_path):
    src, out = tmp_path / "notes.jsonl", tmp_path / "pairs"
    src.write_text(_rows(60))
    assert gte(_prep_args(src, out)) == 0
    manifest = (out / pairs.MANIFEST_FILE).read_bytes()
    fifo = tmp_path / "more.jsonl"  # prep reads it while this test holds it open: stopped mid step 1, every time
    os.mkfifo(fifo)
    child = _gte_process(_prep_args(fifo, out, "overwrite=true", "num_proc=2", "batch_size=4"))
    with open(fifo, "w") as writer:
        writer.write(_rows(16))  # four tasks: both workers have started once prep waits on the pipe again
        writer.flush()
        _wait_until(lambda: _blocked_on_pipe(child.pid) or child.poll() is not None, "prep to read the pipe")
        time.sleep(1)
        _wait_until(lambda: _blocked_on_pipe(child.pid) or child.poll() is not None, "prep to read the pipe")
        code, err = _interrupt(child)
    assert code == EXIT_INTERRUPTED, err
    assert err.strip() == f"gte prep: {INTERRUPTED}" and "Traceback" not in err
    assert (out / pairs.MANIFEST_FILE).read_bytes() == manifest  # the old output, untouched
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_ctrl_c_in_training_is_one_line_exit_130_and_keeps_its_checkpoints(tmp_path):
    run, data = tmp_path / "run", write_tiny_pairs(tmp_path / "pairs")
    child = _gte_process(["train", *tiny_args(run, data, "train.max_steps=100000", "train.checkpoint_every=2",
                                              "train.eval_every=0", "data.val_rows=0",
                                              f"data.cache_dir={tmp_path / 'cache'}")])
    _wait_until(lambda: list_checkpoints(run) or child.poll() is not None, "the first checkpoint")
    code, err = _interrupt(child)
    assert code == EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1] == f"gte train: {INTERRUPTED}" and "Traceback" not in err
    steps = [step for step, _ in list_checkpoints(run)]  # complete checkpoints only: what a re-run resumes from
    assert steps and steps[0] >= 2
    assert not (run / "export").exists()


@pytest.mark.parametrize("stage", [True, False], ids=["staging", "output"])
def test_a_full_disk_in_a_prep_writer_names_the_folder_being_written(tmp_path, monkeypatch, capsys, stage):
    src, out = tmp_path / "notes.jsonl", tmp_path / "pairs"
    src.write_text(_rows(60))
    write_table = pq.write_table

    def full_disk(table, where, *args, **kwargs):  # what pyarrow raises on a full disk: errno, no filename
        if (".prep-stage" in str(where)) == stage:
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        return write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_disk)
    assert gte(_prep_args(src, out)) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    where = tmp_path / ".pairs.prep-stage" if stage else out
    assert err.startswith(f"gte prep: {where}") and "No space left on device" in err and "\n" not in err


def test_a_full_disk_in_an_atomic_write_names_the_file(tmp_path, monkeypatch):
    def full_disk(fd):  # NFS and quota file systems report ENOSPC at fsync
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as caught:
        write_text(tmp_path / "report.md", "text")
    assert caught.value.filename == str(tmp_path / "report.md") and not list(tmp_path.iterdir())


def _damage_a_page(shard: Path) -> None:
    """Flip bytes inside the first data page: the footer (schema, row counts) stays readable."""
    meta = pq.ParquetFile(shard).metadata.row_group(0).column(0)
    data = bytearray(shard.read_bytes())
    for i in range(meta.data_page_offset + 30, meta.data_page_offset + 60):
        data[i] ^= 0x5A
    shard.write_bytes(bytes(data))


def test_a_damaged_shard_is_named_with_the_rebuild_fix(tmp_path, capsys):
    data = write_tiny_pairs(tmp_path / "pairs")
    shard = data / "beta" / "train-00000.parquet"
    _damage_a_page(shard)
    manifest = json.loads((data / pairs.MANIFEST_FILE).read_text())
    for entry in manifest["sources"].values():  # a pairs dir written before shard digests: pages are read to tell
        for part in entry.values():
            part.pop(pairs.SHA256, None)
    (data / pairs.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"^{shard}: a damaged shard .*overwrite=true"):
        PairsData(data, cache_dir=tmp_path / "cache")
    code = gte(["train", *tiny_args(tmp_path / "run", data, f"data.cache_dir={tmp_path / 'cache2'}")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USER_ERROR and err[-1].startswith(f"gte train: {shard}: a damaged shard")


def test_a_full_disk_while_the_arrow_cache_is_written_names_the_cache(tmp_path, monkeypatch):
    import datasets

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    data = write_tiny_pairs(tmp_path / "pairs")
    monkeypatch.setattr(datasets, "load_dataset", full_disk)
    with pytest.raises(OSError) as caught:
        PairsData(data, cache_dir=tmp_path / "cache")
    assert caught.value.filename == str(tmp_path / "cache")


def test_ctrl_c_is_exit_130_in_every_command(capsys):
    """The boundary every command shares (train.app.cli.run_command)."""
    from train.app.cli import COMMANDS, run_command

    def interrupted():
        raise KeyboardInterrupt

    for command in COMMANDS:
        assert run_command(command, interrupted) == EXIT_INTERRUPTED
        assert capsys.readouterr().err.strip() == f"gte {command}: {INTERRUPTED}"
