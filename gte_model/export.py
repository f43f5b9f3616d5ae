"""Export a GTEModel to one folder that every client loads to the same vectors.

Layout (sentence-transformers' module format over a plain Hugging Face model folder):
  config.json, model.safetensors, tokenizer files incl. vocab.txt   -> AutoModel / AutoTokenizer
  modules.json, sentence_bert_config.json, 1_Pooling/, [2_Dense/,] N_Normalize/,
  config_sentence_transformers.json (prompts, cosine)              -> SentenceTransformer
  (2_Dense: a rotated model's rotation, gte_model.rotate: no bias, identity activation)
  [onnx/model.onnx, onnx/model_qint8.onnx] (--onnx; gte_model.onnx_export) -> onnxruntime, gte encode --backend
  gte_export.json (base model, settings, LoRA, training config, eval) -> our own loader and the model card
  README.md                                                         -> the model card
  .gte-owner                                                        -> marks the folder ours (core.atomic)
A backbone with LoRA adapters (gte_model.lora) is written merged by default: a plain model, no peft needed to load
it. With lora_export="adapter" the folder holds the base weights unmerged plus adapter_config.json and
adapter_model.safetensors; transformers (with peft) and sentence-transformers load base + adapter from it, to the
same vectors. Its adapter_config.json names this folder's absolute path as the base model (sentence-transformers
reads the base config from there): after moving the folder, edit base_model_name_or_path.
A model whose weights hold NaN or inf is refused (gte_model.load would refuse to read it back).
The folder is built as `.<out>.gte-tmp-<pid>@<host>` beside its destination and renamed into place
(core.atomic.build_dir), so a crash never leaves half an export; a failed export removes its temp folder, and the
next export into the same parent removes those a killed process left behind. An existing folder is replaced only
when the same command built it and overwrite is asked for (`--overwrite`; core.atomic.check_replaceable).

`gte export SRC OUT` (export_main) writes a preset, packaged model or model folder this way.

CPU example:  gte export all-MiniLM-L6-v2 runs/minilm-export [--overwrite] [--onnx int8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import save_file

from gte_model.card import render_card
from gte_model.core.atomic import build_dir, check_replaceable, write_json, write_text
from gte_model.core.errors import UserError
from gte_model.load import load_model, remote_code_files
from gte_model.lora import adapter_files, lora_settings, without_lora
from gte_model.model import GTEModel, count_non_finite
from gte_model.onnx_export import ONNX_FORMS, require_onnx, write_onnx
from gte_model.pooling import POOLING_MODES
from gte_model.rotate import DENSE_ACTIVATION, DENSE_WEIGHT

META_FILE = "gte_export.json"
LORA_EXPORTS = ("merged", "adapter")


def export_model(
    model: GTEModel,
    out_dir: str | Path,
    train_config: dict | None = None,
    eval_results: dict | None = None,
    key: str = "out_dir",
    lora_export: str = "merged",
    what: str = "gte export",
    overwrite: bool = False,
    flag: str = "--overwrite",
    onnx: str | None = None,
) -> Path:
    """Write `model` to out_dir atomically; returns the folder. `key` names out_dir in error messages (the
    config key or argument the user set). An existing out_dir is replaced only if `what` (the command, marked in
    the folder) built it and `overwrite` is set (`flag`: how the user sets it).
    lora_export: how a LoRA backbone is written, merged (a plain model) or adapter (base + PEFT adapter).
    onnx: also write the ONNX graph, "fp32" or "int8" (fp32 + int8; gte_model.onnx_export), traced from the folder
    as written and checked against it before the folder is renamed into place."""
    if lora_export not in LORA_EXPORTS:
        raise ValueError(f"lora_export={lora_export!r}: choose one of {', '.join(LORA_EXPORTS)}")
    out = Path(out_dir)
    bad = count_non_finite(model.backbone)
    if bad:  # the loader refuses such weights; do not write a folder nobody can use
        raise UserError(f"{key}={out}: the model's weights hold {bad} non-finite values (NaN or inf); the run that "
                        "produced it diverged; nothing was written; export an earlier checkpoint or retrain")
    with build_dir(out, what, key, overwrite, flag) as tmp:
        lora = lora_settings(model.backbone)
        _write_hf(model, tmp, out.resolve(), lora_export if lora else None)
        _write_st(model, tmp)
        meta = {
            "name": out.name,
            "base_model": model.base_model,
            "family": model.backbone.config.model_type,
            "lora": lora and {**lora, "export": lora_export},
            # the backbone's own code, copied by save_pretrained (config.json auto_map): loading runs it
            "remote_code": remote_code_files(tmp) if getattr(model.backbone.config, "auto_map", None) else [],
            "pooling": model.pooling,
            "normalize": model.normalize,
            "max_seq_len": model.max_seq_len,
            "dim": model.dim,
            "matryoshka_dims": model.matryoshka_dims,
            "rotated": model.rotation is not None,
            "prompts": model.prompts,
            "train_config": train_config,
            "eval_results": eval_results or {},
        }
        if onnx is not None:
            # the model in hand already runs its own code (if any): reading the folder back trusts the same code
            meta["onnx"] = write_onnx(load_model(tmp, trust_remote_code=bool(meta["remote_code"])), tmp, onnx)
        write_json(tmp / META_FILE, meta)
        write_text(tmp / "README.md", render_card(meta))
    return out


def update_eval_results(export_dir: str | Path, results: dict) -> None:
    """Merge evaluation results into an export's gte_export.json and re-render its model card."""
    folder = Path(export_dir)
    meta_file = folder / META_FILE
    try:
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{meta_file}: not valid JSON ({exc}); re-export the model with `gte export`") from exc
    meta.setdefault("eval_results", {}).update(results)
    write_json(meta_file, meta)
    write_text(folder / "README.md", render_card(meta))


def _write_hf(model: GTEModel, folder: Path, final: Path, lora_export: str | None) -> None:
    backbone = model.backbone
    # Gradient checkpointing or a compiled wrapper must not leak into the saved config.
    backbone = getattr(backbone, "_orig_mod", backbone)
    if lora_export is not None:
        adapted, backbone = backbone, without_lora(backbone, merge=lora_export == "merged")
        if lora_export == "adapter":
            adapter_files(adapted, folder, str(final))
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
    write_text(folder / "vocab.txt", "".join(tok + "\n" for tok, _ in by_id))


def _write_st(model: GTEModel, folder: Path) -> None:
    kinds = ["Transformer", "Pooling"] + ["Dense"] * (model.rotation is not None) + ["Normalize"] * model.normalize
    modules = [{"idx": i, "name": str(i), "path": f"{i}_{kind}" if i else "",
                "type": f"sentence_transformers.models.{kind}"} for i, kind in enumerate(kinds)]
    for module in modules[2:]:
        (folder / module["path"]).mkdir()
    if model.rotation is not None:
        dense = folder / modules[2]["path"]
        write_json(dense / "config.json", {"in_features": model.dim, "out_features": model.dim, "bias": False,
                                           "activation_function": DENSE_ACTIVATION})
        save_file({DENSE_WEIGHT: model.rotation.detach().float().cpu().contiguous()}, str(dense / "model.safetensors"))
    write_json(folder / "modules.json", modules)
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": model.max_seq_len, "do_lower_case": False})
    (folder / "1_Pooling").mkdir()
    write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": model.dim,
            "pooling_mode_cls_token": model.pooling == "cls",
            "pooling_mode_mean_tokens": model.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_lasttoken": model.pooling == "last",
            "include_prompt": True,
        },
    )
    write_json(
        folder / "config_sentence_transformers.json",
        {"prompts": model.prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gte export", description="Export a model to a loadable folder.")
    parser.add_argument("src", help="preset, packaged short name or model folder")
    parser.add_argument("out", help="output folder (created atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it is an earlier gte export")
    parser.add_argument("--max-seq-len", type=int, default=None, help="override the max sequence length")
    parser.add_argument("--pooling", choices=POOLING_MODES, default=None)
    parser.add_argument("--no-normalize", action="store_true", help="export without the L2 normalisation module")
    parser.add_argument("--onnx", nargs="?", const="fp32", choices=ONNX_FORMS, default=None,
                        help="also write the ONNX graph: fp32 (default) or int8 (fp32 + int8 weights) under OUT/onnx/")
    parser.add_argument("--push", metavar="REPO", default=None,
                        help="then upload OUT to the Hugging Face Hub model repo REPO (needs a token and a network)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own code (config.json auto_map); read it first")
    args = parser.parse_args(argv)
    check_replaceable(args.out, "OUT", "gte export", args.overwrite, "--overwrite")  # before the slow load
    if args.onnx:
        require_onnx("--onnx")
    model = load_model(
        args.src, pooling=args.pooling, max_seq_len=args.max_seq_len, normalize=False if args.no_normalize else None,
        trust_remote_code=args.trust_remote_code, trust_flag="--trust-remote-code",
    )
    out = export_model(model, args.out, key="OUT", overwrite=args.overwrite, onnx=args.onnx)
    print(f"exported {args.src} -> {out}")
    if args.push:
        from gte_model.hub import push_folder

        print(f"pushed {out} -> {push_folder(out, args.push)}")
    return 0
