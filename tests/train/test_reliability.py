"""What a fault sweep found in training, each shown fixed: a diverging run stops without an export, a changed config
is refused (or continued where sound), damaged checkpoints are skipped for intact ones, resume unpickles nothing,
and a full disk names the path. Runs are the tiny config in this process, through the `gte` error boundary."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from tests.train.tinydata import tiny_args, train_tiny, write_tiny_pairs
from train.app.cli import main as gte
from train.checkpoint import list_checkpoints
from train.metrics import read_metrics

SHORT = ("train.max_steps=10", "train.checkpoint_every=5", "train.eval_every=0", "optim.warmup_steps=2",
         "train.keep_checkpoints=3", "data.val_rows=0")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs"))


pytestmark = pytest.mark.usefixtures("one_thread")


def train(run_dir, pairs, *overrides) -> int:
    return train_tiny(run_dir, pairs, *SHORT, *overrides)


def weights(run_dir):
    return load_file(run_dir / "export" / "model.safetensors")


def test_a_diverging_run_stops_naming_step_and_lr_and_exports_nothing(tmp_path, pairs, capsys):
    assert train(tmp_path / "run", pairs, "optim.lr=1e6", "train.max_steps=15") == 2
    err = capsys.readouterr().err
    assert "gte train: train stopped at step" in err and " at lr=" in err and "nothing was exported" in err
    assert not (tmp_path / "run" / "export").exists() and not (tmp_path / "run" / "gte_record.json").exists()
    skipped = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "skipped"]
    assert len(skipped) == 3 and all(np.isnan(r["loss"]) for r in skipped)


@pytest.mark.parametrize("override, key", [
    ("optim.lr=inf", "optim.lr"), ("optim.lr=nan", "optim.lr"), ("loss.temperature=1e-30", "loss.temperature"),
    ("sampler.alpha=2", "sampler.alpha"), ("optim.max_grad_norm=-1", "optim.max_grad_norm"),
])
def test_non_finite_or_out_of_range_settings_are_config_errors(tmp_path, pairs, capsys, override, key):
    assert train(tmp_path / "run", pairs, override) == 2
    assert f"{key}=" in capsys.readouterr().err and not (tmp_path / "run" / "checkpoints").exists()


def test_resume_refuses_a_changed_key_and_keeps_the_old_config_yaml(tmp_path, pairs, capsys):
    run = tmp_path / "run"
    assert train(run, pairs) == 0
    shutil.rmtree(run / "export")
    (run / "gte_record.json").unlink()  # as if killed after the checkpoint at step 10
    before = (run / "config.yaml").read_text()
    assert train(run, pairs, "optim.lr=5e-3") == 2
    err = capsys.readouterr().err
    assert "checkpoint at step 10" in err and "optim.lr (0.001 -> 0.005)" in err and "run.overwrite=true" in err
    assert (run / "config.yaml").read_text() == before
    assert train(run, pairs, "train.max_steps=6") == 2
    assert "train.max_steps=6 is below step 10" in capsys.readouterr().err
    assert train(run, pairs, "optim.lr=5e-3", "run.overwrite=true") == 0  # starts afresh
    assert "lr: 0.005" in (run / "config.yaml").read_text()


def test_a_larger_max_steps_continues_a_finished_run_with_the_new_schedule(tmp_path, pairs, capsys):
    run, straight = tmp_path / "run", tmp_path / "straight"
    assert train(run, pairs) == 0
    assert train(run, pairs, "train.max_steps=14") == 0
    out = capsys.readouterr().out
    assert "resuming from" in out and "step-0000010" in out and "schedule now runs to step 14" in out
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(1, 15))
    assert json.loads((run / "gte_record.json").read_text())["config"]["train.max_steps"] == 14
    assert train(straight, pairs, "train.max_steps=14") == 0  # one 14-step schedule: another trajectory
    assert any(not np.array_equal(a, weights(straight)[k]) for k, a in weights(run).items())


def test_a_damaged_newest_checkpoint_is_named_and_the_older_one_used(tmp_path, pairs, capsys):
    run = tmp_path / "run"
    assert train(run, pairs) == 0
    shutil.rmtree(run / "export")
    (run / "gte_record.json").unlink()
    newest = run / "checkpoints" / "step-0000010" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk or a killed copy
    assert train(run, pairs) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {newest.parent} is damaged (model.safetensors do not match)" in out
    assert "resuming from" in out and "step-0000005 (step 5)" in out


def test_damaged_rng_state_is_an_error_unless_an_inexact_resume_is_accepted(tmp_path, pairs, capsys):
    run = tmp_path / "run"
    assert train(run, pairs, "train.checkpoint_every=0") == 0  # only the final checkpoint at step 10
    shutil.rmtree(run / "export")
    (run / "gte_record.json").unlink()
    rng = run / "checkpoints" / "step-0000010" / "rng-rank0.safetensors"
    rng.write_bytes(rng.read_bytes()[:100])
    assert train(run, pairs, "train.checkpoint_every=0") == 2
    err = capsys.readouterr().err
    assert "RNG state rng-rank0.safetensors missing or damaged" in err and "train.inexact_resume=true" in err
    assert train(run, pairs, "train.checkpoint_every=0", "train.inexact_resume=true") == 0
    assert "resuming from" in capsys.readouterr().out


def test_checkpoints_hold_no_pickle_and_resume_never_unpickles(tmp_path, pairs, monkeypatch):
    run = tmp_path / "run"
    assert train(run, pairs) == 0
    files = [p for p in (run / "checkpoints").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".safetensors", ".json"}
    shutil.rmtree(run / "export")
    (run / "gte_record.json").unlink()
    planted = run / "checkpoints" / "step-0000010" / "custom_checkpoint_0.pkl"
    planted.write_bytes(pickle.dumps(print))  # what the old format would have loaded

    def refuse(*args, **kwargs):
        raise AssertionError("resume unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert train(run, pairs) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_during_a_checkpoint_names_errno_and_path(tmp_path, pairs, capsys):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], check=True)
    try:
        run = disk / "run"
        code = gte(["train", *tiny_args(run, pairs, *SHORT, f"data.cache_dir={tmp_path / 'cache'}")])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2
        assert err.startswith(f"gte train: {run / 'checkpoints'}") and "No space left on device" in err
        assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")], "temp left behind"
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_library_full_disk_messages_become_enospc_with_the_path(tmp_path):
    from train.checkpoint import _disk_error

    exc = _disk_error(RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull })'), tmp_path)
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC and exc.filename == str(tmp_path)


def test_every_checkpoint_lists_a_checksum_per_file(tmp_path, pairs):
    assert train(tmp_path / "run", pairs) == 0
    for _, path in list_checkpoints(tmp_path / "run"):
        state = json.loads((path / "trainer_state.json").read_text())
        listed = set(state["sha256"])
        assert listed == {p.name for p in path.iterdir() if p.name != "trainer_state.json"}
        assert state["world_size"] == 1 and state["record"]["kind"] == "train"


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "the file holds a list, not a mapping of keys"),
    ("train: {max_steps: 3\n", "not valid YAML"),
    ("train:\n  max_stepz: 3\n", "unknown key train.max_stepz; did you mean train.max_steps?"),
])
def test_a_bad_config_file_is_one_line_naming_the_file(tmp_path, pairs, capsys, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert gte(["train", str(config), f"data.train_dir={pairs}", f"run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gte train: ") and str(config) in err and message in err and "Traceback" not in err


def test_a_model_that_cannot_load_is_one_line_naming_it(tmp_path, pairs, capsys):
    assert train(tmp_path / "run", pairs, f"model.init_from={tmp_path / 'nowhere'}") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gte train: ") and "nowhere" in err and "Traceback" not in err and "\n" not in err
