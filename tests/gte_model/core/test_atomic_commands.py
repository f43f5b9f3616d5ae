"""Every command that writes a folder replaces only an output of its own kind, and only when told to (--overwrite,
overwrite=true); anything else is refused in one line naming the folder and what built it, and nothing is lost."""

from __future__ import annotations

import subprocess
import sys

import fsspec
import pytest

from data_prep.prep import prep
from gte_model import export_model
from gte_model.core.atomic import owner
from gte_model.core.errors import UserError
from gte_model.core.lock import HOST
from gte_model.merge import MergeConfig, run_merge
from tests.data_prep.helpers import prep_config, write_prep_sources
from train.app.cli import main as gte

HOLDER = """
import sys, time
from gte_model.core.lock import hold
with hold(sys.argv[1], "out_dir"):
    print("held", flush=True)
    time.sleep(60)
"""


def files(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def models(tiny_model, tmp_path):
    """(a model to export from, a trained model: what `gte train` exported into its run dir)."""
    src = export_model(tiny_model, tmp_path / "src")
    trained = export_model(tiny_model, tmp_path / "run" / "export", what="gte train")
    return src, trained


def refused(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert gte(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_export_and_rotate_never_replace_a_trained_model(models, capsys, flags):
    src, trained = models
    before = files(trained)
    err = refused(["export", str(src), str(trained), *flags], capsys)
    assert err.startswith(f"gte export: OUT={trained}: holds the output of `gte train`, which `gte export` never ")
    err = refused(["rotate", str(src), str(trained), "--data", str(src), *flags], capsys)
    assert f"OUT={trained}: holds the output of `gte train`, which `gte rotate` never replaces" in err
    assert files(trained) == before


def test_export_replaces_its_own_output_only_with_overwrite(models, capsys):
    src, _ = models
    out = src.parent / "out"
    assert gte(["export", str(src), str(out)]) == 0
    err = refused(["export", str(src), str(out), "--max-seq-len", "16"], capsys)
    assert f"OUT={out}: already holds a `gte export` output; nothing was deleted; set --overwrite" in err
    assert gte(["export", str(src), str(out), "--max-seq-len", "16", "--overwrite"]) == 0
    assert owner(out) == "gte export"


def test_merge_replaces_only_an_earlier_merge_and_only_with_overwrite(models):
    src, trained = models
    cfg = MergeConfig(models=[str(src), str(src)], weights=[0.5, 0.5], out_dir=str(trained), overwrite=True)
    with pytest.raises(UserError, match=r"out_dir=.*export: holds the output of `gte train`, which `gte merge`"):
        run_merge(cfg, log=lambda *a: None)
    cfg.out_dir, cfg.overwrite = str(src.parent / "merged"), False
    run_merge(cfg, log=lambda *a: None)
    with pytest.raises(UserError, match=r"already holds a `gte merge` output; nothing was deleted; set overwrite="):
        run_merge(cfg, log=lambda *a: None)
    cfg.overwrite = True
    run_merge(cfg, log=lambda *a: None)
    assert owner(cfg.out_dir) == "gte merge"


def test_prep_never_turns_a_model_folder_into_a_pairs_dir(models, tmp_path):
    _, trained = models
    write_prep_sources(tmp_path)
    before = files(trained)
    for overwrite in (False, True):
        with pytest.raises(UserError, match=r"out_dir=.*export: holds the output of `gte train`, which `gte prep`"):
            prep(prep_config(tmp_path, trained, overwrite=overwrite))
    assert files(trained) == before


def test_prep_refuses_an_input_inside_out_dir_and_keeps_it(tmp_path):
    write_prep_sources(tmp_path)
    out = prep(prep_config(tmp_path, tmp_path / "pairs"))
    write_prep_sources(out)  # the inputs moved into the output folder
    with pytest.raises(UserError, match=r"files.0.path=.*pairs/faq.jsonl: is inside out_dir=.*nothing was deleted"):
        prep(prep_config(out, out, overwrite=True))
    assert (out / "faq.jsonl").is_file() and (out / "notes.jsonl").is_file()


def test_a_second_prep_of_one_out_dir_is_refused_naming_the_first(tmp_path):
    write_prep_sources(tmp_path)
    out = tmp_path / "pairs"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"out_dir={out}: in use by gte process {holder.pid}@{HOST}"):
            prep(prep_config(tmp_path, out))
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()


def test_a_remote_out_dir_gte_did_not_write_is_never_deleted(tmp_path):
    write_prep_sources(tmp_path)
    fs = fsspec.filesystem("memory")
    fs.pipe("/foreign-h1/thesis.tex", b"years of work")
    try:
        with pytest.raises(UserError, match=r"out_dir=memory://foreign-h1: the folder is not empty and was not "):
            prep(prep_config(tmp_path, "memory://foreign-h1", overwrite=True))
        assert fs.cat("/foreign-h1/thesis.tex") == b"years of work"
    finally:
        fs.rm("/foreign-h1", recursive=True)


def test_eval_never_writes_its_results_over_a_folder_gte_did_not_write(tiny_model, tmp_path, capsys):
    src = export_model(tiny_model, tmp_path / "src")
    out = tmp_path / "my-results"
    out.mkdir()
    (out / "results.json").write_text('{"mine": 1}')
    err = refused(["eval", str(src), "--tasks", "sts-b", "--out", str(out)], capsys)
    assert err.startswith(f"gte eval: out={out}: the folder is not empty and was not written by gte")
    assert (out / "results.json").read_text() == '{"mine": 1}'
