"""Folders appear whole or not at all, and only folders gte built are ever replaced."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from gte_model.core.atomic import OWNER_FILE, build_dir, claim_dir, clean_stale, owner, temp_name
from gte_model.core.errors import UserError
from gte_model.core.lock import HOST


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_build_dir_renames_into_place_and_marks_the_folder_ours(tmp_path):
    with build_dir(tmp_path / "out", "test", "out_dir") as tmp:
        (tmp / "a.txt").write_text("1")
        assert not (tmp_path / "out").exists()  # nothing visible before the rename
    assert (tmp_path / "out" / "a.txt").read_text() == "1" and owner(tmp_path / "out") == "test"
    with build_dir(tmp_path / "out", "test", "out_dir", overwrite=True) as tmp:  # ours, and asked for: replaced
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [OWNER_FILE, "b.txt"]


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path):
    with build_dir(tmp_path / "out", "test", "out_dir") as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(UserError, match=r"out_dir=.*already holds a `test` output; nothing was deleted; set "
                                        r"--overwrite to replace it"):
        with build_dir(tmp_path / "out", "test", "out_dir", flag="--overwrite"):
            pytest.fail("no temp folder may be built for a refused output")
    assert (tmp_path / "out" / "a.txt").read_text() == "1"


def test_an_output_of_another_kind_is_never_replaced_even_with_overwrite(tmp_path):
    with build_dir(tmp_path / "model", "gte train", "out_dir") as tmp:
        (tmp / "model.safetensors").write_text("trained weights")
    with pytest.raises(UserError, match=r"OUT=.*model: holds the output of `gte train`, which `gte export` never "
                                        r"replaces; nothing was deleted"):
        with build_dir(tmp_path / "model", "gte export", "OUT", overwrite=True):
            pass
    assert (tmp_path / "model" / "model.safetensors").read_text() == "trained weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp folder, no lock left


def test_a_failed_build_leaves_the_old_folder_and_no_temp(tmp_path):
    with build_dir(tmp_path / "out", "test", "out_dir") as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), build_dir(tmp_path / "out", "test", "out_dir", overwrite=True) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed halfway")
    assert (tmp_path / "out" / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_gte_did_not_write_is_never_replaced(tmp_path, overwrite):
    mine = tmp_path / "out"
    mine.mkdir()
    (mine / "manifest.json").write_text("{}")  # looks like ours by name, is not
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match=r"out_dir=.*not written by gte.*nothing was deleted"):
        with build_dir(mine, "test", "out_dir", overwrite=overwrite):
            pass
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_temp_folders_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path):
    pid = dead_pid()
    dead, old = (tmp_path / f".out.gte-{kind}-{pid}@{HOST}" for kind in ("tmp", "old"))
    live = tmp_path / f".out.gte-tmp-1@{HOST}"  # pid 1 is always alive
    for folder in (dead, old, live):
        folder.mkdir()
        (folder / OWNER_FILE).write_text("gte export\n")
    dead_file = tmp_path / f".manifest.json.gte-tmp-{pid}@{HOST}"  # a write_bytes temp file of a killed writer
    dead_file.write_text("{")
    assert sorted(clean_stale(tmp_path)) == sorted([dead, old, dead_file])
    assert live.is_dir() and not dead.exists() and not old.exists() and not dead_file.exists()


def test_user_files_that_merely_look_like_temp_names_are_never_removed(tmp_path):
    pid = dead_pid()
    notes = tmp_path / f".notes.tmp-{pid}"  # the names older versions used: not provably ours
    backup = tmp_path / f".backup.old-{pid}"
    unmarked = tmp_path / f".data.gte-tmp-{pid}@{HOST}"  # our token, but a folder without our marker, not empty
    notes.write_text("my notes")
    for folder in (backup, unmarked):
        folder.mkdir()
        (folder / "thesis.tex").write_text("years of work")
    assert clean_stale(tmp_path) == []
    assert notes.read_text() == "my notes"
    assert (backup / "thesis.tex").is_file() and (unmarked / "thesis.tex").is_file()


def test_temp_folders_of_another_host_on_a_shared_file_system_are_left_alone(tmp_path):
    other = tmp_path / f".out.gte-tmp-{dead_pid()}@some-other-node"  # its pid means nothing on this machine
    ours = temp_name(tmp_path / "out")
    other.mkdir()
    (other / OWNER_FILE).write_text("gte export\n")
    assert ours.name.endswith(f"@{HOST}") and ".gte-tmp-" in ours.name
    assert clean_stale(tmp_path) == [] and other.is_dir()


def test_files_a_library_writes_private_get_the_umask_mode(tmp_path):
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with build_dir(tmp_path / "out", "test", "out_dir") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # safetensors writes 0600
            (tmp / "sub").mkdir()
            (tmp / "sub" / "a.txt").write_text("x")
    finally:
        os.umask(old)
    out = tmp_path / "out"
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes == {".": 0o755, "model.safetensors": 0o644, "sub": 0o755, "sub/a.txt": 0o644, OWNER_FILE: 0o644}


def test_claim_dir_marks_a_new_folder_and_refuses_foreign_or_other_kinds(tmp_path):
    run = claim_dir(tmp_path / "run", "run.dir", "gte train")
    assert owner(run) == "gte train"
    claim_dir(run, "run.dir", "gte train")  # ours: fine again
    with pytest.raises(UserError, match=r"run.dir=.*holds the output of `gte train`, not a `gte run` folder"):
        claim_dir(run, "run.dir", "gte run")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("mine: 1\n")
    with pytest.raises(UserError, match=r"run.dir=.*foreign: the folder is not empty and was not written by gte"):
        claim_dir(foreign, "run.dir", "gte train")
    assert [p.name for p in foreign.iterdir()] == ["config.yaml"]
    assert owner(claim_dir(foreign, "run.dir", "gte train", older=True)) == "gte train"  # an older version's
