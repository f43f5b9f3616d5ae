"""A mining run that keeps few of its queries (issue 21, finding 12): `gte mine` says so loudly, with the counts and
the keys to change, and `gte train` on its output says in one line why it cannot use it."""

from __future__ import annotations

import json

import torch

from data_prep.mine import mine
from tests.data_prep.helpers import mine_config, sentences, write_pairs_dir
from tests.train.tinydata import tiny_args
from train.app.cli import main as gte


def test_mining_that_keeps_under_half_the_queries_warns_and_training_refuses_too_small_a_source(tmp_path, capsys,
                                                                                                tiny_model):
    docs, queries = sentences(90, 1), sentences(90, 2)
    pairs = write_pairs_dir(tmp_path / "pairs", {"beta": list(zip(queries, docs))})
    # a random model scores every document close to the positive: a margin of 0.05 leaves most rows short
    cfg = mine_config(tmp_path, pairs, "mined", **{"negatives.margin": 0.05, "negatives.min_negatives": 4})
    out = mine(cfg, tiny_model)
    kept = json.loads((out / "mine_stats.json").read_text())["sources"]["beta"]["queries_mined"]
    assert 0 < kept * 2 < 90
    err = capsys.readouterr().err
    assert f"gte mine: WARNING source beta: kept {kept} of 90 queries" in err
    assert "negatives.min_negatives=4" in err and "negatives.margin=0.05" in err and "dropped: margin=" in err

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = gte(["train", *tiny_args(tmp_path / "run", out, "train.global_batch_size=32", "data.val_rows=0",
                                        f"data.cache_dir={tmp_path / 'cache'}")])
    finally:
        torch.set_num_threads(threads)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gte train: data.train_dir={out}: source(s) {{'beta': {kept}}} hold fewer train rows "
                          "than train.global_batch_size=32") and "mine_stats.json" in err and "\n" not in err


def test_mining_that_keeps_most_queries_prints_no_warning(tmp_path, capsys, tiny_model):
    docs, queries = sentences(90, 1), sentences(90, 2)
    pairs = write_pairs_dir(tmp_path / "pairs", {"beta": list(zip(queries, docs))})
    mine(mine_config(tmp_path, pairs, "mined"), tiny_model)
    assert "WARNING" not in capsys.readouterr().err
