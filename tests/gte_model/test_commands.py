"""`gte encode` and `gte export`: user errors are raised as one-line UserErrors, which the `gte` boundary prints as
`gte <cmd>: <message>` with exit status 2 (no traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gte_model import export_model
from gte_model.core.errors import UserError
from gte_model.encode import encode_main
from gte_model.export import export_main


def gte(argv, capsys) -> tuple[int, str]:
    """Run the `gte` command in-process -> (exit status, stderr)."""
    from train.app.cli import main

    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def one_line_user_error(call, *args) -> str:
    with pytest.raises(UserError) as err:
        call(*args)
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_export_of_a_missing_model_names_it_and_the_fix(tmp_path):
    msg = one_line_user_error(export_main, [str(tmp_path / "nope"), str(tmp_path / "out")])
    assert msg.startswith(f"{tmp_path / 'nope'}: not a preset") and "pass a model folder" in msg
    assert not (tmp_path / "out").exists()


def test_export_into_a_folder_gte_did_not_write_is_refused(tiny_model, tmp_path):
    src = export_model(tiny_model, tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    msg = one_line_user_error(export_main, [str(src), str(tmp_path / "out")])
    assert msg.startswith(f"OUT={tmp_path / 'out'}: the folder is not empty") and "choose an empty or new OUT" in msg


def test_encode_with_a_damaged_model_names_the_weights_file(tiny_model, tmp_path):
    src = export_model(tiny_model, tmp_path / "src")
    (src / "model.safetensors").write_bytes(b"\0" * 16)
    msg = one_line_user_error(encode_main, ["--model", str(src), "the cat"])
    assert msg.startswith(f"{src / 'model.safetensors'}: failed to load")


def test_export_command_writes_a_loadable_folder(tiny_model, tmp_path, capsys):
    src = export_model(tiny_model, tmp_path / "src")
    assert export_main([str(src), str(tmp_path / "out"), "--max-seq-len", "24"]) == 0
    assert "exported" in capsys.readouterr().out
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("command", ["encode", "export"])
def test_gte_prints_one_line_and_exits_2_for_a_missing_model(command, tmp_path, capsys):
    missing = str(tmp_path / "nope")
    argv = ["encode", "--model", missing, "x"] if command == "encode" else ["export", missing, str(tmp_path / "o")]
    code, err = gte(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"gte {command}: {missing}: not a preset"), err
    assert "Traceback" not in err


def test_importing_the_config_loader_pulls_neither_torch_nor_transformers():
    probe = "import sys, gte_model.core.config; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
