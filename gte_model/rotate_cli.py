"""`gte rotate SRC OUT --data PAIRS_DIR ...`: fit the principal axes of SRC's embeddings (gte_model.rotate) on
train rows of pairs dirs and export the rotated model. Beside gte_model.rotate rather than in it: the export and
the loader import the rotation's format from there.

CPU example:  gte rotate all-MiniLM-L6-v2 runs/minilm-rotated --data data/pairs --rows 200
OUT is replaced only with --overwrite, and only if gte rotate built it (its owner marker, gte_model.core.atomic).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from gte_model.core.atomic import check_replaceable
from gte_model.core.errors import UserError
from gte_model.core.pairs import fit_examples
from gte_model.export import META_FILE, export_model
from gte_model.load import load_model
from gte_model.rotate import captured, fit_rotation, rotated


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
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own code (config.json auto_map); read it first")
    args = parser.parse_args(argv)
    run_rotate(args.src, args.out, args.data, args.rows, bf16=not args.fp32, key="OUT", overwrite=args.overwrite,
               trust_remote_code=args.trust_remote_code, trust_flag="--trust-remote-code")
    return 0


def run_rotate(src: str | Path, out: str | Path, data: list[str], rows: int, bf16: bool = True, batch_size: int = 64,
               key: str = "out", log: Callable[[str], object] = print, what: str = "gte rotate",
               overwrite: bool = False, trust_remote_code: bool = False,
               trust_flag: str = "trust_remote_code=True") -> Path:
    """Fit the principal axes of src's embeddings of `rows` train rows per source of the pairs dirs `data`;
    export the rotated model to out (its gte_export.json keeps src's training record under "source"). out is
    marked as built by `what` and replaces an existing one only with `overwrite` (check_replaceable).
    trust_remote_code, trust_flag: as gte_model.load_model's, for src."""
    if rows < 2:
        raise UserError(f"rows={rows}: must be >= 2 (the axes of one text are not a rotation worth fitting)")
    check_replaceable(out, key, what, overwrite, "--overwrite")  # before loading and fitting
    model = load_model(src, trust_remote_code=trust_remote_code, trust_flag=trust_flag)
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
    folder = export_model(rotated(model, axes), out, train_config=record, key=key, what=what, overwrite=overwrite)
    log(f"[rotate] {src} -> {out}")
    return folder
