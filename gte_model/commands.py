"""`gte encode`, `gte export`, `gte merge`, `gte rotate`: the model's own command-line jobs. User errors (a missing or
damaged model folder, an output folder that is not ours) are raised as UserError; the `gte` boundary prints them in
one line.

CPU example:  gte encode "A man plays guitar." "Someone plays an instrument." "The market fell."
              gte export all-MiniLM-L6-v2 runs/minilm-export [--onnx int8]
              gte encode --model runs/minilm-export --backend onnx-int8 "a text" "another"
An output folder that exists is replaced only with --overwrite (overwrite=true for gte merge), and only if the
same command built it (its owner marker, gte_model.core.atomic): a trained model is never lost to a typo.
"""

from __future__ import annotations

import argparse

from gte_model.core.atomic import check_replaceable
from gte_model.core.errors import UserError
from gte_model.export import export_model
from gte_model.load import DEFAULT_MODEL, load_model
from gte_model.onnx_export import BACKENDS, ONNX_FORMS, load_onnx, require_onnx

DEMO_TEXTS = [
    "A man is playing a guitar.",
    "Someone is playing a musical instrument.",
    "The stock market fell sharply after the announcement.",
    "Share prices dropped today.",
]


def encode_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gte encode", description="Embed texts and print cosine similarities.")
    parser.add_argument("texts", nargs="*", help="texts to embed (default: four demo sentences)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="preset, packaged short name or folder")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with bf16 units)")
    parser.add_argument("--backend", choices=["torch", *BACKENDS], default="torch",
                        help="torch (default), or the export's ONNX graph through onnxruntime: onnx (fp32), onnx-int8")
    parser.add_argument("--prompt-name", default=None, metavar="NAME",
                        help="prepend the model's prompt NAME: query, document, or a training source's (data.prompts)")
    args = parser.parse_args(argv)
    texts = args.texts or DEMO_TEXTS
    check_utf8(texts, "TEXT")  # before the slow load
    if args.backend != "torch" and args.bf16:
        raise UserError(f"--bf16: applies to --backend torch only, not {args.backend}; drop --bf16")
    model = load_model(args.model) if args.backend == "torch" else load_onnx(args.model, BACKENDS[args.backend])
    if args.prompt_name is not None and args.prompt_name not in model.prompts:
        raise UserError(f"--prompt-name {args.prompt_name}: the model has no such prompt; it has "
                        f"{sorted(model.prompts) or 'none'}; pick one of them or leave --prompt-name out")
    emb = model.encode(texts, bf16=args.bf16, normalize=True, prompt_name=args.prompt_name)
    sims = emb @ emb.T
    print(f"model: {model.base_model}  dim={model.dim}  pooling={model.pooling}  max_seq_len={model.max_seq_len}"
          f"  backend={args.backend}")
    width = max(len(t[:50]) for t in texts)
    for i, t in enumerate(texts):
        row = " ".join(f"{s:6.3f}" for s in sims[i])
        print(f"{t[:50]:<{width}}  {row}")
    return 0


def check_utf8(texts: list[str], what: str) -> None:
    """Refuse an argument that was not valid UTF-8: Python hands its bytes over as lone surrogates (\\udcXX), which
    no tokenizer encodes."""
    for i, text in enumerate(texts, start=1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = ord(text[exc.start]) - 0xDC00 if 0xDC80 <= ord(text[exc.start]) <= 0xDCFF else None
            raw = f"byte 0x{byte:02x}" if byte is not None else f"code point U+{ord(text[exc.start]):04X}"
            raise UserError(f"{what} {i}: not valid UTF-8 ({raw} at character {exc.start}); pass the text in UTF-8 "
                            "(check the terminal's or the file's encoding, e.g. iconv -t UTF-8)") from None


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gte export", description="Export a model to a loadable folder.")
    parser.add_argument("src", help="preset, packaged short name or model folder")
    parser.add_argument("out", help="output folder (created atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it is an earlier gte export")
    parser.add_argument("--max-seq-len", type=int, default=None, help="override the max sequence length")
    parser.add_argument("--pooling", choices=["mean", "cls"], default=None)
    parser.add_argument("--no-normalize", action="store_true", help="export without the L2 normalisation module")
    parser.add_argument("--onnx", nargs="?", const="fp32", choices=ONNX_FORMS, default=None,
                        help="also write the ONNX graph: fp32 (default) or int8 (fp32 + int8 weights) under OUT/onnx/")
    parser.add_argument("--push", metavar="REPO", default=None,
                        help="then upload OUT to the Hugging Face Hub model repo REPO (needs a token and a network)")
    args = parser.parse_args(argv)
    check_replaceable(args.out, "OUT", "gte export", args.overwrite, "--overwrite")  # before the slow load
    if args.onnx:
        require_onnx("--onnx")
    model = load_model(
        args.src, pooling=args.pooling, max_seq_len=args.max_seq_len, normalize=False if args.no_normalize else None
    )
    out = export_model(model, args.out, key="OUT", overwrite=args.overwrite, onnx=args.onnx)
    print(f"exported {args.src} -> {out}")
    if args.push:
        from gte_model.hub import push_folder

        print(f"pushed {out} -> {push_folder(out, args.push)}")
    return 0


def merge_main(argv: list[str]) -> int:
    """`gte merge [CONFIG.yaml] models=[a,b] weights=[...] out_dir=...` (gte_model.merge)."""
    from gte_model.core.config import config_from_argv
    from gte_model.merge import MergeConfig
    from gte_model.merge import __doc__ as merge_doc

    cfg = config_from_argv(MergeConfig, argv, merge_doc)
    if cfg is not None:
        run_merge(cfg)
    return 0


def run_merge(cfg, log=print):
    """Merge cfg.models with cfg.weights, or weights fit on cfg.fit.data; export to cfg.out_dir with the weights (and
    the fit's scores) in its gte_export.json. Returns the weights."""
    from gte_model.core.config import ConfigError
    from gte_model.merge import fit_weights, merge_models

    errors = cfg.validate()
    if not cfg.out_dir:
        errors.append("out_dir is not set: pass out_dir=<folder for the merged model>")
    if errors:
        raise ConfigError("invalid merge config:\n  " + "\n  ".join(errors))
    check_replaceable(cfg.out_dir, "out_dir", "gte merge", cfg.overwrite)  # before loading and fitting
    models = [load_model(name) for name in cfg.models]
    weights, table = tuple(cfg.weights), {}
    if not weights:
        tasks = fit_examples(cfg.fit.data, cfg.fit.rows, key="fit.data", purpose="fit the merge weights on")
        weights, table = fit_weights(models, tasks, cfg.fit.step, cfg.fit.batch_size, cfg.bf16, log=log)
    merged = merge_models(models, weights)
    record = {"merge": {"models": list(cfg.models), "weights": list(weights),
                        "fit": {",".join(map(str, w)): s for w, s in table.items()}}}
    export_model(merged, cfg.out_dir, train_config=record, key="out_dir", what="gte merge", overwrite=cfg.overwrite,
                 flag="overwrite=true")
    log(f"[merge] weights {list(weights)} -> {cfg.out_dir}")
    return weights


def rotate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="gte rotate", description="Turn a model's embeddings to their principal axes (gte_model.rotate): the "
        "same full-dim similarities, far better truncated ones.")
    parser.add_argument("src", help="packaged short name or model folder")
    parser.add_argument("out", help="output folder (created atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it is an earlier gte rotate output")
    parser.add_argument("--data", nargs="+", required=True, metavar="PAIRS_DIR",
                        help="pairs dirs (gte prep output) whose train rows' queries and positives fit the axes")
    parser.add_argument("--rows", type=int, default=600, help="train rows per source (default 600)")
    parser.add_argument("--fp32", action="store_true", help="encode in fp32 (default: bf16 autocast)")
    args = parser.parse_args(argv)
    run_rotate(args.src, args.out, args.data, args.rows, bf16=not args.fp32, key="OUT", overwrite=args.overwrite)
    return 0


def run_rotate(src, out, data: list[str], rows: int, bf16: bool = True, batch_size: int = 64, key: str = "out",
               log=print, what: str = "gte rotate", overwrite: bool = False):
    """Fit the principal axes of src's embeddings of `rows` train rows per source of the pairs dirs `data`;
    export the rotated model to out (its gte_export.json keeps src's training record under "source"). out is
    marked as built by `what` and replaces an existing one only with `overwrite` (check_replaceable)."""
    import json
    from pathlib import Path

    from gte_model.export import META_FILE
    from gte_model.rotate import captured, fit_rotation, rotated

    if rows < 2:
        raise UserError(f"rows={rows}: must be >= 2 (the axes of one text are not a rotation worth fitting)")
    check_replaceable(out, key, what, overwrite, "--overwrite")  # before loading and fitting
    model = load_model(src)
    tasks = fit_examples(data, rows, key="data", purpose="fit the rotation on")
    queries = [q for qs, _ in tasks.values() for q in qs]
    documents = [d for _, ds in tasks.values() for d in ds]
    axes, emb = fit_rotation(model, queries, documents, batch_size, bf16)
    third = model.dim // 3
    log(f"[rotate] {len(emb)} texts from {len(tasks)} sources; the first {third} of {model.dim} dims hold "
        f"{captured(emb @ axes.T, third):.1%} of the embeddings' second moment (before: {captured(emb, third):.1%})")
    meta_file = Path(str(src)) / META_FILE
    prior = json.loads(meta_file.read_text()).get("train_config") if meta_file.is_file() else None
    record = {"rotate": {"model": str(src), "data": list(data), "rows": rows, "texts": len(emb)}, "source": prior}
    export_model(rotated(model, axes), out, train_config=record, key=key, what=what, overwrite=overwrite)
    log(f"[rotate] {src} -> {out}")
    return out


def fit_examples(dirs: list[str], rows: int, key: str, purpose: str) -> dict[str, tuple[list[str], list[str]]]:
    """`rows` evenly spaced train rows of every source of each pairs dir: {"<dir name>/<source>": (queries,
    positives)}. key: the config key or argument naming dirs; purpose: what the rows are for (error messages)."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from gte_model.core import pairs

    tasks = {}
    for folder in dirs:
        manifest = pairs.read_manifest(folder, key=key)
        for source, entry in manifest["sources"].items():
            part = entry.get("train", {})
            files = part.get("files", [])
            if not files:
                continue
            first = pairs.resolve(Path(folder), files[0])
            pairs.check_shard(first, part, 0, f"{Path(folder) / pairs.MANIFEST_FILE} sources.{source}.train")
            table = pq.read_table(first, columns=["query", "positive"])
            pick = sorted({int(i) for i in range(0, table.num_rows, max(1, table.num_rows // rows))})[:rows]
            table = table.take(pick)
            tasks[f"{Path(folder).name}/{source}"] = (table["query"].to_pylist(), table["positive"].to_pylist())
    if not tasks:
        raise UserError(f"{key}={dirs}: no source with train rows to {purpose}")
    return tasks
