"""`gte <cmd> --show-config` lists every key of the command's schema with its default, type, accepted values and the
meaning written where the field is declared; with a config file it shows that file's values."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from data_prep.mine import MineConfig
from data_prep.prep import PrepConfig
from gte_model.merge import MergeConfig
from train.app.cli import main as gte
from train.app.pipeline import PipelineConfig
from train.config import TrainConfig
from train.mlm_config import MLMConfig

COMMANDS = {"prep": PrepConfig, "mine": MineConfig, "train": TrainConfig, "run": PipelineConfig,
            "merge": MergeConfig, "mlm": MLMConfig}


def _leaves(cfg, prefix: str = ""):
    """(dotted key, default) of every leaf field, walked independently of the code under test; a list of sections
    also lists its entries' fields as key.#.name."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key, value = prefix + f.name, getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, key + ".")
            continue
        yield key, value
        entry = typing.get_args(hints[f.name])[0] if typing.get_origin(hints[f.name]) is list else None
        if dataclasses.is_dataclass(entry):
            yield from _leaves(entry(), key + ".#.")


def _spelled(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if value == "":
        return "''"
    if isinstance(value, list):
        return "[" + ", ".join(_spelled(v) for v in value) + "]"
    return str(value)


def _listing(capsys, *args: str) -> dict[str, list[str]]:
    """{key: [its line, its meaning lines]} of the --show-config output."""
    assert gte(list(args)) == 0
    entries: dict[str, list[str]] = {}
    key = None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("["):  # a section and its meaning
            key = None
        elif " = " in line and not line.startswith(" "):
            key = line.split(" = ")[0]
            entries[key] = [line]
        elif line.startswith("    ") and key:
            entries[key].append(line.strip())
    return entries


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_show_config_lists_every_key_with_its_default_type_and_meaning(command, capsys):
    entries = _listing(capsys, command, "--show-config")
    leaves = dict(_leaves(COMMANDS[command]()))
    assert set(entries) == set(leaves)
    for key, default in leaves.items():
        line = entries[key][0]
        if not isinstance(default, dict):
            assert line.startswith(f"{key} = {_spelled(default)}   ["), line
        assert line.endswith("]") and "[" in line, line  # the type (and the accepted values)
        assert len(entries[key]) > 1, f"{command}: {key} has no meaning; write a comment where it is declared"


def test_show_config_names_the_declared_bounds_and_comment(capsys):
    entries = _listing(capsys, "train", "--show-config")
    assert entries["train.chunk_size"][0] == "train.chunk_size = 64   [int, >= 1]"
    assert "texts (queries + documents) per forward pass" in entries["train.chunk_size"][1]
    assert entries["model.pooling"][0] == "model.pooling = mean   [str, one of: mean | cls | last]"
    assert "one of: jsonl | csv | tsv | parquet | hf_disk | auto" in _listing(capsys, "prep", "--show-config")[
        "files.#.format"][0]


def test_show_config_after_a_config_file_shows_its_values_and_the_changed_defaults(capsys):
    entries = _listing(capsys, "train", "configs/finetune.yaml", "train.max_steps=7", "--show-config")
    assert entries["train.max_steps"][0].startswith("train.max_steps = 7  (default 1000)   [int")
    assert entries["data.num_negatives"][0].startswith("data.num_negatives = 3  (default 0)")
    assert entries["loss.kind"][0].startswith("loss.kind = gte   [")  # unchanged: no default named


def test_show_config_with_a_misspelled_key_names_it(capsys):
    assert gte(["train", "trian.max_steps=7", "--show-config"]) == 2
    assert "unknown key trian; did you mean train?" in capsys.readouterr().err


def test_help_names_show_config(capsys):
    assert gte(["train", "--help"]) == 0
    assert "--show-config" in capsys.readouterr().out
