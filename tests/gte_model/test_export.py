"""Export as a folder operation: atomic, ours, cleans what killed exports left, refuses what cannot be used."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import pytest
import torch

import gte_model.export
from gte_model import export_model, load_model
from gte_model.core.atomic import OWNER_FILE
from gte_model.core.errors import UserError


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped), as a kill or a full disk leaves behind."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_export_removes_temp_folders_of_dead_processes_and_keeps_live_ones(tiny_model, tmp_path):
    pid, host = dead_pid(), socket.gethostname()
    stale = [tmp_path / f".export.gte-tmp-{pid}@{host}", tmp_path / f".other.gte-tmp-{pid}@{host}",
             tmp_path / f".export.gte-old-{pid}@{host}"]
    for folder in stale:
        folder.mkdir()
        (folder / OWNER_FILE).write_text("gte export\n")  # temp folders of ours carry the marker from the start
        (folder / "model.safetensors").write_bytes(b"half written")
    live = tmp_path / f".export.gte-tmp-{os.getppid()}@{host}"  # a writer that is still running: not ours to remove
    live.mkdir()
    export = export_model(tiny_model, tmp_path / "export")
    assert not any(folder.exists() for folder in stale)
    assert live.is_dir()
    assert (export / OWNER_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "export", "vocab.txt"])


def test_a_failing_export_removes_its_temp_folder_and_keeps_the_old_export(tiny_model, tmp_path, monkeypatch):
    export = export_model(tiny_model, tmp_path / "export")
    before = sorted(p.name for p in export.iterdir())

    def disk_full(model, folder):
        (folder / "modules.json").write_text("[")
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "modules.json"))

    monkeypatch.setattr(gte_model.export, "_write_st", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_model(tiny_model, tmp_path / "export", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export.")]
    assert sorted(p.name for p in export.iterdir()) == before
    load_model(export)


def test_export_replaces_an_earlier_export_only_with_overwrite(tiny_model, tmp_path):
    export_model(tiny_model, tmp_path / "export")
    tiny_model.max_seq_len = 40
    with pytest.raises(UserError, match=r"already holds a `gte export` output; nothing was deleted; set --overwrite"):
        export_model(tiny_model, tmp_path / "export")
    assert load_model(export_model(tiny_model, tmp_path / "export", overwrite=True)).max_seq_len == 40


def test_export_never_replaces_a_folder_it_did_not_write(tiny_model, tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    with pytest.raises(UserError) as err:
        export_model(tiny_model, mine, key="OUT")
    assert str(err.value).startswith(f"OUT={mine}: the folder is not empty and was not written by gte")
    assert (mine / "chapter1.tex").read_text() == "years of work"


def test_export_refuses_a_model_whose_weights_hold_nan(tiny_model, tmp_path):
    with torch.no_grad():
        tiny_model.backbone.embeddings.word_embeddings.weight[3, 0] = float("nan")
    with pytest.raises(UserError, match=r"out_dir=.*: the model's weights hold 1 non-finite values"):
        export_model(tiny_model, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_nan_weights_never_reach_encode_through_load(tiny_model, tmp_path):
    export = export_model(tiny_model, tmp_path / "export")
    with torch.no_grad():
        tiny_model.backbone.encoder.layer[1].output.dense.bias.fill_(float("nan"))
    tiny_model.backbone.save_pretrained(str(export), safe_serialization=True)  # as a diverged run would
    with pytest.raises(UserError, match="non-finite"):
        load_model(export).encode(["the cat"])
