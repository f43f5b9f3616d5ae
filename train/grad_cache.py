"""Gradient caching (GradCache, Gao et al. 2021): a contrastive step over a batch far larger than memory allows.

The loss needs every embedding of the global batch at once, but the activations of only one chunk need to live at
a time. Three phases:
  1. forward every chunk WITHOUT grad, recording the RNG state before each chunk;
  2. the loss on the detached embeddings, differentiated w.r.t. the embeddings only: the gradient cache;
  3. re-forward each chunk WITH grad, replaying its RNG state (same dropout masks as phase 1), and backprop the
     cached gradient through it: d(sum(emb * cached_grad))/dtheta = dL/demb . demb/dtheta.
Same loss and same parameter gradients as one forward of the whole batch with the same chunks (the plain step in
train/step.py), at the memory of one chunk plus the [M, H] embeddings. Gradient accumulation does NOT do this: it
splits the negatives too; caching keeps all of them.

Under DDP, chunks but the last run their backward inside no_sync() so gradients are reduced once, at the end.
The optimizer step is left to the caller. DeepSpeed ZeRO >= 2 (gradients partitioned and reduced inside each
backward call) is not proven with several backward calls per step (RECIPE.md); the config layer rejects it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

Chunk = dict[str, Tensor]


def _capture_rng() -> tuple[Tensor, Tensor | None]:
    """CPU and (if in use) current-CUDA-device RNG states."""
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


@contextlib.contextmanager
def _replay_rng(state: tuple[Tensor, Tensor | None]):
    """Run a block with a recorded RNG state; the RNG state outside the block is left as it was."""
    cpu, cuda = state
    devices = [torch.cuda.current_device()] if cuda is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)
        yield


def cached_step(
    encode: Callable[[Chunk], Tensor],
    chunks: list[Chunk],
    loss_fn: Callable[[Tensor], Tensor],
    *,
    backward: Callable[[Tensor], None] = lambda t: t.backward(),
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Tensor:
    """One cached forward/backward over `chunks`; gradients are accumulated into the parameters, the detached
    loss is returned.

    encode: one tokenised chunk -> embeddings [c, H] (the model forward).
    loss_fn: all embeddings [M, H] in chunk order, float32 -> scalar loss (it may gather across ranks).
    backward: called on each chunk's surrogate (pass accelerator.backward). autocast/no_sync: context factories.
    """
    # Phase 1: embeddings without activations; the RNG state before each chunk is what phase 3 replays.
    states, embs = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_capture_rng())
            with autocast():
                embs.append(encode(chunk).float())  # [c, H]

    # Phase 2: the gradient cache dL/demb. A plain autograd.grad: it touches no parameter, so it must not go
    # through the injected backward (accelerate/DeepSpeed would treat it as a model backward).
    flat = torch.cat(embs).requires_grad_()  # [M, H]
    loss = loss_fn(flat)
    (cache,) = torch.autograd.grad(loss, flat)
    cache = cache.split([e.shape[0] for e in embs])  # per chunk [c, H]

    # Phase 3: re-forward with grad under the same RNG state, backprop the cached gradient.
    last = len(chunks) - 1
    for k, (chunk, state) in enumerate(zip(chunks, states)):
        with no_sync() if k < last else contextlib.nullcontext():
            with _replay_rng(state):
                with autocast():
                    emb = encode(chunk)  # [c, H]
                surrogate = (emb.float() * cache[k]).sum()  # its gradient w.r.t. emb is the cached one
            backward(surrogate)
    return loss.detach()
