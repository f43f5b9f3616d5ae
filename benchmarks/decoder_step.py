"""Decoder vs encoder training step (not a test): what a step of a decoder-LLM embedder costs against an encoder of
the same parameter count, in the product's own step (train.trainer.Trainer.step).

All models are random-init and share one tokenizer (the packaged all-MiniLM-L6-v2's WordPiece), so every text is the
same tokens for each; the same real Debian pairs (benchmarks/train_bench_workers.py), batch 32, max length 128 for
queries and documents, in-batch InfoNCE, AdamW, --precision fp32 or bf16 (autocast):

  encoder              BERT in all-MiniLM-L6-v2's shape: 6 layers, 384 wide, 12 heads, FFN 1536; mean pooling;
                       the product default (train.packed=true: the unpadded forward)
  encoder-padded       the same with train.packed=false: padded chunks
  qwen3                a Qwen3-shaped decoder with the encoder's parameters per layer: 6 layers, 384 wide, 6 query and
                       3 key/value heads of 64 (grouped-query attention 2:1, as Qwen3-0.6B), GLU FFN 1152, q/k RMSNorm,
                       RoPE, tied embeddings; 4 x 384^2 + 2 x 384 x 1536 = 2 x 384^2 + 2 x 384 x 192 + 3 x 384 x 1152
                       weights per layer; last-token pooling, causal attention, the unpadded forward (the default)
  qwen3-padded         the same with train.packed=false: padded chunks
  qwen3-bidirectional  the same as qwen3, model.bidirectional=true
  qwen3-lora           the same, LoRA r=16 on every projection (the base frozen: the optimizer holds the adapters)

Each runs in its own process, one after another (peak RSS is its own); warm-up steps are untimed. Reported per run:
parameters (all / trainable), s/step, pairs/s, non-padding tokens/s, peak RSS, and the step time relative to the
encoder's padded and unpadded runs and to the decoder's padded run.

  .venv/bin/python benchmarks/decoder_step.py                       # 2 warm-up + 5 timed steps, fp32
  .venv/bin/python benchmarks/decoder_step.py --steps 3 --warmup 1 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.train_bench_workers import debian_rows, write_pairs_dir  # noqa: E402

# system -> (model folder kind, extra `gte train` overrides)
SYSTEMS = {
    "encoder": ("encoder", ["model.pooling=mean"]),
    "encoder-padded": ("encoder", ["model.pooling=mean", "train.packed=false"]),
    "qwen3": ("qwen3", ["model.pooling=last"]),
    "qwen3-padded": ("qwen3", ["model.pooling=last", "train.packed=false"]),
    "qwen3-bidirectional": ("qwen3", ["model.pooling=last", "model.bidirectional=true"]),
    "qwen3-lora": ("qwen3", ["model.pooling=last", "model.lora.r=16", "model.lora.alpha=32"]),
}


def write_model(kind: str, folder: Path) -> Path:
    """A random-init backbone of `kind` (see the module docstring) + the MiniLM tokenizer, as a model folder."""
    import torch
    from transformers import AutoModel, AutoTokenizer, BertConfig, Qwen3Config

    from gte_model.assets import packaged_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(packaged_model_path("all-MiniLM-L6-v2")))
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, max_position_embeddings=512)
    if kind == "encoder":
        config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                            **ids)
    else:
        config = Qwen3Config(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=3,
                             head_dim=64, intermediate_size=1152, tie_word_embeddings=True,
                             bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, **ids)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def overrides(spec: dict) -> list[str]:
    """`gte train` keys of one run: in-batch InfoNCE at 0.05, AdamW 2e-5, no eval, checkpoints or warm-up schedule."""
    return [f"run.dir={spec['run_dir']}", f"data.train_dir={spec['pairs_dir']}", f"data.cache_dir={spec['cache_dir']}",
            f"data.query_max_len={spec['max_len']}", f"data.doc_max_len={spec['max_len']}", "data.num_negatives=0",
            "data.val_rows=0", f"train.global_batch_size={spec['batch']}", f"train.chunk_size={2 * spec['batch']}",
            f"train.max_steps={spec['warmup'] + spec['steps']}", "train.checkpoint_every=0", "train.eval_every=0",
            f"train.precision={spec['precision']}", "optim.lr=2e-5", "optim.weight_decay=0.01", "optim.warmup_steps=0",
            "loss.kind=infonce", "loss.temperature=0.05", "loss.mask_duplicates=false", "log.wandb=off",
            *spec["extra"]]


def run_worker(spec: dict) -> dict:
    """One run in this process: the Trainer of `gte train` with the spec's overrides, `warmup + steps` steps."""
    import contextlib
    import io

    from gte_model.core.config import load_config
    from train.config import TrainConfig
    from train.trainer import Trainer

    cfg = load_config(TrainConfig, None, overrides(spec))
    with contextlib.redirect_stdout(io.StringIO()):  # building prints notices
        trainer = Trainer(cfg)
    params = list(trainer.gte.parameters())
    stamps, tokens = [], []
    for step in range(cfg.train.max_steps):
        stats = trainer.step(step)  # its loss is a float: the step has finished
        stamps.append(time.perf_counter())
        tokens.append(stats.tokens)
    timed, seconds = spec["steps"], stamps[-1] - stamps[spec["warmup"] - 1]
    return {
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "s_per_step": seconds / timed,
        "pairs_per_s": timed * spec["batch"] / seconds,
        "tokens_per_s": sum(tokens[spec["warmup"]:]) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "last_loss": stats.loss,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones (>= 1)")
    p.add_argument("--batch", type=int, default=32, help="pairs per step")
    p.add_argument("--max-len", type=int, default=128, help="max tokens of queries and of documents")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--systems", default=",".join(SYSTEMS), help="which to run, in this order")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: a spec file to run in this process
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        Path(spec["out"]).write_text(json.dumps(run_worker(spec)))
        return 0
    if args.warmup < 1:
        raise SystemExit("--warmup must be >= 1: the first step builds kernels and caches")
    work = Path(tempfile.mkdtemp(prefix="decoder-step-"))
    pairs = write_pairs_dir(debian_rows()[: (args.warmup + args.steps) * args.batch], work / "pairs")
    folders = {kind: write_model(kind, work / kind) for kind in ("encoder", "qwen3")}
    results = {}
    for system in args.systems.split(","):
        kind, extra = SYSTEMS[system]
        spec = {"run_dir": str(work / f"run-{system}"), "pairs_dir": str(pairs), "cache_dir": str(work / "cache"),
                "max_len": args.max_len, "batch": args.batch, "steps": args.steps,
                "warmup": args.warmup, "precision": args.precision, "out": str(work / f"{system}.json"),
                "extra": [f"model.init_from={folders[kind]}", *extra]}
        spec_file = work / f"{system}.spec.json"
        spec_file.write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, __file__, "--worker", str(spec_file)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(f"{system} failed (exit {proc.returncode})")
        results[system] = json.loads(Path(spec["out"]).read_text())
        print(system, json.dumps(results[system]), flush=True)
    print(f"\n{platform.node()} {os.cpu_count()} CPUs, torch threads default, load {os.getloadavg()[0]:.1f}, "
          f"{args.precision}, batch {args.batch}, max len {args.max_len}, {args.steps} timed steps\n")
    bases = ("encoder-padded", "encoder", "qwen3-padded")
    print("| run | parameters (trainable) | s/step | pairs/s | tokens/s | peak RSS MB | "
          + " | ".join(f"vs {b}" for b in bases) + " |")
    print("| --- " * (6 + len(bases)) + "|")
    for system, r in results.items():
        rel = [f"{r['s_per_step'] / results[b]['s_per_step']:.2f}x" if b in results else "-" for b in bases]
        print(f"| {system} | {r['params'] / 1e6:.1f}M ({r['trainable'] / 1e6:.2f}M) | {r['s_per_step']:.2f} | "
              f"{r['pairs_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {' | '.join(rel)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
