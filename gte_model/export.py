"""Export a GTEModel to one folder that every client loads to the same vectors.

Layout (sentence-transformers' module format over a plain Hugging Face model folder):
  config.json, model.safetensors, tokenizer files incl. vocab.txt   -> AutoModel / AutoTokenizer
  modules.json, sentence_bert_config.json, 1_Pooling/, 2_Normalize/,
  config_sentence_transformers.json (prompts, cosine)              -> SentenceTransformer
  gte_export.json (base model, settings, training config, eval)     -> our own loader and the model card
  README.md                                                         -> the model card
The folder is written next to its destination and renamed into place, so a crash never leaves half an export.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from gte_model.card import render_card


def export_model(
    model, out_dir: str | Path, train_config: dict | None = None, eval_results: dict | None = None
) -> Path:
    """Write `model` (a GTEModel) to out_dir atomically; returns the folder."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _write_hf(model, tmp)
    _write_st(model, tmp)
    meta = {
        "base_model": model.base_model,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "max_seq_len": model.max_seq_len,
        "dim": model.dim,
        "prompts": model.prompts,
        "train_config": train_config,
        "eval_results": eval_results or {},
    }
    _write_json(tmp / "gte_export.json", meta)
    (tmp / "README.md").write_text(render_card(meta))
    _replace_dir(tmp, out)
    return out


def update_eval_results(export_dir: str | Path, results: dict) -> None:
    """Merge evaluation results into an export's gte_export.json and re-render its model card."""
    folder = Path(export_dir)
    meta_file = folder / "gte_export.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    meta.setdefault("eval_results", {}).update(results)
    _write_json(meta_file, meta)
    (folder / "README.md").write_text(render_card(meta))


def _write_hf(model, folder: Path) -> None:
    backbone = model.backbone
    # Gradient checkpointing or a compiled wrapper must not leak into the saved config.
    backbone = getattr(backbone, "_orig_mod", backbone)
    backbone.save_pretrained(str(folder), safe_serialization=True)
    model.tokenizer.model_max_length = model.max_seq_len
    model.tokenizer.save_pretrained(str(folder))
    if not (folder / "vocab.txt").is_file():
        _write_wordpiece_vocab(model.tokenizer, folder)


def _write_wordpiece_vocab(tokenizer, folder: Path) -> None:
    """transformers 5 saves only tokenizer.json; older clients and BertTokenizer(slow) want vocab.txt."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "WordPiece":
        return
    vocab = backend.get_vocab(with_added_tokens=True)  # token -> id
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ValueError(f"WordPiece vocabulary ids are not contiguous 0..{len(by_id) - 1}; cannot write vocab.txt")
    (folder / "vocab.txt").write_text("".join(tok + "\n" for tok, _ in by_id))


def _write_st(model, folder: Path) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if model.normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
        (folder / "2_Normalize").mkdir()
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": model.max_seq_len, "do_lower_case": False})
    (folder / "1_Pooling").mkdir()
    _write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": model.dim,
            "pooling_mode_cls_token": model.pooling == "cls",
            "pooling_mode_mean_tokens": model.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "include_prompt": True,
        },
    )
    _write_json(
        folder / "config_sentence_transformers.json",
        {"prompts": model.prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def _replace_dir(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
