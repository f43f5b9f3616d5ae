"""data.pretokenize: ids computed once into the Arrow cache equal the on-the-fly ids (prompts, max lengths, sampled
negatives), a second run reuses the cache, and a run trains to the same weights either way."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from gte_model import load_model
from tests.train.tinydata import tiny_args, write_tiny_pairs
from train.data import PairsData
from train.loop import main
from train.tokens import RoleTokenizer


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def tokenize():
    tok = load_model("tiny").tokenizer
    return RoleTokenizer(tok, "query: ", "passage: ", 8, 12)


def test_pretokenized_ids_equal_on_the_fly_ids_and_the_cache_is_reused(pairs, tokenize, tmp_path):
    data = PairsData(pairs, cache_dir=tmp_path, num_negatives=2, heldout=False)
    data.pretokenize(tokenize, tokenize.key())
    source = data.names[0]
    files = {f["filename"] for f in data._train[source].cache_files}
    for step, rows in enumerate(([0, 3, 5], [7, 1])):
        batch = data.train_batch(source, rows, seed=1, step=step)
        docs = batch.positives + [n for negs in batch.negatives for n in negs]
        assert batch.ids == tokenize(batch.queries, "query") + tokenize(docs, "document")
        assert len(batch.ids) == len(rows) * 4 and max(map(len, batch.ids)) <= 12
        assert batch.ids[0][1:3] == tokenize.tokenizer("query:", add_special_tokens=False)["input_ids"]  # prompt
    again = PairsData(pairs, cache_dir=tmp_path, num_negatives=2, heldout=False)
    again.pretokenize(tokenize, tokenize.key())
    assert {f["filename"] for f in again._train[source].cache_files} == files  # same fingerprint: no recompute
    other = RoleTokenizer(tokenize.tokenizer, "query: ", "passage: ", 8, 16)
    assert other.key() != tokenize.key()  # another max length is another cache entry


def test_a_pretokenized_run_trains_to_the_same_weights(pairs, tmp_path):
    weights = []
    for pre in ("false", "true"):
        run = tmp_path / f"pretokenize-{pre}"
        overrides = ("train.max_steps=6", "train.checkpoint_every=0", "train.eval_every=0", "data.val_rows=0")
        assert main(tiny_args(run, pairs, *overrides, f"data.pretokenize={pre}")) == 0
        weights.append(load_file(run / "export" / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for name, w in weights[0].items():
        assert torch.equal(w, weights[1][name]), name
