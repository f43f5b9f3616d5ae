"""The model fingerprint: which model produced a cached vector (gte_model.embed_cache's namespaces)."""

from __future__ import annotations

import hashlib
import json
import weakref

_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_fingerprint(model) -> str:
    """Digest of the weights, rotation (gte_model.rotate), tokenizer vocabulary and pooling: a retrained or rotated
    model never reuses stale vectors.

    Memoised per model object while no parameter changes (torch bumps a tensor's _version on in-place updates,
    e.g. an optimizer step), since hashing a large model's weights takes about a second.
    """
    rotation = getattr(model, "rotation", None)  # not in the state dict (a non-persistent buffer)
    state = {**model.state_dict(), **({"rotation": rotation} if rotation is not None else {})}
    # a state dict's tensors are new objects sharing their parameter's version counter; the rotation is replaced,
    # not updated, when a model is rotated again: its identity counts
    versions = (*(t._version for t in state.values()), id(rotation))
    memo = _FINGERPRINTS.get(model)
    if memo is not None and memo[0] == versions:
        return memo[1]
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=_torch_uint8()).numpy().tobytes())
    vocab = sorted(model.tokenizer.get_vocab().items())
    h.update(json.dumps(vocab).encode())
    pooling = getattr(model, "pooling", None)  # a cross-encoder has none
    h.update(f"{pooling}|{type(model.tokenizer).__name__}".encode())
    _FINGERPRINTS[model] = (versions, h.hexdigest())
    return h.hexdigest()


def _torch_uint8():
    import torch

    return torch.uint8
