"""Weight merging: identity cases bit for bit, the weighted mean, refusals, the weight fit, and `gte merge`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gte_model import load_model
from gte_model.core.errors import UserError
from gte_model.export import export_model
from gte_model.merge import fit_weights, merge_main, merge_models, weight_grid
from tests.conftest import make_tiny_model
from tests.data_prep.helpers import sentences, write_pairs_dir


@pytest.fixture
def two(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    return make_tiny_model(tmp_path / "a", seed=0), make_tiny_model(tmp_path / "b", seed=1)


def state(model):
    return model.backbone.state_dict()


def test_weight_one_returns_that_model_and_identical_models_merge_to_themselves_bit_for_bit(two):
    a, b = two
    for got, want in ((merge_models([a, b], [0.0, 1.0]), b), (merge_models([a, b], [1.0, 0.0]), a),
                      (merge_models([a, a], [0.3, 0.7]), a), (merge_models([b, b, b], [0.2, 0.5, 0.3]), b)):
        for name, tensor in state(want).items():
            assert torch.equal(state(got)[name], tensor), name


def test_merge_is_the_weighted_mean_of_every_float_tensor_and_leaves_the_inputs_alone(two):
    a, b = two
    before = {k: v.clone() for k, v in state(a).items()}
    merged = merge_models([a, b], [0.25, 0.75])
    for name, tensor in state(merged).items():
        if tensor.is_floating_point():
            want = (0.25 * state(a)[name].double() + 0.75 * state(b)[name].double()).float()
            assert torch.equal(tensor, want), name
    assert all(torch.equal(v, state(a)[k]) for k, v in before.items())
    word = "embeddings.word_embeddings.weight"
    assert not torch.equal(state(merged)[word], before[word])


def test_models_of_other_shapes_are_refused(tmp_path, two):
    from gte_model import build_from_preset

    other = build_from_preset("gte-small", two[0].tokenizer)
    with pytest.raises(UserError, match="models.1: its tensors differ"):
        merge_models([two[0], other], [0.5, 0.5])


def test_the_fit_tries_the_whole_grid_and_keeps_the_best_mean(two):
    assert len(weight_grid(2, 0.1)) == 11 and len(weight_grid(3, 0.5)) == 6
    a, b = two
    texts = sentences(16, 3)
    tasks = {"t": (texts[:8], texts[8:]), "u": (texts[8:], texts[:8])}
    best, table = fit_weights([a, b], tasks, step=0.25, log=lambda *_: None)
    assert len(table) == 5 and best in table
    means = {w: np.mean(list(s.values())) for w, s in table.items()}
    assert means[best] == max(means.values())


def test_gte_merge_writes_an_export_with_the_merged_vectors_and_its_weights(tmp_path, two):
    a_dir, b_dir = export_model(two[0], tmp_path / "ea"), export_model(two[1], tmp_path / "eb")
    pairs = write_pairs_dir(tmp_path / "pairs", {"s": list(zip(sentences(20, 1), sentences(20, 2)))})
    out = tmp_path / "merged"
    assert merge_main([f"models=[{a_dir},{b_dir}]", f"fit.data=[{pairs}]", "fit.rows=8", "fit.step=0.5",
                       "bf16=false", f"out_dir={out}"]) == 0
    meta = json.loads((out / "gte_export.json").read_text())["train_config"]["merge"]
    assert sorted(meta["fit"]) == ["0.0,1.0", "0.5,0.5", "1.0,0.0"] and len(meta["weights"]) == 2
    want = merge_models([load_model(a_dir), load_model(b_dir)], meta["weights"])
    texts = sentences(4, 9)
    np.testing.assert_allclose(load_model(out).encode(texts), want.encode(texts), atol=1e-6)
    with pytest.raises(UserError, match="weights=\\[0.5\\]: needs one weight per model"):
        merge_main([f"models=[{a_dir},{b_dir}]", "weights=[0.5]", f"out_dir={tmp_path / 'x'}"])
