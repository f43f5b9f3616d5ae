"""The model card (README.md) of an export, rendered from its gte_export.json."""

from __future__ import annotations

import json


def render_card(meta: dict) -> str:
    """Markdown model card: base model, backbone family, pooling, dimensions, max length, prompts, training config,
    results."""
    prompts = meta.get("prompts") or {}
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, feature-extraction, gte]",
        "language: [en]",
        "---",
        "",
        "# GTE-style text embedding model",
        "",
        # one stage or two, fine-tune or pretrain: the card says what every gte-train model shares
        f"Trained with the gte-train framework (contrastive learning on query-document pairs, {meta.get('pooling')} "
        "pooling, cosine similarity).",
        "",
        "| property | value |",
        "| --- | --- |",
        f"| base model | {meta.get('base_model') or 'unknown'} |",
        f"| family | {meta.get('family') or 'unknown'} |",
        f"| pooling | {meta.get('pooling')} |",
        f"| dimensions | {meta.get('dim')} |",
        *([f"| Matryoshka dims | {meta['matryoshka_dims']} |"] if meta.get("matryoshka_dims") else []),
        *(["| rotation | principal axes (2_Dense): the leading dims carry the most, so a prefix truncates well |"]
          if meta.get("rotated") else []),
        f"| max sequence length | {meta.get('max_seq_len')} |",
        f"| L2-normalised output | {meta.get('normalize')} |",
        f"| query prompt | {prompts.get('query', '')!r} |",
        f"| document prompt | {prompts.get('document', '')!r} |",
        *_lora_rows(meta.get("lora")),
        "",
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "model = SentenceTransformer('path/to/this/folder')",
        "emb = model.encode(['a sentence', 'another one'])",
        *([f"small = SentenceTransformer('path/to/this/folder', truncate_dim={_small_dim(meta)})"]
          if _small_dim(meta) else []),
        "```",
        "",
        "With transformers alone: `AutoModel` + `AutoTokenizer`, mean of the last hidden states over the attention",
        "mask, " + ("then `v @ W.T` with W the `linear.weight` of 2_Dense/model.safetensors (the rotation), "
                    if meta.get("rotated") else "") + "then L2 normalisation if the table says so.",
        "",
    ]
    results = meta.get("eval_results") or {}
    if results:
        lines += ["## Evaluation", "", "| task | metric | value |", "| --- | --- | --- |"]
        for task, metrics in sorted(results.items()):
            for name, value in sorted(metrics.items()):
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                lines.append(f"| {task} | {name} | {shown} |")
        lines.append("")
    if meta.get("train_config"):
        lines += ["## Training configuration", "", "```json", json.dumps(meta["train_config"], indent=2), "```", ""]
    return "\n".join(lines)


def _small_dim(meta: dict) -> int | None:
    """A truncation to show in the usage: the smallest Matryoshka dim, or a third of a rotated model's dims."""
    if meta.get("matryoshka_dims"):
        return min(meta["matryoshka_dims"])
    return int(meta["dim"]) // 3 if meta.get("rotated") and meta.get("dim") else None


def _lora_rows(lora: dict | None) -> list[str]:
    """Table rows for a LoRA fine-tune: rank, alpha, adapted layers, and how the export holds the adapter."""
    if not lora:
        return []
    held = {"merged": "merged into the weights (a plain model)",
            "adapter": "a PEFT adapter beside the unmerged base weights (loading needs peft)"}
    return [
        f"| LoRA | r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']} on the base model's "
        f"{', '.join(lora['target_modules'])} layers |",
        f"| LoRA export | {held.get(lora.get('export'), lora.get('export'))} |",
    ]
