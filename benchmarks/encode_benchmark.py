"""Serving throughput on this CPU, side by side in one run: texts/s and peak memory of one model served as
torch fp32, torch bf16 autocast, ONNX fp32 and ONNX int8 (gte export --onnx int8, through onnxruntime), with
sentence-transformers as the peer: its torch model always, and its own ONNX backend where it loads (it needs
optimum, which pins transformers < 4.58: on this venv the row says why it did not run). sentence-transformers' own
ONNX export of the model, the peer the issue asks for, goes through optimum as well and cannot run beside
transformers 5 even installed with --no-deps (the import errors: docs/serving.md), so it is not a row here.

Each form runs in its own process (so its peak RSS is its own), `--rounds` timed passes over the same texts after a
warm-up, best pass kept; the forms run in turn, round-robin over `--repeat` sweeps, so machine noise hits all alike.
Vectors are compared with torch fp32's (cosine of each text's pair).

  .venv/bin/python benchmarks/encode_benchmark.py [--model all-MiniLM-L6-v2] [--n 2000] [--batch-size 32]
  .venv/bin/python benchmarks/encode_benchmark.py --model runs/minilm-onnx   # an export that has onnx/ already
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

FORMS = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8", "st-torch", "st-onnx")


def load_encoder(form: str, folder: str, threads: int):
    """(encode(texts) -> [N, dim] float32) for one form."""
    import torch

    torch.set_num_threads(threads)
    if form.startswith("torch"):
        from gte_model import load_model

        model = load_model(folder)
        return lambda texts, bs: model.encode(texts, batch_size=bs, bf16=form == "torch-bf16", show_progress=False)
    if form.startswith("onnx"):
        from gte_model.onnx_export import load_onnx

        encoder = load_onnx(folder, form.split("-")[1], threads=threads)
        return lambda texts, bs: encoder.encode(texts, batch_size=bs)
    from sentence_transformers import SentenceTransformer

    kwargs = {"backend": "onnx", "model_kwargs": {"file_name": "onnx/model.onnx"}} if form == "st-onnx" else {}
    st = SentenceTransformer(folder, device="cpu", **kwargs)
    return lambda texts, bs: st.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)


def child(form: str, folder: str, texts_file: str, out_file: str, batch_size: int, rounds: int, threads: int) -> None:
    """One form in this process: load, warm up, time `rounds` passes, write texts/s, peak RSS and the vectors."""
    from gte_model.core.memory import peak_rss_mb

    texts = json.loads(Path(texts_file).read_text())
    try:
        encode = load_encoder(form, folder, threads)
    except Exception as exc:  # noqa: BLE001 - a peer that cannot load here is a row that says why
        Path(out_file + ".json").write_text(json.dumps({"form": form, "error": str(exc).splitlines()[0][:160]}))
        return
    encode(texts[:64], batch_size)  # warm-up: kernels, sessions, caches
    best, emb = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        emb = encode(texts, batch_size)
        best = min(best, time.perf_counter() - start)
    np.save(out_file + ".npy", np.asarray(emb, np.float32))
    Path(out_file + ".json").write_text(json.dumps({"form": form, "seconds": best, "texts_per_s": len(texts) / best,
                                                    "peak_rss_mb": peak_rss_mb()}))


def prepare_model(name: str, work: Path) -> str:
    """A folder with onnx/model.onnx and onnx/model_qint8.onnx: `name` itself, or its export into work."""
    from gte_model.load import model_folder

    folder = model_folder(name)
    if folder is not None and (folder / "onnx" / "model_qint8.onnx").is_file():
        return str(folder)
    from gte_model.export import export_main

    export_main([name, str(work / "export"), "--onnx", "int8"])
    return str(work / "export")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="sweeps over the forms (best of all kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--child", nargs=3, metavar=("FORM", "TEXTS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child[:1], args.folder, *args.child[1:], args.batch_size, args.rounds, args.threads)
        return
    from train.eval.sts import load_stsb

    s1, s2, _ = load_stsb("test")
    texts = list(dict.fromkeys(s1 + s2))[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = prepare_model(args.model, work)
        (work / "texts.json").write_text(json.dumps(texts))
        results: dict[str, dict] = {}
        for sweep in range(args.repeat):
            for form in args.forms:
                out = str(work / f"{form}-{sweep}")
                subprocess.run([sys.executable, __file__, "--child", form, str(work / "texts.json"), out, "--folder",
                                folder, "--batch-size", str(args.batch_size), "--rounds", str(args.rounds),
                                "--threads", str(args.threads)], check=True)
                row = json.loads(Path(out + ".json").read_text())
                if "error" not in row and Path(out + ".npy").is_file():
                    row["emb"] = np.load(out + ".npy")
                prev = results.get(form)
                if prev is None or row.get("texts_per_s", 0) > prev.get("texts_per_s", 0):
                    results[form] = row
        report(results, texts, folder, args)


def report(results: dict[str, dict], texts: list[str], folder: str, args) -> None:
    import onnxruntime
    import torch

    ref = results.get("torch-fp32", {}).get("emb")
    print(f"{folder}: {len(texts)} STS-B test sentences, batch {args.batch_size}, {args.threads} threads, best of "
          f"{args.rounds} passes x {args.repeat} sweeps; torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    print("| form | texts/s | seconds | peak RSS (MiB) | cosine to torch fp32: mean / min |")
    print("| --- | --- | --- | --- | --- |")
    for form, row in results.items():
        if "error" in row:
            print(f"| {form} | - | - | - | did not run: {row['error']} |")
            continue
        cos = "-"
        if ref is not None:
            c = (row["emb"] * ref).sum(1) / (np.linalg.norm(row["emb"], axis=1) * np.linalg.norm(ref, axis=1))
            cos = f"{c.mean():.5f} / {c.min():.5f}"
        print(f"| {form} | {row['texts_per_s']:.0f} | {row['seconds']:.2f} | {row['peak_rss_mb']:.0f} | {cos} |")


if __name__ == "__main__":
    main()
