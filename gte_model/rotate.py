"""Principal-axes rotation: an orthogonal map of the embedding space whose first axis carries the most of the
embeddings' second moment, the second axis the most of what is left, and so on, fit on texts like those the model
will embed (the training pairs' queries and documents).

A rotation keeps every dot product, so cosine similarity at the full dim is unchanged (up to float rounding);
but embeddings cut to their first d dims (Matryoshka-style truncation, sentence-transformers' truncate_dim) keep the
d directions that matter most instead of d arbitrary ones: what truncated nDCG@10 it keeps on the quickstart's final
model, with no training, is in benchmarks/README.md, "Rotation instead of Matryoshka".

  gte rotate runs/quickstart/merged runs/rotated --data runs/quickstart/data/pairs   # gte_model.rotate_cli

The rotation lives in the model (GTEModel.rotation, applied after pooling, in fp32) and in the export as
sentence-transformers' Dense module (no bias, identity activation), so SentenceTransformer gives the same vectors;
a plain transformers user multiplies the mean-pooled vector by 2_Dense's weight (the model card shows how). The
axes are the eigenvectors of the uncentred second-moment matrix E^T E / n of the unit embeddings E: uncentred, so
the map needs no bias and dot products stay exact. Each axis's sign is fixed (its largest entry positive), so the
same embeddings give the same rotation.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from gte_model.model import GTEModel

DENSE_WEIGHT = "linear.weight"  # sentence-transformers' Dense module: an nn.Linear named `linear`
DENSE_ACTIVATION = "torch.nn.modules.linear.Identity"


def principal_axes(emb: np.ndarray) -> np.ndarray:
    """[D, D] orthogonal matrix whose rows are the principal axes of the rows of emb [N, D], by descending second
    moment (row i . row j = delta_ij; emb @ axes.T puts the largest share of sum ||e||^2 in the first columns)."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or len(emb) < 2:
        raise ValueError(f"embeddings of shape {emb.shape}: need [N >= 2, D]")
    moment = emb.T @ emb / len(emb)  # [D, D], symmetric
    values, vectors = np.linalg.eigh(moment)  # ascending eigenvalues, unit eigenvectors in columns
    axes = vectors[:, np.argsort(-values, kind="stable")].T  # [D, D], rows by descending value
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    return axes * signs[:, None]


def captured(emb: np.ndarray, dim: int) -> float:
    """The share of the rows' squared norm held by their first `dim` coordinates."""
    emb = np.asarray(emb, dtype=np.float64)
    return float((emb[:, :dim] ** 2).sum() / (emb**2).sum())


def fit_rotation(model: GTEModel, queries: list[str], documents: list[str], batch_size: int = 64,
                 bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(axes, embeddings): the principal axes of the model's unit embeddings of `queries` (query prompt) and
    `documents` (document prompt) as the model embeds them now (a rotation it already has included), and those
    embeddings [len(queries) + len(documents), dim]."""
    q = model.encode(queries, batch_size=batch_size, normalize=True, prompt_name="query", bf16=bf16)
    d = model.encode(documents, batch_size=batch_size, normalize=True, prompt_name="document", bf16=bf16)
    emb = np.concatenate([q, d])
    return principal_axes(emb), emb


def rotated(model: GTEModel, axes: np.ndarray) -> GTEModel:
    """A copy of `model` whose vectors are its own turned by `axes` (after any rotation it already had)."""
    out = copy.deepcopy(model)
    turn = torch.as_tensor(axes, dtype=torch.float32)
    if model.rotation is not None:
        turn = turn @ model.rotation.float().cpu()
    out.set_rotation(turn)
    return out
