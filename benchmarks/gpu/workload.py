"""What benchmarks/gpu/bench.py trains on: a synthetic vocabulary, Debian-like pairs, random-weight model folders,
and the FLOP count behind MFU.

Data (seeded). Words are drawn uniformly from a 30,522-entry WordPiece vocabulary of made-up lowercase words (2-3
consonant-vowel syllables), so each word is exactly one token and a text of w words is w + 2 tokens with [CLS] and
[SEP]. Lengths resemble Debian's (short description -> long description, benchmarks/README.md: mean query 12
tokens, mean document 73):
  query words    ~ uniform on 5..15
  document words ~ round(LogNormal(median 60, sigma 0.55)) clipped to 20..150 (about 9% above 126 words: truncated
                   at max length 128, none at 512); each document repeats its query's first 3 words.

FLOPs (MFU = useful FLOP/s / peak). A BERT encoder's forward + backward costs, per real token of a text of n tokens,
    6 * P + 12 * L * H * n
where P = the encoder's non-embedding matrix parameters (2 FLOPs per multiply-add, x3 for forward + backward) and
12 * L * H * n the attention scores and their weighted sum (QK^T and AV: 2 * 2 * n * H per token and layer,
x3 for forward + backward). Only real tokens count: padding, filler and the cached step's extra forward are not
useful work. Peak: dense bf16 tensor-core FLOP/s of the device (PEAK_BF16_TFLOPS, or --peak-tflops).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

VOCAB_SIZE = 30522
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Dense bf16 tensor-core peak (no sparsity), TFLOP/s, by a substring of torch.cuda.get_device_name(); first match.
PEAK_BF16_TFLOPS = {
    "GH200": 989.0,
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM
    "H800": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "RTX 4090": 165.0,
}


def peak_tflops(device_name: str, override: float = 0.0) -> float | None:
    """Peak dense bf16 TFLOP/s of a device by name (None when unknown: pass --peak-tflops)."""
    if override > 0:
        return override
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k.lower() in device_name.lower()), None)


def vocabulary(size: int = VOCAB_SIZE, seed: int = 0) -> list[str]:
    """SPECIALS then made-up words: all 2-syllable ones, then seeded 3-syllable ones, up to `size` entries."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    two = [a + b for a in syllables for b in syllables]
    rng = random.Random(seed)
    three: set[str] = set()
    while len(SPECIALS) + len(two) + len(three) < size:
        three.add("".join(rng.choice(syllables) for _ in range(3)))
    return SPECIALS + two + sorted(three)


def write_tokenizer(folder: Path, seed: int = 0) -> Path:
    """A BERT WordPiece tokenizer folder over `vocabulary` (loads with AutoTokenizer, as model.tokenizer_from)."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocabulary(seed=seed)) + "\n")
    BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True).save_pretrained(str(folder))
    return folder


def debian_like_rows(n: int, seed: int = 0) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """n pairs (query, positive, key) with the lengths of the module docstring; also the word counts of each
    query and document (tokens = words + 2)."""
    rng = np.random.default_rng(seed)
    words = np.array(vocabulary(seed=seed)[len(SPECIALS):])
    q_words = rng.integers(5, 16, n)
    d_words = np.clip(np.rint(rng.lognormal(np.log(60.0), 0.55, n)), 20, 150).astype(np.int64)
    picks = rng.integers(0, len(words), int(q_words.sum() + d_words.sum()))
    rows, at = [], 0
    for i in range(n):
        q = words[picks[at : at + q_words[i]]]
        at += q_words[i]
        d = np.concatenate([q[:3], words[picks[at : at + d_words[i] - 3]]])
        at += d_words[i] - 3
        rows.append({"query": " ".join(q), "positive": " ".join(d), "key": f"syn-{i}"})
    return rows, q_words, d_words


def random_model_folder(preset: str, tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """A preset with seeded random weights, exported (both trainers start from these same weights)."""
    import torch

    from gte_model import export_model, load_model

    if (out / "modules.json").is_file():
        return out
    torch.manual_seed(seed)
    return export_model(load_model(preset, tokenizer_from=tokenizer_dir, max_seq_len=512), out)


def encoder_params(gte) -> int:
    """P of the FLOP formula: the encoder's matrix weights (embeddings, pooler, biases and LayerNorms excluded)."""
    return sum(p.numel() for p in gte.backbone.encoder.parameters() if p.dim() == 2)


def train_flops(lengths: np.ndarray, params: int, layers: int, hidden: int) -> float:
    """Useful FLOPs of one forward + backward over texts of these token lengths (module docstring)."""
    n = lengths.astype(np.float64)
    return float((n * (6.0 * params + 12.0 * layers * hidden * n)).sum())
