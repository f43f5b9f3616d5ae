"""The peer's best documented settings: the one place every comparison with sentence-transformers in benchmarks/
takes them from (benchmarks/gpu/peer.py, train_bench_workers.py, st_baseline.py), so a ratio never flatters us.

sentence-transformers (v5 and v6; `Transformer.unpad_inputs`, the `model_kwargs` of `SentenceTransformer`) trains
padding-free on CUDA when the model is loaded with `attn_implementation="flash_attention_2"` and a flash-attention
varlen kernel loads (the flash-attn package, or the `kernels` package with the kernels-community flash-attn kernel):
its collator then flattens every batch (transformers' DataCollatorWithFlattening: no padding, cu_seq_lens) and
attention runs varlen, as ours does. Otherwise it pads, with its default attention, "sdpa" (also the best it has on
a CPU). The rest is the same everywhere: bf16 autocast where ours runs bf16 (`bf16=True`) and its default fused
AdamW (`adamw_torch_fused`).
"""

from __future__ import annotations

from pathlib import Path

FLASH, SDPA = "flash_attention_2", "sdpa"


def peer_attention(device: str) -> str:
    """The attention the peer documents as fastest that can load here (before trying it)."""
    if device.startswith("cuda"):
        from transformers.utils import is_flash_attn_2_available, is_kernels_available

        if is_flash_attn_2_available() or is_kernels_available():
            return FLASH
    return SDPA


def load_peer(folder: str | Path, device: str):
    """(SentenceTransformer, settings): the model with the best attention that loads and runs here, and what it got:
    {"attention", "padding_free" (its collator flattens batches), "fallback" (why flash attention was not used)}."""
    from sentence_transformers import SentenceTransformer

    attention, settings = peer_attention(device), {}
    if attention == FLASH:
        try:
            model = SentenceTransformer(str(folder), device=device, model_kwargs={"attn_implementation": FLASH})
            _probe(model, device)
        except Exception as exc:  # noqa: BLE001 (a kernel the offline hub cannot fetch, a flash-attn for another torch)
            settings["fallback"] = f"{FLASH} did not run: {type(exc).__name__}: {str(exc)[:200]}"
            attention = SDPA
    if attention == SDPA:
        model = SentenceTransformer(str(folder), device=device, model_kwargs={"attn_implementation": SDPA})
    settings.update(attention=attention, padding_free=bool(getattr(model[0], "can_flatten_inputs", False)))
    return model, settings


def _probe(model, device: str) -> None:
    """One bf16 encode: a flash kernel that cannot load or run fails here, not in the timed steps."""
    import torch

    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
        model.encode(["a probe sentence", "another"], convert_to_tensor=True)


def real_lengths(batch: dict) -> list:
    """Per-text real token counts ([texts] tensors) of every text column of a collated peer batch: from the attention
    masks of a padded batch, from the cumulative lengths of a flattened (padding-free) one."""
    lengths = []
    for key, value in batch.items():
        if key.endswith("attention_mask"):
            lengths.append(value.sum(dim=1))
        elif key.endswith("cu_seq_lens_q"):
            lengths.append(value.diff())
    return lengths
