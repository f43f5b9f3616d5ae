"""ONNX forms of an export: the whole embedding model (backbone, pooling, the rotation when there is one,
normalisation) as one graph that onnxruntime runs, fp32 and int8.

  onnx/model.onnx        fp32; inputs input_ids, attention_mask[, token_type_ids] [batch, sequence] (both axes
                         dynamic); outputs last_hidden_state [batch, sequence, hidden] (what sentence-transformers'
                         ONNX backend reads; it pools in its own modules) and sentence_embedding [batch, dim] (the
                         finished vector: what `gte encode --backend onnx` and any plain onnxruntime client read)
  onnx/model_qint8.onnx  the same graph with int8 weights (onnxruntime dynamic quantization: weights int8 per
                         channel, activations quantized per batch at run time); sentence-transformers loads it with
                         model_kwargs={"file_name": "onnx/model_qint8.onnx"}

The graph is traced from the folder as written (gte_model.load reads it back first), so it is the PyTorch export
that it must match: fp32 vectors are checked against it on PARITY_TEXTS (cosine >= PARITY_MIN_COSINE) before the
folder is renamed into place; a graph that misses is an error, never a silent export.

  gte export all-MiniLM-L6-v2 runs/minilm-onnx --onnx int8      # fp32 + int8
  gte encode --model runs/minilm-onnx --backend onnx-int8 "a text" "another"
"""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gte_model.core.errors import UserError, import_extra
from gte_model.model import GTEModel, check_texts, collate
from gte_model.pooling import pool

ONNX_FORMS = ("fp32", "int8")
ONNX_FILES = {"fp32": "onnx/model.onnx", "int8": "onnx/model_qint8.onnx"}
BACKENDS = {"onnx": "fp32", "onnx-int8": "int8"}  # gte encode --backend NAME -> form
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("last_hidden_state", "sentence_embedding")
OPSET = 17
PARITY_MIN_COSINE = 0.9999
PARITY_TEXTS = [
    "A man is playing a guitar.",
    "The stock market fell sharply after the announcement of the new interest rates by the central bank.",
    "ok",
    "What is the boiling point of water at sea level, and why does it drop at altitude?",
]


class EmbeddingGraph(nn.Module):
    """What the ONNX graph computes: token states and the finished sentence vector of a GTEModel."""

    def __init__(self, model: GTEModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.model.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        emb = pool(hidden, attention_mask, self.model.pooling)  # [B, T, H] -> [B, H]
        if self.model.rotation is not None:
            emb = emb @ self.model.rotation.T  # [B, H]
        if self.model.normalize:
            emb = F.normalize(emb, p=2, dim=-1)
        return hidden, emb


def write_onnx(model: GTEModel, folder: Path, form: str = "fp32") -> dict:
    """Write onnx/model.onnx (and onnx/model_qint8.onnx for form="int8") of `model` into folder, after checking
    its fp32 vectors against the model's; returns the record kept in gte_export.json["onnx"]."""
    if form not in ONNX_FORMS:
        raise ValueError(f"form={form!r}: choose one of {', '.join(ONNX_FORMS)}")
    require_onnx("--onnx")
    model = model.float().cpu().eval()
    (folder / "onnx").mkdir(exist_ok=True)
    fp32 = folder / ONNX_FILES["fp32"]
    _trace(model, fp32)
    parity = parity_cosine(model, fp32)
    if parity < PARITY_MIN_COSINE:
        raise RuntimeError(f"{fp32}: the ONNX graph's vectors reach cosine {parity:.6f} to the PyTorch model's, "
                           f"below {PARITY_MIN_COSINE}; the traced graph is wrong for this backbone")
    record = {"files": {"fp32": ONNX_FILES["fp32"]}, "opset": OPSET, "parity_cosine": round(parity, 7)}
    if form == "int8":
        quantize_int8(fp32, folder / ONNX_FILES["int8"])
        record["files"]["int8"] = ONNX_FILES["int8"]
        record["int8_parity_cosine"] = round(parity_cosine(model, folder / ONNX_FILES["int8"]), 5)
    return record


def require_onnx(key: str = "--onnx") -> None:
    """A one-line MissingExtra unless onnx (torch.onnx's writer) and onnxruntime (parity, int8) import."""
    for module in ("onnx", "onnxruntime"):
        import_extra(module, key, "onnx", "export without --onnx")


def _trace(model: GTEModel, path: Path) -> None:
    """torch.onnx's TorchScript exporter: one self-contained file, every op of BERT-family backbones, dynamic
    batch and sequence axes."""
    names = [n for n in INPUTS if n != "token_type_ids" or _takes_token_types(model.backbone)]
    batch = collate(model.tokenize_ids(["a b", "a b c d e"]), model.tokenizer.pad_token_id)
    args = tuple(batch[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in (*names, "last_hidden_state")}
    axes["sentence_embedding"] = {0: "batch"}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings about shapes the graph keeps dynamic
        torch.onnx.export(EmbeddingGraph(model), args, str(path), input_names=names, output_names=list(OUTPUTS),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _takes_token_types(backbone: nn.Module) -> bool:
    return "token_type_ids" in inspect.signature(backbone.forward).parameters


def quantize_int8(src: Path, dst: Path) -> None:
    """onnxruntime's dynamic quantization (what sentence-transformers' export_dynamic_quantized_onnx_model runs
    through optimum): int8 weights of every MatMul, one scale per output channel (per tensor lost up to 0.14 cosine
    on short texts with all-MiniLM-L6-v2; per channel keeps >= 0.97)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])


def parity_cosine(model: GTEModel, path: Path, texts: Sequence[str] = PARITY_TEXTS) -> float:
    """The lowest cosine between the graph's vectors and the model's own (fp32, unnormalised) on texts."""
    ref = model.encode(list(texts), normalize=False, batch_size=len(texts))
    got = OnnxEncoder(path.parent.parent, path=path, settings=_settings(model)).encode(texts, normalize=False)
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return float(cos.min())


def _settings(model: GTEModel) -> dict:
    return {"prompts": model.prompts, "normalize": model.normalize, "max_seq_len": model.max_seq_len,
            "pooling": model.pooling, "base_model": model.base_model, "tokenizer": model.tokenizer}


class OnnxEncoder:
    """A model folder's ONNX graph behind GTEModel's encode(): the same prompts, truncation and batching."""

    def __init__(self, folder: str | Path, form: str = "fp32", path: Path | None = None,
                 settings: dict | None = None, threads: int = 0) -> None:
        ort = import_extra("onnxruntime", "--backend onnx", "onnx", "use --backend torch")
        folder = Path(folder)
        path = path or folder / ONNX_FILES[form]
        if not path.is_file():
            raise UserError(f"{path}: missing; the folder has no {form} ONNX graph; export one with "
                            f"`gte export SRC OUT --onnx {form}` (or use --backend torch)")
        info = settings or _folder_settings(folder)
        for key in ("prompts", "normalize", "max_seq_len", "pooling", "base_model", "tokenizer"):
            setattr(self, key, info.get(key))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.session.get_outputs()[OUTPUTS.index("sentence_embedding")].shape[1])

    def encode(self, texts: Sequence[str], batch_size: int = 32, normalize: bool | None = None,
               prompt_name: str | None = None, prompt: str | None = None, bf16: bool = False,
               max_seq_len: int | None = None, **_unused) -> np.ndarray:
        """Embed texts -> float32 [N, dim], length-sorted batches, as GTEModel.encode (bf16 does not apply)."""
        items = check_texts(texts)
        prefix = prompt if prompt is not None else (self.prompts or {}).get(prompt_name, "") if prompt_name else ""
        limit = int(max_seq_len or self.max_seq_len)
        ids = self.tokenizer([prefix + t for t in items], truncation=True, max_length=limit)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.zeros((len(items), int(self.dim)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = collate([ids[i] for i in idx], self.tokenizer.pad_token_id)
            feed = {name: batch[name].numpy() for name in self.inputs}
            out[idx] = self.session.run(["sentence_embedding"], feed)[0]
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def _folder_settings(folder: Path) -> dict:
    """Prompts, normalisation, pooling and length of a model folder (its sentence-transformers files), and its
    tokenizer."""
    from transformers import AutoTokenizer

    from gte_model.load import read_st_settings

    st = read_st_settings(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return {"prompts": st.get("prompts") or {}, "normalize": st.get("normalize", False), "pooling": st.get("pooling"),
            "max_seq_len": st.get("max_seq_len") or tokenizer.model_max_length, "base_model": str(folder),
            "tokenizer": tokenizer}


def load_onnx(name_or_path: str | Path, form: str = "fp32", threads: int = 0) -> OnnxEncoder:
    """The ONNX graph (`form`: fp32 or int8) of a model folder, as an encoder."""
    from gte_model.load import model_folder

    folder = model_folder(name_or_path)
    if folder is None:
        raise UserError(f"{name_or_path}: a preset has no ONNX graph; export a model with `gte export SRC OUT "
                        f"--onnx {form}` and pass OUT")
    return OnnxEncoder(folder, form, threads=threads)
