"""Shared fixtures: a tiny random BERT with a vocabulary the test writes itself (no files, no hub)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest  # noqa: E402
import torch  # noqa: E402

WORDS = (
    "the a an is are was of to and in on for with by at from cat dog man woman child plays playing guitar piano "
    "music instrument market stock price fell rose today news report package library python file data text "
    "query document answer question definition word sentence model train test small large red blue green run"
).split()

# Texts of very different lengths (1 to 14 words): what packing and length-sorted chunks must get right.
MIXED_TEXTS = [
    "the cat plays piano",
    "a",
    "stock price fell today on the news report of the market and the data",
    "python package library file",
    "the red dog and the blue cat run with a small child",
    "music",
    "a woman plays guitar",
]


def write_vocab(folder) -> str:
    """A WordPiece vocab: specials, the word list, single letters and ##-suffix letters."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'-:;()")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *("##" + c for c in letters)]
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w") as fh:
        fh.write("\n".join(dict.fromkeys(tokens)) + "\n")
    return path


def make_tiny_model(folder, seed: int = 0, **kwargs):
    from transformers import BertTokenizerFast

    from gte_model import build_from_preset

    torch.manual_seed(seed)
    # transformers 5 ignores vocab_file= (every word became [UNK]); from_pretrained reads vocab.txt in 4 and 5.
    write_vocab(folder)
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    return build_from_preset("tiny", tokenizer, **kwargs)


@pytest.fixture
def tiny_model(tmp_path):
    """A fresh 2-layer, 32-hidden BERT + mean pooling, fp32, on the CPU."""
    return make_tiny_model(tmp_path)


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 (installed by scripts/setup.sh)."""
    from gte_model import load_model

    return load_model("all-MiniLM-L6-v2")


# The backbone families with a packed forward besides BERT: their own code (gte_model.families), and GTE v1.5 and
# NomicBERT through the generic attention-interface mechanism (gte_model.unpadded).
FAMILIES = ("roberta", "xlm-roberta", "mpnet", "modernbert", "gte", "nomic_bert")


def make_tiny_family_model(folder, family: str, seed: int = 0):
    """A tiny random backbone of `family` (3 layers, 32 wide; ModernBERT: local layers see 4 positions either side)
    around the test-written WordPiece vocabulary, + mean pooling. Dropout as each family's default: 0.1 for the
    BERT-like families and GTE, 0 for ModernBERT and NomicBERT."""
    from transformers import (
        AutoModel,
        BertTokenizerFast,
        GteConfig,
        ModernBertConfig,
        MPNetConfig,
        NomicBertConfig,
        RobertaConfig,
        XLMRobertaConfig,
    )

    from gte_model import GTEModel
    from gte_model.families import max_positions

    write_vocab(folder)
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    ids = {k: getattr(tokenizer, f"{k}_token_id") for k in ("pad", "cls", "sep")}
    common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=80, pad_token_id=ids["pad"])
    configs = {
        "roberta": lambda: RobertaConfig(**common),
        "xlm-roberta": lambda: XLMRobertaConfig(**common),
        "mpnet": lambda: MPNetConfig(**common),
        "modernbert": lambda: ModernBertConfig(**common, local_attention=8, global_attn_every_n_layers=2,
                                               bos_token_id=ids["cls"], cls_token_id=ids["cls"],
                                               eos_token_id=ids["sep"], sep_token_id=ids["sep"]),
        # RoPE + GLU; loaded from a folder, their q/k/v (and GTE's up/gate) weights are views of one fused matrix
        "gte": lambda: GteConfig(**common),
        "nomic_bert": lambda: NomicBertConfig(**common),
    }
    torch.manual_seed(seed)
    backbone = AutoModel.from_config(configs[family]())
    # max_seq_len: the positions the backbone has (80, less RoBERTa's and MPNet's offset), which the loader enforces
    return GTEModel(backbone, tokenizer, base_model=f"tiny-{family}", max_seq_len=max_positions(backbone)).train()


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny models: less contention when tests run beside each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
