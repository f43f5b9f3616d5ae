"""Folders appear whole or not at all, and only folders gte built are ever replaced."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from gte_model.core.atomic import OWNER_FILE, build_dir, clean_stale, temp_name
from gte_model.core.errors import UserError


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_build_dir_renames_into_place_and_marks_the_folder_ours(tmp_path):
    with build_dir(tmp_path / "out", "test", "out_dir") as tmp:
        (tmp / "a.txt").write_text("1")
        assert not (tmp_path / "out").exists()  # nothing visible before the rename
    assert (tmp_path / "out" / "a.txt").read_text() == "1" and (tmp_path / "out" / OWNER_FILE).is_file()
    with build_dir(tmp_path / "out", "test", "out_dir") as tmp:  # ours: replaced whole
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [OWNER_FILE, "b.txt"]


def test_a_failed_build_leaves_the_old_folder_and_no_temp(tmp_path):
    with build_dir(tmp_path / "out", "test", "out_dir") as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), build_dir(tmp_path / "out", "test", "out_dir") as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed halfway")
    assert (tmp_path / "out" / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_gte_did_not_write_is_never_replaced(tmp_path):
    mine = tmp_path / "out"
    mine.mkdir()
    (mine / "manifest.json").write_text("{}")  # looks like ours by name, is not
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match=r"out_dir=.*not written by gte.*nothing was deleted"):
        with build_dir(mine, "test", "out_dir"):
            pass
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_temp_folders_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path):
    dead = tmp_path / f".out.tmp-{dead_pid()}"
    live = tmp_path / ".out.tmp-1"  # pid 1 is always alive
    for folder in (dead, live):
        folder.mkdir()
    assert clean_stale(tmp_path) == [dead]
    assert live.is_dir() and not dead.exists()


def test_temp_folders_of_another_host_on_a_shared_file_system_are_left_alone(tmp_path):
    other = tmp_path / f".out.tmp-{dead_pid()}@some-other-node"  # its pid means nothing on this machine
    ours = temp_name(tmp_path / "out")
    other.mkdir()
    assert ours.name.endswith(f"@{socket.gethostname()}") and clean_stale(tmp_path) == [] and other.is_dir()
