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
second copy of the positive score). Multi-positive: the positive d_j of another row whose query text equals q_i's
is another positive of q_i, so it is dropped from (1) and (4) too.

Teacher (optional, unit teacher vectors of the same texts, or a cross-encoder's scores of each query's own
candidates, `Teacher`):
  - guided masking (GISTEmbed): any candidate of (1)-(4) other than the positive that the teacher scores above
    teacher(q_i, d_i) - margin is dropped (the teacher says it is as relevant as the positive);
  - distillation: + weight * KL(p_teacher || p_student) per row, both softmaxes at the distillation temperature over
    the same candidates of q_i: its positive and its hard negatives, or every document of (1) with in_batch (masked
    candidates left out of both);
  - or MarginMSE (GPL, Hofstaetter et al. 2020): + weight * the mean over those candidates c other than the positive
    of ((s(q_i,d_i) - s(q_i,c)) - (t(q_i,d_i) - t(q_i,c)))^2 / tau^2, the margins in logits at the distillation
    temperature tau (so the weight means the same at any tau).
  - t(q_i, c) is the teacher's cosine, or with `scores` its given score of the pair (a cross-encoder's, GPL's pseudo
    labels), read in the same place: over each query's own candidates only (a cross-encoder scores no other pairs),
    and without guided masking (which needs vectors).

Memory: the blocks are [r, C] for r anchor rows and C = N(1+K) (InfoNCE) or 2N(1+K) + 2N (GTE) candidates, i.e.
O(N^2). With row_chunk (or automatically above AUTO_CHUNK_ELEMENTS) the anchor rows are split into chunks whose
blocks are recomputed in backward (activation checkpointing), so one chunk's blocks exist at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

LOSSES = ("infonce", "gte")
DISTILL_KINDS = ("kl", "margin_mse")  # what the distillation term matches: softmaxes (KL) or score margins

# loss.row_chunk=0 (automatic) keeps one [rows, C] logits block under this many elements: 2^28 floats = 1 GiB in
# fp32; the loss's peak is a few such blocks (masks, logits, softmax in backward; benchmarks/loss_memory.py). A batch
# whose whole block fits (GTE, K=0: up to N = 8,192 pairs on one process) runs unchunked, bit for bit as before.
AUTO_CHUNK_ELEMENTS = 2**28


@dataclass
class Teacher:
    """Unit teacher vectors of the batch's texts, or its scores of each query's candidates (constants: no gradient),
    and what the loss does with them.

    q, d: [N, Ht]; neg: [N, K, Ht] or None (same layout as the student's); all None with `scores`.
    scores: [N, 1+K] raw scores of (q_i, d_i) and (q_i, neg_i_j), or None. guide_margin: None = no guided masking.
    distill_weight: 0 = no distillation term."""

    q: Tensor | None
    d: Tensor | None
    neg: Tensor | None = None
    guide_margin: float | None = None
    distill_weight: float = 0.0
    distill_temperature: float = 0.05
    distill_in_batch: bool = False
    distill_kind: str = "kl"  # one of DISTILL_KINDS
    scores: Tensor | None = None


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
    row_chunk: int = 0,
    teacher: Teacher | None = None,
) -> Tensor:
    """Mean contrastive loss over the query rows `rows` (default all) of a global batch.

    q, d: [N, H] queries and their positives (row i of d is query i's); neg: [N, K, H] hard negatives or None.
    Embeddings need not be normalised (cosine is taken here). Hashes (train.batch.Batch.hashes): q_hash, d_hash [N],
    neg_hash [N, K]; given, they mask duplicate texts out of the denominators.
    row_chunk: anchor rows per loss chunk (see rows_per_chunk); each chunk's [rows, C] blocks are recomputed in
    backward rather than saved, so memory holds one chunk's blocks, not O(N^2). Same loss and gradients.
    teacher: guided masking and/or distillation (see the module docstring).
    """
    _check_inputs(q, d, neg, kind, temperature, q_hash, d_hash, neg_hash, row_chunk, teacher)
    n, h = q.shape
    neg = q.new_zeros((n, 0, h)) if neg is None else neg
    k = neg.shape[1]
    mine = torch.arange(n, device=q.device)[rows if rows is not None else slice(None)]  # [r] global row ids
    # Low precision would wreck logits at t=0.01 (a bf16 cosine is off by ~4e-3, i.e. 0.4 in a logit).
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, d, neg = (_unit(x) for x in (q, d, neg))
        docs = torch.cat([d, neg.reshape(n * k, h)])  # [N + N*K, H]: positives, then query 0's negatives, ...
        row_losses = partial(_row_losses, q, d, docs, k, kind, temperature, (q_hash, d_hash, neg_hash),
                             _teacher_docs(teacher, n, k))
        chunk = rows_per_chunk(kind, n, k, row_chunk)
        if chunk >= mine.numel():
            return row_losses(mine).mean()  # one block [r, C]
        total = sum(_summed_checkpointed(row_losses, part) for part in mine.split(chunk))  # chunks of [chunk, C]
        return total / mine.numel()


def rows_per_chunk(kind: str, n: int, k: int, row_chunk: int = 0) -> int:
    """Anchor rows per loss chunk for a global batch of n pairs with k hard negatives each: row_chunk when set,
    else as many rows as keep one [rows, C] block within AUTO_CHUNK_ELEMENTS (at least 1). A process whose rows
    number no more than this computes the loss in one block."""
    if row_chunk:
        return row_chunk
    columns = n + n * k if kind == "infonce" else 2 * (n + n * k) + 2 * n  # C: (1), or (1) + (2) + (3) + (4)
    return max(1, AUTO_CHUNK_ELEMENTS // columns)


def _summed_checkpointed(row_losses: Callable[[Tensor], Tensor], part: Tensor) -> Tensor:
    """Sum of the losses of the rows `part` [c]; in backward its blocks are recomputed (the loss draws no random
    numbers, so no RNG state is kept), so at most one chunk's [c, C] blocks exist at a time."""
    return checkpoint(lambda p: row_losses(p).sum(), part, use_reentrant=False, preserve_rng_state=False)


def _row_losses(
    q: Tensor, d: Tensor, docs: Tensor, k: int, kind: str, temperature: float, hashes: tuple,
    teacher: tuple[Teacher, Tensor] | None, mine: Tensor,
) -> Tensor:
    """Loss of each anchor row in `mine` [r] (global row ids) -> [r]; q, d [N, H] and docs [N + N*K, H] unit;
    teacher: (its settings, its unit docs [N + N*K, Ht]) or None."""
    n = q.shape[0]
    owner = torch.cat([torch.arange(n, device=q.device), torch.arange(n, device=q.device).repeat_interleave(k)])
    qi, di = q[mine], d[mine]  # [r, H]
    diag_q = torch.arange(n, device=q.device)[None, :] == mine[:, None]  # [r, N]: the anchor's own column
    pos_d = torch.arange(n + n * k, device=q.device)[None, :] == mine[:, None]  # [r, N + N*K]: the positive
    own_d = owner[None, :] == mine[:, None]  # [r, N + N*K]: the documents of the anchor's own query
    drop_q, drop_d = _duplicates(mine, *hashes, n, k)  # [r, N], [r, N + N*K]
    if teacher is not None and teacher[0].guide_margin is not None:
        guided_q, guided_d = _guided(teacher, mine, kind)  # [r, N] x2 (q->q, d->q), [r, N+N*K] x2 (q->d, d->d)
    else:
        guided_q = guided_d = (False, False)
    q2d_drop = (drop_d | guided_d[0]) & ~pos_d
    q2d = (qi @ docs.T).masked_fill(q2d_drop, float("-inf"))  # (1) [r, N+N*K]
    blocks = [q2d]
    if kind == "gte":
        blocks.append((qi @ q.T).masked_fill(diag_q | drop_q | guided_q[0], float("-inf")))  # (2) [r, N]
        blocks.append((di @ q.T).masked_fill((drop_q | guided_q[1]) & ~diag_q, float("-inf")))  # (3) [r, N]
        blocks.append((di @ docs.T).masked_fill(own_d | drop_d | guided_d[1], float("-inf")))  # (4) [r, N + N*K]
    logits = torch.cat(blocks, dim=1) / temperature  # [r, C]
    positive = logits[torch.arange(mine.numel(), device=q.device), mine]  # [r]: q2d's column i is s(q_i, d_i)
    loss = torch.logsumexp(logits, dim=1) - positive  # [r]
    if teacher is not None and teacher[0].distill_weight:
        # [r, N + N*K]: the candidates distilled over (a masked duplicate never: its student logit is -inf)
        keep = ~q2d_drop if teacher[0].distill_in_batch else own_d & ~q2d_drop
        distill = _margin_mse if teacher[0].distill_kind == "margin_mse" else _distill
        loss = loss + teacher[0].distill_weight * distill(q2d, teacher, mine, keep)
    return loss


def _teacher_docs(teacher: Teacher | None, n: int, k: int) -> tuple[Teacher, Tensor | None] | None:
    """The teacher's unit documents in the student's docs layout [N + N*K, Ht] (None without a teacher; with
    scores, the scores alone: (teacher, None))."""
    if teacher is None:
        return None
    if teacher.scores is not None:
        if teacher.scores.shape != (n, 1 + k):
            raise ValueError(f"teacher scores have shape {tuple(teacher.scores.shape)}; the batch needs "
                             f"[{n}, {1 + k}]")
        if teacher.guide_margin is not None or teacher.distill_in_batch:
            raise ValueError("teacher scores cover each query's own candidates only: no guided masking and no "
                             "in-batch distillation")
        scores = teacher.scores.float() if teacher.scores.dtype in (torch.float16, torch.bfloat16) else teacher.scores
        return dataclasses.replace(teacher, scores=scores), None
    tq, td = _unit(teacher.q), _unit(teacher.d)
    tneg = _unit(teacher.neg) if teacher.neg is not None else tq.new_zeros((n, 0, tq.shape[1]))
    if tq.shape[0] != n or tneg.shape[:2] != (n, k):
        raise ValueError(f"teacher vectors cover {tq.shape[0]} rows x {tneg.shape[1]} negatives; the batch has "
                         f"{n} x {k}")
    teacher = Teacher(tq, td, tneg, teacher.guide_margin, teacher.distill_weight, teacher.distill_temperature,
                      teacher.distill_in_batch, teacher.distill_kind)
    return teacher, torch.cat([td, tneg.reshape(n * k, -1)])


def _guided(teacher: tuple[Teacher, Tensor], mine: Tensor, kind: str) -> tuple[tuple, tuple]:
    """GISTEmbed: candidates the teacher scores above teacher(q_i, d_i) - margin. -> ((q->q, d->q) [r, N] masks,
    (q->d, d->d) [r, N + N*K] masks); the caller keeps the positive itself."""
    t, tdocs = teacher
    tqi, tdi = t.q[mine], t.d[mine]  # [r, Ht]
    bar = (tqi * tdi).sum(-1, keepdim=True) - t.guide_margin  # [r, 1]
    q2d = tqi @ tdocs.T > bar
    if kind != "gte":
        return (False, False), (q2d, False)
    return (tqi @ t.q.T > bar, tdi @ t.q.T > bar), (q2d, tdi @ tdocs.T > bar)


def _distill(q2d: Tensor, teacher: tuple[Teacher, Tensor], mine: Tensor, keep: Tensor) -> Tensor:
    """KL(teacher || student) per row [r] over the candidates `keep` [r, N + N*K] of block (1), both at the
    distillation temperature. q2d: the student's cosine block (masked entries are -inf and never kept)."""
    tau = teacher[0].distill_temperature
    student = F.log_softmax((q2d / tau).masked_fill(~keep, float("-inf")), dim=1)  # [r, N + N*K]
    target = F.log_softmax((_teacher_q2d(teacher, mine) / tau).masked_fill(~keep, float("-inf")), dim=1)
    terms = target.exp() * (target - student)  # 0 * (-inf - -inf) would be nan: zero the left-out ones
    return terms.masked_fill(~keep, 0.0).sum(dim=1)


def _margin_mse(q2d: Tensor, teacher: tuple[Teacher, Tensor], mine: Tensor, keep: Tensor) -> Tensor:
    """MarginMSE per row [r]: the mean over the kept candidates [r, N + N*K] other than the positive (column i of
    row i) of the squared gap between the student's and the teacher's margins positive - candidate, in logits at
    the distillation temperature; 0 for a row with no such candidate."""
    t = teacher[0]
    rows = torch.arange(mine.numel(), device=q2d.device)
    others = keep.clone()
    others[rows, mine] = False
    student = q2d[rows, mine][:, None] - q2d  # [r, N + N*K]: s(q,d_i) - s(q,c); -inf entries are never kept
    scores = _teacher_q2d(teacher, mine)  # the teacher's block (1): the positive at column i, as the student's
    target = scores[rows, mine][:, None] - scores
    gaps = ((student - target) / t.distill_temperature).masked_fill(~others, 0.0)
    return gaps.square().sum(dim=1) / others.sum(dim=1).clamp(min=1)


def _teacher_q2d(teacher: tuple[Teacher, Tensor | None], mine: Tensor) -> Tensor:
    """The teacher's block (1) for the anchor rows `mine` [r] -> [r, N + N*K]: its cosines, or its scores placed at
    each row's own candidates (positive at column i, negative j at N + i*K + j; every other column 0, never kept)."""
    t, tdocs = teacher
    if t.scores is None:
        return t.q[mine] @ tdocs.T
    n, width = t.scores.shape  # [N, 1+K]
    k = width - 1
    columns = torch.cat([mine[:, None], n + mine[:, None] * k + torch.arange(k, device=mine.device)], dim=1)
    return t.scores.new_zeros((mine.numel(), n + n * k)).scatter(1, columns, t.scores[mine])  # [r, N + N*K]


def _unit(x: Tensor) -> Tensor:
    """L2-normalise the last dim, in float32 at least (bf16/fp16 inputs are upcast, float64 kept)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return F.normalize(x, dim=-1)


def _duplicates(
    mine: Tensor, q_hash: Tensor | None, d_hash: Tensor | None, neg_hash: Tensor | None, n: int, k: int
) -> tuple[Tensor, Tensor]:
    """Masks of candidates whose text equals the anchor pair's query or positive text: [r, N] over the queries
    and [r, N + N*K] over the documents, the latter also holding the positives of other rows with the anchor's
    query text (multi-positive). All False without hashes."""
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

    other_positive = d_hash.new_zeros((r, n + n * k), dtype=torch.bool)  # [r, N + N*K]
    other_positive[:, :n] = q_hash[None, :] == q_hash[mine][:, None]  # row j's positive, when q_j == q_i
    return equal_to_anchor(q_hash), equal_to_anchor(doc_hash) | other_positive


def _check_inputs(
    q: Tensor,
    d: Tensor,
    neg: Tensor | None,
    kind: str,
    temperature: float,
    q_hash: Tensor | None,
    d_hash: Tensor | None,
    neg_hash: Tensor | None,
    row_chunk: int,
    teacher: Teacher | None,
) -> None:
    if teacher is not None and not teacher.distill_temperature > 0:
        raise ValueError(f"distill_temperature={teacher.distill_temperature} must be > 0")
    if teacher is not None and teacher.distill_kind not in DISTILL_KINDS:
        raise ValueError(f"distill kind={teacher.distill_kind!r} is not supported; choose one of {DISTILL_KINDS}")
    if kind not in LOSSES:
        raise ValueError(f"loss kind={kind!r} is not supported; choose one of {LOSSES}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0 (GTE uses 0.01)")
    if row_chunk < 0:
        raise ValueError(f"row_chunk={row_chunk} must be >= 0 (rows per loss chunk; 0 = automatic)")
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
