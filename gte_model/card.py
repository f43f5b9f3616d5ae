"""The model card (README.md) of an export, rendered from its gte_export.json: the Hub's metadata (base_model, license,
datasets, pipeline_tag, model-index with the pipeline's own evaluation results) in the YAML front matter, then the
properties, usage (sentence-transformers, transformers, the rotation, ONNX), results and training recipe."""

from __future__ import annotations

import json
from pathlib import Path

from gte_model.assets import PACKAGED

# Both packaged base models are published under Apache-2.0; a preset starts from random weights (this project's
# license). Any other base model's license is its own: the card leaves it out instead of guessing.
_PACKAGED_LICENSE = "apache-2.0"
_TASK_TYPES = (("beir/", "Retrieval"), ("mteb-beir/", "Retrieval"), ("sts-b", "STS"), ("mteb:", "MTEB"))
# train config keys shown as the recipe (dotted paths into gte_export.json's train_config), when present
_RECIPE_KEYS = ("model.init_from", "model.max_seq_len", "data.query_prompt", "loss.kind", "loss.temperature",
                "loss.matryoshka_dims", "train.global_batch_size", "train.max_steps", "optim.lr", "optim.warmup_steps")


def render_card(meta: dict) -> str:
    """Markdown model card: base model, backbone family, pooling, dimensions, max length, prompts, training config,
    results."""
    prompts = meta.get("prompts") or {}
    lines = [
        *front_matter(meta),
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
        *([f"| remote code | {', '.join(meta['remote_code'])}: loading runs it, so clients pass "
           "trust_remote_code=True (gte: --trust-remote-code, or the config's trust_remote_code=true) |"]
          if meta.get("remote_code") else []),
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
        "With transformers alone: `AutoModel` + `AutoTokenizer`, "
        + _POOLING_WORDS.get(meta.get("pooling"), "pooling") + ", "
        + ("then `v @ W.T` with W the `linear.weight` of 2_Dense/model.safetensors (the rotation), "
                    if meta.get("rotated") else "") + "then L2 normalisation if the table says so.",
        "",
        *_rotation_section(meta),
        *_onnx_section(meta),
    ]
    results = meta.get("eval_results") or {}
    if results:
        lines += ["## Evaluation", "", "| task | metric | value |", "| --- | --- | --- |"]
        for task, metrics in sorted(results.items()):
            for name, value in sorted(metrics.items()):
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                lines.append(f"| {task} | {name} | {shown} |")
        lines.append("")
    lines += _recipe_section(meta.get("train_config"))
    if meta.get("train_config"):
        lines += ["## Training configuration", "", "```json", json.dumps(meta["train_config"], indent=2), "```", ""]
    return "\n".join(lines)


# how a client pools `last_hidden_state` [B, T, H] itself, per pooling mode (gte_model.pooling)
_POOLING_WORDS = {
    "mean": "mean of the last hidden states over the attention mask",
    "cls": "the first token's last hidden state",
    "last": "the last hidden state of each text's last token (the tokenizer appends EOS; right padding: position "
            "attention_mask.sum(1) - 1, left padding: -1)",
}


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


def front_matter(meta: dict) -> list[str]:
    """The Hub's YAML metadata; every value is written as JSON, which YAML reads as written."""
    base, datasets = hub_base_model(meta.get("base_model")), training_sources(meta.get("train_config"))
    license_ = _PACKAGED_LICENSE if base or str(meta.get("base_model") or "").startswith("preset:") else None
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             "tags: [sentence-transformers, feature-extraction, sentence-similarity, gte]", "language: [en]"]
    lines += [f"license: {license_}"] * bool(license_) + [f"base_model: {json.dumps(base)}"] * bool(base)
    lines += [f"datasets: {json.dumps(datasets)}"] * bool(datasets)
    lines += model_index(meta.get("name") or "gte-model", meta.get("eval_results") or {})
    return [*lines, "---"]


def hub_base_model(base: str | None) -> str | None:
    """The Hub id of a packaged base model (sentence-transformers/all-MiniLM-L6-v2); None for a preset or a folder."""
    packaged = PACKAGED.get(str(base or "").lower())
    return f"sentence-transformers/{packaged.name}" if packaged else None


def training_sources(train_config: dict | None) -> list[str]:
    """The names of the pairs-dir sources the model was trained on: data.sources, else every source of the
    manifest at data.train_dir (while it exists); a rotated model's come from its source's record."""
    config = train_config if isinstance(train_config, dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    if data.get("sources"):
        return [str(s) for s in data["sources"]]
    if data.get("train_dir"):
        try:
            return sorted(json.loads((Path(str(data["train_dir"])) / "manifest.json").read_text())["sources"])
        except (OSError, ValueError, KeyError, TypeError):
            return []
    return training_sources(config["source"]) if isinstance(config.get("source"), dict) else []


def model_index(name: str, results: dict) -> list[str]:
    """model-index lines: one entry per full-dim float result (truncated `@dim` and quantized `@int8` rows stay in
    the card's table), metrics named as on the Hub (ndcg@10 -> ndcg_at_10)."""
    entries = []
    for task, metrics in sorted(results.items()):
        kind = next((t for prefix, t in _TASK_TYPES if task.startswith(prefix)), None)
        values = {k: v for k, v in metrics.items() if isinstance(v, float)} if isinstance(metrics, dict) else {}
        if kind is None or "@" in task or not values:
            continue
        dataset = task.split("/", 1)[-1].split(":", 1)[-1]
        entries += [f"  - task: {{type: {kind}}}",
                    f"    dataset: {{name: {json.dumps(dataset)}, type: {json.dumps(task)}}}",
                    "    metrics:"]
        entries += [f"    - {{type: {k.replace('@', '_at_')}, value: {round(v, 4)}}}" for k, v in values.items()]
    return ["model-index:", f"- name: {json.dumps(name)}", "  results:", *entries] if entries else []


def _rotation_section(meta: dict) -> list[str]:
    if not meta.get("rotated"):
        return []
    return ["## The rotation", "",
            "The vectors are turned to their principal axes (`gte rotate`; 2_Dense holds the orthogonal matrix): "
            "full-dim similarities are unchanged and the leading dims carry the most, so a prefix of the vector is "
            f"a good smaller embedding. Keep the first d dims and re-normalise (`truncate_dim={_small_dim(meta)}` "
            "in SentenceTransformer); never drop 2_Dense, or a truncation loses what the rotation gained.", ""]


def _onnx_section(meta: dict) -> list[str]:
    files = (meta.get("onnx") or {}).get("files") or {}
    if not files:
        return []
    parts = "backbone, pooling, rotation, normalisation" if meta.get("rotated") else "backbone, pooling, normalisation"
    lines = ["## ONNX", "",
             f"`{files['fp32']}` holds the whole model ({parts}): its output `sentence_embedding` is the finished "
             "vector, `last_hidden_state` what sentence-transformers' ONNX backend pools itself. Inputs input_ids, "
             "attention_mask (and token_type_ids where the backbone takes them); batch and length are dynamic.", "",
             "```python",
             "import onnxruntime",
             "from transformers import AutoTokenizer",
             "tok = AutoTokenizer.from_pretrained('path/to/this/folder')",
             f"session = onnxruntime.InferenceSession('path/to/this/folder/{files['fp32']}')",
             "batch = tok(['a sentence'], padding=True, truncation=True, return_tensors='np')",
             "emb = session.run(['sentence_embedding'], {i.name: batch[i.name] for i in session.get_inputs()})[0]",
             "```", ""]
    if "int8" in files:
        lines += [f"`{files['int8']}`: the same graph with int8 weights (onnxruntime dynamic quantization); in "
                  "sentence-transformers: `SentenceTransformer(path, backend='onnx', model_kwargs={'file_name': "
                  f"'{files['int8']}'}})`.", ""]
    return lines


def _recipe_section(train_config: dict | None) -> list[str]:
    """A few lines of the training recipe (the full config follows as JSON), and the data it saw."""
    config, rows = train_config if isinstance(train_config, dict) else {}, []
    for key in _RECIPE_KEYS:
        value = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value not in (None, "", []):
            rows.append(f"| {key} | {json.dumps(value)} |")
    sources = training_sources(train_config)
    if not rows and not sources:
        return []
    lines = ["## Training recipe", "", "Contrastive training with the gte-train framework (in-batch negatives; "
             "mined hard negatives in a second stage where the config has them).", ""]
    lines += ["| setting | value |", "| --- | --- |", *rows, ""] if rows else []
    if sources:
        lines += [f"Training data: the sources {', '.join(sources)} of a `gte prep` pairs folder (built-in sources "
                  "by name); their held-out queries are the `beir/<source>` results above.", ""]
    return lines
