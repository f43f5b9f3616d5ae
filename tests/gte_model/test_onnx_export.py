"""`gte export --onnx` (gte_model.onnx_export): the ONNX graph gives the PyTorch export's vectors at any batch and
length (a rotation included), sentence-transformers' modules on its token states give sentence-transformers'
vectors, the int8 graph runs, and `gte encode --backend onnx` prints what the torch backend prints."""

from __future__ import annotations

import importlib
import json

import numpy as np
import onnx
import pytest
import torch
from sentence_transformers import SentenceTransformer

from gte_model import load_model
from gte_model.core.errors import UserError
from gte_model.encode import encode_main
from gte_model.export import export_main, export_model
from gte_model.onnx_export import ONNX_FILES, OUTPUTS, PARITY_MIN_COSINE, OnnxEncoder, load_onnx
from gte_model.rotate import fit_rotation, rotated
from tests.conftest import MIXED_TEXTS, make_tiny_model

REAL_TEXTS = [
    "A man is playing a guitar on the street corner.",
    "The central bank raised interest rates by a quarter point.",
    "How do I install a Python package from a local folder?",
    "Paris",
    "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen as a by-product.",
]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _export_onnx(model, folder, form="fp32"):
    out = export_model(model, folder, onnx=form)
    return out, load_model(out)


def test_onnx_graph_gives_the_export_vectors_at_any_batch_and_length(tmp_path):
    out, torch_model = _export_onnx(make_tiny_model(tmp_path), tmp_path / "export")
    encoder = OnnxEncoder(out)
    for batch_size in (1, 3, len(MIXED_TEXTS)):  # batch and sequence axes differ from the traced 2 x 7
        got = encoder.encode(MIXED_TEXTS, batch_size=batch_size)
        assert _cosines(got, torch_model.encode(MIXED_TEXTS)).min() >= PARITY_MIN_COSINE
    np.testing.assert_allclose(got, torch_model.encode(MIXED_TEXTS), atol=1e-5)  # normalised like the export
    record = json.loads((out / "gte_export.json").read_text())["onnx"]
    assert record["files"] == {"fp32": ONNX_FILES["fp32"]} and record["parity_cosine"] >= PARITY_MIN_COSINE
    graph = onnx.load(str(out / ONNX_FILES["fp32"]), load_external_data=False)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert dims["input_ids"] == ["batch", "sequence"] and dims["attention_mask"] == ["batch", "sequence"]
    assert [o.name for o in graph.graph.output] == list(OUTPUTS)


def test_onnx_graph_of_a_rotated_model_applies_the_rotation(tmp_path):
    model = make_tiny_model(tmp_path)
    axes, _ = fit_rotation(model, MIXED_TEXTS[:4], MIXED_TEXTS[3:])
    out, torch_model = _export_onnx(rotated(model, axes), tmp_path / "rotated")
    assert torch_model.rotation is not None
    got = OnnxEncoder(out).encode(MIXED_TEXTS)
    assert _cosines(got, torch_model.encode(MIXED_TEXTS)).min() >= PARITY_MIN_COSINE
    assert _cosines(got, model.encode(MIXED_TEXTS)).min() < 0.99  # the unrotated vectors are not what it gives


def test_sentence_transformers_modules_on_the_onnx_token_states_give_its_own_vectors(tmp_path):
    # sentence-transformers' ONNX backend runs onnx/model.onnx for last_hidden_state and pools in its own modules
    # (its loader needs optimum, which cannot be installed beside transformers 5): the same path, by hand.
    model = make_tiny_model(tmp_path)
    axes, _ = fit_rotation(model, MIXED_TEXTS[:4], MIXED_TEXTS[3:])
    out, _ = _export_onnx(rotated(model, axes), tmp_path / "export")
    st = SentenceTransformer(str(out), device="cpu")
    features = st.tokenize(MIXED_TEXTS)
    session = OnnxEncoder(out).session
    feed = {i.name: features[i.name].numpy() for i in session.get_inputs()}
    features["token_embeddings"] = torch.from_numpy(session.run(["last_hidden_state"], feed)[0])
    for module in list(st)[1:]:  # Pooling, Dense (the rotation), Normalize
        features = module(features)
    expected = st.encode(MIXED_TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(features["sentence_embedding"].detach().numpy(), expected, atol=1e-5)


def _optimum_works() -> bool:
    """Whether optimum gives what sentence-transformers' ONNX backend imports (optimum.onnxruntime is lazy: the
    module imports even where the class cannot)."""
    try:
        importlib.import_module("optimum.onnxruntime").ORTModelForFeatureExtraction
    except Exception:  # noqa: BLE001 - absent, or installed against another transformers
        return False
    return True


# optimum-onnx 0.1.0 (the newest) pins transformers < 4.58; installed with --no-deps beside transformers 5 its import
# fails (`cannot import name 'is_offline_mode' from 'transformers.utils'`): docs/serving.md
@pytest.mark.skipif(not _optimum_works(), reason="sentence-transformers' ONNX backend needs optimum's "
                    "ORTModelForFeatureExtraction, which does not import beside transformers 5 (docs/serving.md)")
def test_sentence_transformers_onnx_backend_loads_the_export(tmp_path):
    out, torch_model = _export_onnx(make_tiny_model(tmp_path), tmp_path / "export")
    st = SentenceTransformer(str(out), backend="onnx", device="cpu")
    np.testing.assert_allclose(st.encode(MIXED_TEXTS), torch_model.encode(MIXED_TEXTS), atol=1e-5)


def test_gte_export_onnx_int8_writes_both_graphs_and_the_int8_one_encodes(tmp_path):
    out = tmp_path / "export"
    assert export_main(["tiny", str(out), "--onnx", "int8"]) == 0
    torch_model = load_model(out)
    assert (out / ONNX_FILES["fp32"]).is_file() and (out / ONNX_FILES["int8"]).is_file()
    got = load_onnx(out, "int8").encode(MIXED_TEXTS)
    assert got.shape == (len(MIXED_TEXTS), torch_model.dim)
    assert _cosines(got, torch_model.encode(MIXED_TEXTS)).mean() > 0.9  # int8 weights: close, not equal


def test_gte_encode_backend_onnx_prints_the_torch_similarities(tmp_path, capsys):
    out = tmp_path / "export"
    export_model(make_tiny_model(tmp_path), out, onnx="fp32")
    texts = ["the cat plays piano", "a dog plays guitar", "stock price fell today"]
    assert encode_main(["--model", str(out), *texts]) == 0
    torch_lines = capsys.readouterr().out.splitlines()
    assert encode_main(["--model", str(out), "--backend", "onnx", *texts]) == 0
    onnx_lines = capsys.readouterr().out.splitlines()
    assert onnx_lines[0].endswith("backend=onnx") and onnx_lines[1:] == torch_lines[1:]


def test_onnx_backend_without_a_graph_says_how_to_export_one(tmp_path):
    out = export_model(make_tiny_model(tmp_path), tmp_path / "plain")
    with pytest.raises(UserError, match=r"onnx/model_qint8.onnx: missing; .* `gte export SRC OUT --onnx int8`"):
        encode_main(["--model", str(out), "--backend", "onnx-int8", "a text"])
    with pytest.raises(UserError, match="--bf16: applies to --backend torch only"):
        encode_main(["--model", str(out), "--backend", "onnx", "--bf16", "a text"])


@pytest.mark.integration
def test_minilm_rotated_exports_to_onnx_within_parity(minilm, tmp_path):
    # one export covers both: the MiniLM backbone and a rotation on top (an unrotated graph is the same minus
    # one MatMul, checked on the tiny model above)
    axes, _ = fit_rotation(minilm, REAL_TEXTS, REAL_TEXTS[::-1])
    turned = rotated(minilm, axes)
    out = export_model(turned, tmp_path / "rotated", onnx="fp32")
    got = load_onnx(out).encode(REAL_TEXTS, batch_size=2)
    assert _cosines(got, turned.encode(REAL_TEXTS)).min() >= PARITY_MIN_COSINE
    assert json.loads((out / "gte_export.json").read_text())["onnx"]["parity_cosine"] >= PARITY_MIN_COSINE
