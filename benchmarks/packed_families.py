"""Packed vs padded training steps beyond BERT (not a test): pairs/s per family, and the peak memory of long chunks.

1. Throughput: a batch of 32 pairs (queries of 16-64 tokens, documents of 64-128, uniform, random ids) through
   forward + backward (no optimizer step: it is the same for both paths) of a ModernBERT-shaped model (the
   gte-modern-base preset), an MPNet-shaped one (all-mpnet-base-v2's shape: 12 x 768), RoBERTa- and BERT-shaped
   ones (12 x 768), GTE v1.5 (gte-base-en-v1.5's shape: 12 x 768, RoPE, GLU) and NomicBERT (nomic-embed-text-v1's:
   12 x 768, RoPE, SwiGLU), random weights, train mode, bf16 autocast. Each batch is one chunk of 64 texts built by
   train.step.make_chunks as the trainer builds it: packed (train.packed=true) or padded to its longest row
   (train.packed=false). With --generic, the families that have their own packed code (gte_model.families) also run
   packed through the generic attention-interface mechanism (gte_model.unpadded) that gte and nomic_bert use: which
   of the two is faster decides which one a family keeps. The paths alternate within one process on the same batch,
   so a load change on a shared machine hits all; the median step of each is reported.
2. Memory: the peak resident memory of one packed forward + backward of a single 2,048-token and a single 8,192-token
   text through the ModernBERT shape (--memory-layers of its layers; each period of 3 has one global layer).

  .venv/bin/python benchmarks/packed_families.py                          # full depth, 4 rounds
  .venv/bin/python benchmarks/packed_families.py --layers 6 --rounds 3    # a shallower model on a slow CPU
  .venv/bin/python benchmarks/packed_families.py --families gte,nomic_bert,bert --generic --memory-layers 0
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoModel, BertConfig, GteConfig, MPNetConfig, NomicBertConfig, RobertaConfig  # noqa: E402

from gte_model import GTEModel, Packed, preset_config  # noqa: E402
from gte_model.core.memory import peak_rss_mb, reset_peak  # noqa: E402
from gte_model.families import family_of  # noqa: E402
from gte_model.pooling import pool_packed  # noqa: E402
from gte_model.unpadded import unpadded_forward  # noqa: E402
from train.step import make_chunks  # noqa: E402

PAIRS = 32
VOCAB = 30522
SPECIAL_IDS = {"pad_token_id": 0, "cls_token_id": 101, "sep_token_id": 102}  # a BERT WordPiece vocabulary's


def modernbert(layers: int | None) -> GTEModel:
    config = preset_config("gte-modern-base", vocab_size=VOCAB, special_ids=SPECIAL_IDS)
    if layers:
        config.num_hidden_layers, config.layer_types = layers, config.layer_types[:layers]
    return GTEModel(AutoModel.from_config(config), tokenizer=None).train()


def mpnet(layers: int | None) -> GTEModel:
    config = MPNetConfig(vocab_size=30527, hidden_size=768, num_hidden_layers=layers or 12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=514)
    return GTEModel(AutoModel.from_config(config), tokenizer=None).train()


def roberta(layers: int | None) -> GTEModel:
    config = RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=layers or 12, num_attention_heads=12,
                           intermediate_size=3072, max_position_embeddings=514, pad_token_id=1)
    return GTEModel(AutoModel.from_config(config), tokenizer=None).train()


def bert(layers: int | None) -> GTEModel:
    config = BertConfig(vocab_size=VOCAB, hidden_size=768, num_hidden_layers=layers or 12, num_attention_heads=12,
                        intermediate_size=3072)
    return GTEModel(AutoModel.from_config(config), tokenizer=None).train()


def gte(layers: int | None) -> GTEModel:
    config = GteConfig(vocab_size=30528, hidden_size=768, num_hidden_layers=layers or 12, num_attention_heads=12,
                       intermediate_size=3072, max_position_embeddings=8192, type_vocab_size=0, pad_token_id=0)
    return GTEModel(AutoModel.from_config(config), tokenizer=None).train()


def nomic_bert(layers: int | None) -> GTEModel:
    config = NomicBertConfig(vocab_size=30528, hidden_size=768, num_hidden_layers=layers or 12, num_attention_heads=12,
                             intermediate_size=3072, max_position_embeddings=8192, pad_token_id=0)
    return GTEModel(AutoModel.from_config(config), tokenizer=None).train()


MODELS = {"modernbert": modernbert, "mpnet": mpnet, "roberta": roberta, "bert": bert, "gte": gte,
          "nomic_bert": nomic_bert}


def batch_ids(rng: random.Random) -> list[list[int]]:
    """32 queries and 32 documents of random ids, each framed by [CLS] ... [SEP]."""
    lengths = [rng.randint(16, 64) for _ in range(PAIRS)] + [rng.randint(64, 128) for _ in range(PAIRS)]
    return [[101] + [rng.randrange(1000, 20000) for _ in range(n - 2)] + [102] for n in lengths]


def step_seconds(model: GTEModel, ids: list[list[int]], path: str) -> tuple[float, int]:
    """One forward + backward of the batch as one chunk by `path` (packed, padded, generic: packed through
    gte_model.unpadded); (seconds, tokens computed incl. padding)."""
    (chunk,), _ = make_chunks(ids, len(ids), pad_id=model.backbone.config.pad_token_id or 0, packed=path != "padded")
    tokens = (chunk.input_ids if isinstance(chunk, Packed) else chunk["input_ids"]).numel()
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if path == "generic":
            hidden = unpadded_forward(model.backbone, chunk)  # [T, H]
            emb = pool_packed(hidden, chunk.seq_index, chunk.lengths, chunk.starts, model.pooling)
        else:
            emb = model(packed=chunk) if isinstance(chunk, Packed) else model(**chunk)
    emb.float().pow(2).sum().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start, tokens


def throughput(name: str, model: GTEModel, rounds: int, rng: random.Random, generic: bool) -> None:
    # "packed" is the family's own code where it has one, else the generic mechanism (gte, nomic_bert)
    paths = ["packed", "padded"] + (["generic"] if generic and family_of(model.backbone) is not None else [])
    times: dict[str, list[float]] = {p: [] for p in paths}
    tokens: dict[str, list[int]] = {p: [] for p in paths}
    for r in range(rounds + 1):  # round 0 warms up every path (oneDNN kernels, allocator)
        ids = batch_ids(rng)
        for path in paths if r % 2 == 0 else paths[::-1]:
            seconds, n = step_seconds(model, ids, path)
            if r:
                times[path].append(seconds)
                tokens[path].append(n)
    for path in paths:
        median = statistics.median(times[path])
        print(f"{name:10s} {path:7s} {PAIRS / median:6.2f} pairs/s  median step "
              f"{median:6.2f} s  steps {' '.join(f'{t:.1f}' for t in times[path])}  "
              f"tokens/step {statistics.mean(tokens[path]):.0f}", flush=True)
    for path in paths[1:]:
        ratio = statistics.median(times[path]) / statistics.median(times["packed"])
        print(f"{name:10s} packed / {path} pairs/s: {ratio:.2f}x", flush=True)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def long_chunk_memory(model: GTEModel, tokens: int) -> None:
    ids = [[101] + [random.randrange(1000, 20000) for _ in range(tokens - 2)] + [102]]
    before = rss_mb()
    reset_peak()
    seconds, _ = step_seconds(model, ids, "packed")
    peak = peak_rss_mb()
    print(f"modernbert {tokens:5d}-token chunk, {len(model.backbone.layers)} layers: peak RSS {peak:.0f} MiB "
          f"(+{peak - before:.0f} MiB over the {before:.0f} MiB before it), {seconds:.1f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=0,
                   help="layers of every model (0 = its real depth: 22 for ModernBERT, 12 for the others)")
    p.add_argument("--rounds", type=int, default=4, help="measured steps per path and family")
    p.add_argument("--memory-layers", type=int, default=3,
                   help="ModernBERT layers for the long-chunk memory runs (0: no memory runs)")
    p.add_argument("--families", default=",".join(MODELS), help=f"any of {', '.join(MODELS)}")
    p.add_argument("--generic", action="store_true",
                   help="also run the families with their own packed code through gte_model.unpadded")
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for name in filter(None, args.families.split(",")):  # --families "" measures memory only
        model = MODELS[name](args.layers or None)
        throughput(name, model, args.rounds, random.Random(0), args.generic)
        del model
    for tokens in (2048, 8192) if args.memory_layers else ():
        long_chunk_memory(modernbert(args.memory_layers), tokens)


if __name__ == "__main__":
    main()
