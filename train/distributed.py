"""Cross-process helpers: the only module that imports torch.distributed.

Every function is the identity (or a no-op) when torch.distributed is not initialised, so the same loss code runs
in one process and in many. Gathers need the same local batch size on every rank (all_gather of equal shapes):
the sampler hands every rank an equal slice of the global batch.

How the loss is split (RECIPE.md, lesson 1): rank r computes the mean loss over ITS b query rows against the
candidates of ALL ranks (gathered with gradient), i.e. L_r = (1/b) sum_{i in rows(r)} l_i. The global-batch loss
is L = (1/(W*b)) sum_i l_i = (1/W) sum_r L_r. DDP averages parameter gradients over ranks (the 1/W), so each rank
must produce grad sum_r' dL_r'/dtheta through its own embeddings: every rank's loss touches this rank's embeddings
through the gather, so the backward of the gather sums the incoming gradient over ranks (all_reduce) before
keeping this rank's slice. Then DDP's average is exactly dL/dtheta of the single-process global batch. Multiplying
the loss by W (a common fix-up) is wrong here and is not done.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def group_backend() -> str | None:
    """The process group's backend (gloo, nccl, ...); None when torch.distributed is not initialised."""
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def local_rows(b: int) -> slice:
    """This rank's rows in a gathered batch of W local batches of b rows each."""
    rank, _ = world()
    return slice(rank * b, (rank + 1) * b)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        rank, size = world()
        ctx.rank, ctx.b = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)  # [W*b, ...]

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # Sum over ranks: every rank's loss used this rank's rows (see the module docstring for why not a mean).
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.b : (ctx.rank + 1) * ctx.b]  # [W*b, ...] -> [b, ...]


def gather_with_grad(x: Tensor) -> Tensor:
    """[b, ...] -> [W*b, ...] in rank order, differentiable; the identity when W == 1.

    Gather each column (queries, positives, negatives [b, K, H], hashes) with its own call, so row i of every
    gathered tensor still belongs to the same pair.
    """
    if world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_nograd(x: Tensor) -> Tensor:
    """[b, ...] -> [W*b, ...] in rank order, without gradient (hashes, labels, metrics). On NCCL, pass a CUDA
    tensor."""
    size = world()[1]
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def broadcast_object(obj):
    """Rank 0's obj on every rank (a picklable value, e.g. a name all ranks must agree on); obj in one process."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if world()[1] > 1:
        dist.barrier()


@torch.no_grad()
def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean of x over ranks, for logging (a copy; x is left alone)."""
    if world()[1] == 1:
        return x.detach().clone()
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world()[1]
