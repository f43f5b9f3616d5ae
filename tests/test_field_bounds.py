"""A field's bounds sit on the field (gte_model.core.config.bounded) wherever the section is used: the embedding,
index, consistency-filter, teacher and merge-fit sections are checked by the one walker under every command that
holds them, with the message --show-config's listing promises."""

from __future__ import annotations

import pytest

from data_prep.mine_config import MineConfig
from gte_model.core.config import ConfigError, load_config
from gte_model.merge import MergeConfig
from train.app.cli import main as gte
from train.config import TrainConfig

MINE = ["input_dir=/tmp/pairs", "out_dir=/tmp/mined"]
MERGE = ["models=[a,b]", "weights=[0.5,0.5]", "out_dir=/tmp/merged"]


def _problems(schema: type, overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(schema, None, overrides)
    return [line.strip() for line in str(err.value).splitlines()[1:]]


def test_mine_embedding_index_filter_and_teacher_bounds_are_reported_by_the_field_walker():
    problems = _problems(MineConfig, [*MINE, "embed.max_seq_len=2", "embed.cache_dtype=float64", "index.nprobe=0",
                                      "index.num_threads=-1", "filter.top_k=0", "filter.embed.shard_size=0",
                                      "filter.index.shards=0", "teacher.batch_size=0"])
    assert sorted(problems) == sorted([
        "embed.max_seq_len=2: must be >= 4 (e.g. 256)",
        "embed.cache_dtype=float64: choose one of float16, float32",
        "index.nprobe=0: must be >= 1",
        "index.num_threads=-1: must be >= 0 (0 = automatic)",
        "filter.top_k=0: must be >= 1 (2 keeps a positive ranked first or second)",
        "filter.embed.shard_size=0: must be >= 1",
        "filter.index.shards=0: must be >= 1",
        "teacher.batch_size=0: must be >= 1",
    ])


def test_the_show_config_listing_states_the_same_bounds(capsys):
    assert gte(["mine", "--show-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for want in ("embed.max_seq_len = 256   [int, >= 4]",
                 "embed.cache_dtype = float16   [str, one of: float16 | float32]", "index.nlist = 0   [int, >= 0]",
                 "filter.top_k = 2   [int, >= 1]", "filter.pool_size = 0   [int, >= 0]",
                 "teacher.shard_size = 8192   [int, >= 1]"):
        assert want in lines, want


def test_train_teacher_bounds_are_reported_with_every_other_problem(tmp_path):
    problems = _problems(TrainConfig, [f"data.train_dir={tmp_path}", "teacher.max_seq_len=1",
                                       "teacher.cache_dtype=int8", "train.chunk_size=0"])
    assert sorted(problems) == [
        "teacher.cache_dtype=int8: choose one of float16, float32",
        "teacher.max_seq_len=1: must be >= 4 (e.g. 256)",
        "train.chunk_size=0: must be >= 1",
    ]


@pytest.mark.parametrize("override, problem", [
    ("fit.rows=1", "fit.rows=1: must be >= 2 (in-batch retrieval needs candidates)"),
    ("fit.step=0.7", "fit.step=0.7: must be a finite number in (0, 0.5] (e.g. 0.1 or 0.05)"),
    ("fit.step=0", "fit.step=0.0: must be a finite number in (0, 0.5] (e.g. 0.1 or 0.05)"),
    ("fit.step=0.3", "fit.step=0.3: must divide 1 evenly, e.g. 0.1 or 0.05"),  # a rule Bounds cannot state
    ("fit.batch_size=0", "fit.batch_size=0: must be >= 1"),
])
def test_merge_fit_bounds_are_one_problem_each(override, problem):
    assert _problems(MergeConfig, [*MERGE, override]) == [problem]
