"""A run dir is gte's or refused: training never writes into a folder it did not make, run.overwrite deletes only
what training wrote, one run at a time holds it, and what it writes is readable by others (the umask's mode).
Runs are the tiny config in this process, through the `gte` error boundary."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gte_model.core.atomic import OWNER_FILE, owner
from gte_model.core.lock import HOST
from gte_model.core.record import RECORD_FILE, read_record
from tests.train.tinydata import train_tiny, write_tiny_pairs
from train.checkpoint import list_checkpoints

SHORT = ("train.max_steps=4", "train.checkpoint_every=2", "train.eval_every=0", "optim.warmup_steps=1",
         "data.val_rows=0")
HOLDER = """
import sys, time
from gte_model.core.lock import hold
with hold(sys.argv[1], "run.dir"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs"))


pytestmark = pytest.mark.usefixtures("one_thread")


def train(run_dir, pairs, *overrides) -> int:
    return train_tiny(run_dir, pairs, *SHORT, *overrides)


def files(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_foreign_folder_is_never_a_run_dir(tmp_path, pairs, capsys, overwrite):
    run = tmp_path / "notes"
    run.mkdir()
    (run / "config.yaml").write_text("my: config\n")
    (run / "metrics.jsonl").write_text('{"my": "numbers"}\n')
    before = files(run)
    assert train(run, pairs, f"run.overwrite={str(overwrite).lower()}") == 2
    err = capsys.readouterr().err
    assert f"gte train: run.dir={run}: the folder is not empty and was not written by gte" in err
    assert files(run) == before


def test_a_prep_output_is_never_a_run_dir_even_with_overwrite(tmp_path, pairs, capsys):
    prepped = Path(shutil.copytree(pairs, tmp_path / "pairs"))
    (prepped / OWNER_FILE).write_text("gte prep\n")  # as `gte prep` marks its output
    before = files(prepped)
    assert train(prepped, pairs, "run.overwrite=true") == 2
    assert "holds the output of `gte prep`, not a `gte train` folder" in capsys.readouterr().err
    assert files(prepped) == before and read_record(prepped).kind == "prep"


def test_overwrite_deletes_only_what_training_wrote(tmp_path, pairs):
    run = tmp_path / "run"
    assert train(run, pairs) == 0 and owner(run) == "gte train" and list_checkpoints(run)
    (run / "checkpoints" / "epoch3.pt").write_bytes(b"the user's own checkpoint")
    (run / "notes.md").write_text("observations")
    assert train(run, pairs, "optim.lr=5e-3", "run.overwrite=true") == 0
    assert (run / "checkpoints" / "epoch3.pt").read_bytes() == b"the user's own checkpoint"
    assert (run / "notes.md").read_text() == "observations"
    assert read_record(run).config["optim.lr"] == 5e-3


def test_a_second_run_on_a_held_run_dir_is_refused_naming_the_holder(tmp_path, pairs, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert train(run, pairs) == 2
        err = capsys.readouterr().err
        assert f"gte train: run.dir={run}: in use by gte process {holder.pid}@{HOST}" in err
        assert not run.exists()  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    assert train(run, pairs) == 0  # its holder died: the lock is stale and taken over
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".gte-lock")]  # released


def test_checkpoints_and_exports_get_the_umask_mode(tmp_path, pairs):
    old = os.umask(0o022)
    try:
        assert train(tmp_path / "run", pairs) == 0
    finally:
        os.umask(old)
    written = [*(tmp_path / "run" / "export").rglob("*"), *(tmp_path / "run" / "checkpoints").rglob("*")]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written if p.is_file()}
    assert "model.safetensors" in modes and "optimizer.safetensors" in modes and OWNER_FILE in modes
    assert set(modes.values()) == {0o644}, modes
    assert (tmp_path / "run" / RECORD_FILE).is_file()
