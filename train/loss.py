"""Contrastive losses on embedding matrices: InfoNCE and GTE's improved loss (one joint partition function).

Pure functions: tensors in, a scalar out. Nothing here gathers, logs or holds the model; the caller gathers the
candidates across ranks (train.distributed.gather_with_grad) and passes `rows`, the query rows this process owns.

GTE (arXiv 2308.03281), s = cosine, t = temperature, for query i with positive d_i:
    L_i = -log( e^{s(q_i,d_i)/t} / Z_i )
    Z_i = sum_j     e^{s(q_i,d_j)/t}      (1) query -> all documents, positive and hard negatives included
        + sum_{j!=i} e^{s(q_i,q_j)/t}      (2) query -> other queries
        + sum_j     e^{s(q_j,d_i)/t}      (3) all queries -> this positive (j = i is the positive again, as in
                                               the paper's formula)
        + sum_{j!=i} e^{s(d_i,d_j)/t}      (4) this positive -> other queries' documents (hard negatives included;
                                               the documents of query i itself are masked)
ONE softmax over all four terms (not the average of two losses). Hard negatives are documents only: they join (1)
and (4) as candidates, never as anchors. InfoNCE is term (1) alone.

False negatives: with text hashes given, any candidate whose text equals the text of query i or of its positive d_i
is dropped from row i's denominator (a duplicate is not a negative); the positive itself is never dropped. So in
(2) a repeated query is dropped, in (1)/(4) a repeated positive, in (3) a query identical to q_i (which would be a
second copy of the positive score).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("infonce", "gte")


def contrastive_loss(
    q: Tensor,
    d: Tensor,
    neg: Tensor | None = None,
    *,
    kind: str = "gte",
    temperature: float = 0.01,
    q_hash: Tensor | None = None,
    d_hash: Tensor | None = None,
    neg_hash: Tensor | None = None,
    rows: slice | None = None,
) -> Tensor:
    """Mean contrastive loss over the query rows `rows` (default all) of a global batch.

    q, d: [N, H] queries and their positives (row i of d is query i's); neg: [N, K, H] hard negatives or None.
    Embeddings need not be normalised (cosine is taken here). Hashes (train.batch.Batch.hashes): q_hash, d_hash [N],
    neg_hash [N, K]; given, they mask duplicate texts out of the denominators.
    """
    _check_inputs(q, d, neg, kind, temperature, q_hash, d_hash, neg_hash)
    n, h = q.shape
    neg = q.new_zeros((n, 0, h)) if neg is None else neg
    k = neg.shape[1]
    mine = torch.arange(n, device=q.device)[rows if rows is not None else slice(None)]  # [r] global row ids
    # Low precision would wreck logits at t=0.01 (a bf16 cosine is off by ~4e-3, i.e. 0.4 in a logit).
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, d, neg = (_unit(x) for x in (q, d, neg))
        docs = torch.cat([d, neg.reshape(n * k, h)])  # [N + N*K, H]: positives, then query 0's negatives, ...
        owner = torch.cat([torch.arange(n, device=q.device), torch.arange(n, device=q.device).repeat_interleave(k)])
        qi, di = q[mine], d[mine]  # [r, H]
        diag_q = torch.arange(n, device=q.device)[None, :] == mine[:, None]  # [r, N]: the anchor's own column
        pos_d = torch.arange(n + n * k, device=q.device)[None, :] == mine[:, None]  # [r, N + N*K]: the positive
        own_d = owner[None, :] == mine[:, None]  # [r, N + N*K]: the documents of the anchor's own query
        dup_q, dup_d = _duplicates(mine, q_hash, d_hash, neg_hash, n, k)  # [r, N], [r, N + N*K]
        q2d = (qi @ docs.T).masked_fill(dup_d & ~pos_d, float("-inf"))  # (1) [r, N+N*K]
        blocks = [q2d]
        if kind == "gte":
            blocks.append((qi @ q.T).masked_fill(diag_q | dup_q, float("-inf")))  # (2) [r, N]
            blocks.append((di @ q.T).masked_fill(dup_q & ~diag_q, float("-inf")))  # (3) [r, N]
            blocks.append((di @ docs.T).masked_fill(own_d | dup_d, float("-inf")))  # (4) [r, N + N*K]
        logits = torch.cat(blocks, dim=1) / temperature  # [r, C]
        positive = logits[torch.arange(mine.numel(), device=q.device), mine]  # [r]: q2d's column i is s(q_i, d_i)
        return (torch.logsumexp(logits, dim=1) - positive).mean()


def _unit(x: Tensor) -> Tensor:
    """L2-normalise the last dim, in float32 at least (bf16/fp16 inputs are upcast, float64 kept)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return F.normalize(x, dim=-1)


def _duplicates(
    mine: Tensor, q_hash: Tensor | None, d_hash: Tensor | None, neg_hash: Tensor | None, n: int, k: int
) -> tuple[Tensor, Tensor]:
    """Masks of candidates whose text equals the anchor pair's query or positive text: [r, N] over the queries
    and [r, N + N*K] over the documents. All False without hashes."""
    r, device = mine.numel(), mine.device
    if d_hash is None:
        none = torch.zeros((r, n + n * k), dtype=torch.bool, device=device)
        return none[:, :n], none
    q_hash, d_hash = q_hash.to(device), d_hash.to(device)
    neg_hash = d_hash.new_zeros((n, 0)) if neg_hash is None else neg_hash.to(device)
    doc_hash = torch.cat([d_hash, neg_hash.reshape(n * k)])  # [N + N*K], same layout as `docs`
    anchors = torch.stack([q_hash[mine], d_hash[mine]], dim=1)  # [r, 2]: the texts of row i's pair

    def equal_to_anchor(cand: Tensor) -> Tensor:  # [C] -> [r, C]
        return (cand[None, :, None] == anchors[:, None, :]).any(-1)

    return equal_to_anchor(q_hash), equal_to_anchor(doc_hash)


def _check_inputs(
    q: Tensor,
    d: Tensor,
    neg: Tensor | None,
    kind: str,
    temperature: float,
    q_hash: Tensor | None,
    d_hash: Tensor | None,
    neg_hash: Tensor | None,
) -> None:
    if kind not in LOSSES:
        raise ValueError(f"loss kind={kind!r} is not supported; choose one of {LOSSES}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0 (GTE uses 0.01)")
    if q.ndim != 2 or q.shape != d.shape:
        raise ValueError(f"q and d must both be [N, H]; got q {tuple(q.shape)} and d {tuple(d.shape)}")
    n, h = q.shape
    if neg is not None and (neg.ndim != 3 or neg.shape[0] != n or neg.shape[2] != h):
        raise ValueError(f"neg must be [N={n}, K, H={h}]; got {tuple(neg.shape)}")
    if (q_hash is None) != (d_hash is None):
        raise ValueError("pass both q_hash and d_hash (duplicate masking needs the texts of both sides) or neither")
    if q_hash is not None and (q_hash.shape != (n,) or d_hash.shape != (n,)):
        raise ValueError(f"q_hash and d_hash must be [N={n}]; got {tuple(q_hash.shape)}, {tuple(d_hash.shape)}")
    k = 0 if neg is None else neg.shape[1]
    if q_hash is not None and k > 0 and (neg_hash is None or neg_hash.shape != (n, k)):
        got = None if neg_hash is None else tuple(neg_hash.shape)
        raise ValueError(f"with hashes and {k} hard negatives per query, neg_hash must be [N={n}, K={k}]; got {got}")
