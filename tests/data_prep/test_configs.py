"""Validation lives in the config layer: every problem a later step would reject, in override spelling, at once,
without touching the config."""

from __future__ import annotations

import copy

import pytest

from data_prep.mine import MineConfig
from data_prep.prep import FileSource, PrepConfig
from gte_model.core.config import ConfigError, load_config


def test_prep_validate_reports_every_problem_in_override_spelling_and_changes_nothing(tmp_path):
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "data.txt").write_text("")
    cfg = PrepConfig(out_dir=str(tmp_path / "out"), sources=["stsb"],
                     files=[FileSource(name="faq", path=str(tmp_path / "a.jsonl")),
                            FileSource(name="notes", path=str(tmp_path / "missing.jsonl")),
                            FileSource(name="raw", path=str(tmp_path / "data.txt"))],
                     max_pairs={"default": -5, "fqa": 10}, rows_per_shard=0, batch_size=0)
    cfg.length.query_min_tokens, cfg.length.query_max_tokens = 10, 5
    cfg.split.max_heldout_queries = -1
    cfg.dedup.num_perm = 0
    cfg.dedup.match = {"notse": "positive"}
    cfg.decontaminate.extra_files = [str(tmp_path / "gone.txt")]
    before = copy.deepcopy(cfg)
    errors = cfg.validate()
    assert cfg == before
    expected = [
        "max_pairs.default=-5: must be >= 0",
        "max_pairs.fqa: no source is named 'fqa' (did you mean faq?)",
        "length.query_min_tokens=10 > length.query_max_tokens=5",
        "split.max_heldout_queries=-1: must be >= 0",
        "dedup.num_perm=0: must be >= 1",
        "dedup.match.notse: no source is named 'notse' (did you mean notes?)",
        f"files.1.path={tmp_path / 'missing.jsonl'}: does not exist",
        f"files.2.path={tmp_path / 'data.txt'}: cannot tell the format from the name",
        f"decontaminate.extra_files.0={tmp_path / 'gone.txt'}: does not exist",
        "rows_per_shard=0: must be >= 1",
        "batch_size=0: must be >= 1",
    ]
    for text in expected:
        assert any(e.startswith(text) for e in errors), (text, errors)
    assert len(errors) == len(expected), errors


def test_prep_source_names_from_a_column_are_not_second_guessed(tmp_path):
    (tmp_path / "a.jsonl").write_text("")
    cfg = PrepConfig(sources=[], files=[FileSource(name="mixed", path=str(tmp_path / "a.jsonl"), source="origin")],
                     max_pairs={"any_name": 5})
    assert cfg.validate() == []


def test_mine_validate_reports_every_problem_in_override_spelling_and_changes_nothing(tmp_path):
    cfg = MineConfig(input_dir=str(tmp_path / "pairs"), out_dir=str(tmp_path / "pairs" / "mined"),
                     max_queries_per_source=-1, rows_per_shard=0, extra_corpus=["docs.csv"])
    cfg.negatives.k, cfg.embed.batch_size, cfg.index.nlist, cfg.filter.pool_size = 0, 0, -1, -2
    before = copy.deepcopy(cfg)
    errors = cfg.validate()
    assert cfg == before
    expected = [
        f"out_dir={tmp_path / 'pairs' / 'mined'}: is input_dir",
        "max_queries_per_source=-1: must be >= 0",
        "rows_per_shard=0: must be >= 1",
        "extra_corpus.0=docs.csv: unknown file type",
        "negatives.k=0: must be >= 1",
        "negatives.min_negatives=1: must be in [0, k=0]",
        "embed.batch_size=0: must be >= 1",
        "index.nlist=-1: must be >= 0",
        "filter.pool_size=-2: must be >= 0",
    ]
    for text in expected:
        assert any(e.startswith(text) for e in errors), (text, errors)
    assert len(errors) == len(expected), errors


def test_mine_cannot_write_around_its_input(tmp_path):
    with pytest.raises(ConfigError, match=r"out_dir=.*: is input_dir=.*around it"):
        load_config(MineConfig, None, [f"input_dir={tmp_path}/data/pairs", f"out_dir={tmp_path}/data"])
