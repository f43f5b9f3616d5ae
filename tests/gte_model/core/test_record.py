"""The completion rule: same record -> done, none -> build, another -> StaleOutput naming what changed."""

from __future__ import annotations

import json
import math

import pytest

from gte_model.core.atomic import write_json
from gte_model.core.record import (
    Change,
    Record,
    StaleOutput,
    check_done,
    file_fingerprint,
    flatten,
    read_record,
    write_record,
)


def test_flatten_spells_keys_as_overrides_and_skips_whole_sections():
    tree = {"optim": {"lr": 1e-4, "betas": (0.9, 0.99)}, "log": {"wandb": "off"}, "run": {"dir": "x", "name": ""}}
    assert flatten(tree, skip={"log", "run.dir"}) == {"optim.lr": 1e-4, "optim.betas": [0.9, 0.99], "run.name": ""}


def test_check_done_answers_same_absent_or_names_every_change(tmp_path):
    want = Record("prep", 1, {"seed": 0, "max_pairs.default": 10}, {"files.0": "size=3,mtime_ns=1"})
    assert check_done(tmp_path, want, "overwrite") is False  # nothing there: build it
    write_record(tmp_path, want)
    assert check_done(tmp_path, want, "overwrite") is True
    other = Record("prep", 1, {"seed": 1, "max_pairs.default": 10}, {"files.0": "size=4,mtime_ns=2"})
    with pytest.raises(StaleOutput, match=r"seed \(0 -> 1\); input files.0 .*set overwrite=true"):
        check_done(tmp_path, other, "overwrite")


def test_stats_are_not_part_of_the_identity_and_a_damaged_record_is_no_record(tmp_path):
    write_record(tmp_path, Record("train", 2, {"a": 1}, stats={"seconds": 5}))
    assert read_record(tmp_path).changes(Record("train", 2, {"a": 1}, stats={"seconds": 9})) == []
    (tmp_path / "gte_record.json").write_text('{"kind": "train", "vers')
    assert read_record(tmp_path) is None


def test_a_key_added_to_the_code_since_is_no_change_while_it_holds_its_default(tmp_path):
    write_record(tmp_path, Record("train", 2, {"a": 1}))  # written before `b` existed
    old = read_record(tmp_path)
    assert "defaults" not in json.loads((tmp_path / "gte_record.json").read_text())
    assert old.changes(Record("train", 2, {"a": 1, "b": 0}, defaults={"a": 1, "b": 0})) == []
    assert old.changes(Record("train", 2, {"a": 1, "b": 5}, defaults={"a": 1, "b": 0})) == [Change("b", None, 5)]
    assert old.changes(Record("train", 2, {"a": 2, "b": 0}, defaults={"a": 1, "b": 0})) == [Change("a", 1, 2)]
    dropped = Record("train", 2, {"a": 1, "b": 0}).changes(Record("train", 2, {"a": 1}, defaults={"b": 0}))
    assert [str(c) for c in dropped] == ["b (0 -> null)"]  # a key the code dropped is a change


def test_a_format_bump_invalidates_older_artifacts(tmp_path):
    (change,) = Record("mine", 1, {"k": 3}).changes(Record("mine", 2, {"k": 3}))
    assert change.where == "format" and str(change) == "format (mine v1 -> mine v2)"


def test_changes_are_data_and_an_input_shows_each_differing_part_in_full():
    old = Record("train", 2, {"train.max_steps": 10, "optim.lr": 1e-4}, {"data": "m=" + "a" * 40 + ",s=" + "b" * 40})
    new = Record("train", 2, {"train.max_steps": 20, "optim.lr": 1e-4}, {"data": "m=" + "a" * 40 + ",s=" + "c" * 40})
    changes = old.changes(new)
    assert [(c.key, c.where) for c in changes] == [("train.max_steps", "config"), ("data", "input")]
    assert changes[0].old == 10 and changes[0].new == 20
    # the part that differs, never cut off; the part that is the same, left out
    assert str(changes[1]) == f"input data (s={'b' * 40} -> s={'c' * 40})"


def test_file_fingerprint_follows_edits_not_reads(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("a\n")
    before = file_fingerprint(path)
    path.read_text()
    assert file_fingerprint(path) == before
    path.write_text("ab\n")
    assert file_fingerprint(path) != before and file_fingerprint(tmp_path / "gone") == "missing"


def test_json_writes_refuse_nan_instead_of_writing_invalid_json(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"loss": math.nan})
    assert not (tmp_path / "x.json").exists() and not list(tmp_path.iterdir())
    write_json(tmp_path / "x.json", {"loss": 1.5})
    assert json.loads((tmp_path / "x.json").read_text()) == {"loss": 1.5}
