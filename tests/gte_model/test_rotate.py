"""Principal-axes rotation: the axes, the rotated model (same full-dim similarities, more in the leading dims), its
export read back by us and by sentence-transformers (truncate_dim included), `gte rotate`, and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from gte_model import load_model
from gte_model.assets import ModelLoadError
from gte_model.core.errors import UserError
from gte_model.export import export_model
from gte_model.fingerprint import model_fingerprint
from gte_model.merge import merge_models
from gte_model.rotate import captured, fit_rotation, principal_axes, rotated
from gte_model.rotate_cli import rotate_main
from tests.conftest import make_tiny_model
from tests.data_prep.helpers import sentences, write_pairs_dir
from train.eval.dims import truncate


def test_the_axes_are_orthonormal_sorted_and_put_the_most_in_the_first_dims():
    rng = np.random.default_rng(0)
    scales = np.array([0.2, 3.0, 0.5, 1.0, 0.05, 2.0])  # variances in a scrambled order
    mix = np.linalg.qr(rng.normal(size=(6, 6)))[0]  # a random orthogonal basis hides the axes
    emb = (rng.normal(size=(4000, 6)) * scales) @ mix.T
    axes = principal_axes(emb)
    np.testing.assert_allclose(axes @ axes.T, np.eye(6), atol=1e-12)
    turned = emb @ axes.T
    energy = (turned**2).mean(axis=0)
    assert np.all(np.diff(energy) <= 0)  # descending second moment per dim
    for dim in range(1, 6):  # no other orthonormal basis of that span does better than the top-dim eigen-space
        other = np.linalg.qr(rng.normal(size=(6, 6)))[0].T
        assert captured(turned, dim) >= captured(emb, dim) and captured(turned, dim) >= captured(emb @ other.T, dim)
    # the recovered axes are the hidden ones (up to sign), in order of their variance
    order = np.argsort(-scales)
    np.testing.assert_allclose(np.abs(axes @ mix[:, order]), np.eye(6), atol=0.05)
    assert np.array_equal(principal_axes(emb), axes)  # signs fixed: the same embeddings, the same rotation


def test_a_rotated_model_keeps_every_full_dim_similarity(tmp_path):
    model = make_tiny_model(tmp_path)
    texts = sentences(40, 1)
    axes, emb = fit_rotation(model, texts[:20], texts[20:])
    turned = rotated(model, axes)
    got = turned.encode(texts, normalize=True)
    np.testing.assert_allclose(got, emb_all := model.encode(texts, normalize=True) @ axes.T, atol=1e-5)
    np.testing.assert_allclose(got @ got.T, emb_all @ emb_all.T, atol=1e-5)
    assert captured(got, 8) > captured(model.encode(texts, normalize=True), 8)
    assert model.rotation is None  # the input is left alone
    assert model_fingerprint(turned) != model_fingerprint(model)  # cached vectors of one are not the other's
    # rotating again composes: the second fit's axes are applied after the first rotation
    again = rotated(turned, principal_axes(emb[::-1]))
    np.testing.assert_allclose(again.encode(texts, normalize=True), model.encode(texts, normalize=True)
                               @ (principal_axes(emb[::-1]) @ axes).T, atol=1e-5)
    # the forward that training calls applies it too
    model.eval(), turned.eval()  # no dropout
    batch = model.tokenize(texts[:4])
    with torch.no_grad():
        np.testing.assert_allclose(turned(**batch).numpy(), model(**batch).numpy() @ axes.T, atol=1e-5)


def test_the_export_gives_the_same_vectors_to_us_and_to_sentence_transformers_truncated_too(tmp_path):
    model = make_tiny_model(tmp_path)
    texts = sentences(30, 2)
    turned = rotated(model, fit_rotation(model, texts[:15], texts[15:])[0])
    out = export_model(turned, tmp_path / "export")
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert json.loads((out / "gte_export.json").read_text())["rotated"] is True
    ours = load_model(out)
    assert torch.equal(ours.rotation, turned.rotation)
    want = turned.encode(texts, normalize=True)
    np.testing.assert_allclose(ours.encode(texts, normalize=True), want, atol=1e-6)
    st = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(st.encode(texts), want, atol=1e-5)
    small = SentenceTransformer(str(out), device="cpu", truncate_dim=8)
    np.testing.assert_allclose(small.encode(texts, normalize_embeddings=True), truncate(want, 8), atol=1e-5)
    # a plain model's export keeps its old layout (no Dense module)
    plain = export_model(model, tmp_path / "plain")
    assert [m["path"] for m in json.loads((plain / "modules.json").read_text())] == ["", "1_Pooling", "2_Normalize"]
    assert load_model(plain).rotation is None


def test_a_dense_module_other_than_a_rotation_is_refused_by_name(tmp_path):
    model = make_tiny_model(tmp_path)
    out = export_model(rotated(model, np.eye(model.dim)), tmp_path / "export")
    cfg = out / "2_Dense" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "activation_function": "torch.nn.modules.Tanh"}))
    with pytest.raises(ModelLoadError, match="2_Dense/config.json: a Dense module .* is not supported"):
        load_model(out)


def test_rotated_models_are_not_merged(tmp_path):
    model = make_tiny_model(tmp_path)
    with pytest.raises(UserError, match="models.1: a rotated model"):
        merge_models([model, rotated(model, np.eye(model.dim))], [0.5, 0.5])


def test_gte_rotate_writes_a_rotated_export_and_keeps_the_source_record(tmp_path, capsys):
    src = export_model(make_tiny_model(tmp_path), tmp_path / "src", train_config={"note": "stage 2"})
    pairs = write_pairs_dir(tmp_path / "pairs", {"s": list(zip(sentences(30, 1), sentences(30, 2))),
                                                 "t": list(zip(sentences(30, 3), sentences(30, 4)))})
    assert rotate_main([str(src), str(tmp_path / "out"), "--data", str(pairs), "--rows", "10", "--fp32"]) == 0
    assert "[rotate] 40 texts from 2 sources" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "gte_export.json").read_text())
    assert meta["train_config"]["source"] == {"note": "stage 2"} and meta["train_config"]["rotate"]["rows"] == 10
    texts = sentences(6, 9)
    base, turned = load_model(src), load_model(tmp_path / "out")
    a, b = base.encode(texts, normalize=True), turned.encode(texts, normalize=True)
    np.testing.assert_allclose(a @ a.T, b @ b.T, atol=1e-5)
    assert not np.allclose(a, b, atol=1e-3)
    with pytest.raises(UserError, match="rows=1: must be >= 2"):
        rotate_main([str(src), str(tmp_path / "x"), "--data", str(pairs), "--rows", "1"])
