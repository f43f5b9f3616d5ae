"""GTEModel: a BERT-family backbone + pooling (+ optional L2 normalisation at inference).

One object serves training (`forward` returns pooled embeddings with gradients) and inference
(`encode`: length-sorted batches, inference mode, optional bf16 autocast).
Loading and saving live beside it, not in it (they import this module; it imports neither):
  gte_model.load.load_model(name_or_path)        a preset, a packaged short name or a local folder -> GTEModel
  gte_model.export.export_model(model, out_dir)  a folder that transformers and sentence-transformers load to the
                                                 same vectors
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gte_model.core.progress import progress
from gte_model.families import packed_forward
from gte_model.packed import Packed
from gte_model.pooling import POOLING_MODES, pool, pool_packed

# Show a progress bar in `encode` from this many texts on (unless asked explicitly).
_PROGRESS_MIN_TEXTS = 2000


def check_texts(texts: Sequence[str] | str, what: str = "texts") -> list[str]:
    """Validate a list of input texts; a bare string is a common mistake and is refused."""
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a list of strings, got a single str; wrap it: [{texts[:30]!r}]")
    try:
        items = list(texts)
    except TypeError as exc:
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}") from exc
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] is {type(t).__name__} ({t!r}); every item must be a str")
    return items


def count_non_finite(module: nn.Module) -> int:
    """NaN and inf values in a module's floating-point tensors: one isfinite().all() per tensor, a count only where
    something is wrong."""
    bad = 0
    for tensor in module.state_dict().values():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad += int((~torch.isfinite(tensor)).sum())
    return bad


def collate(ids: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad token id lists into input_ids / attention_mask / token_type_ids tensors [B, T]; T is the longest
    row, or `width` when given (a fixed set of widths lets oneDNN reuse its kernels across batches)."""
    longest = max((len(x) for x in ids), default=0)
    width = longest if width is None else max(width, longest)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        attention_mask[row, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}


class GTEModel(nn.Module):
    """A text encoder: backbone -> token states -> pooled vector (-> a fixed rotation, gte_model.rotate)."""

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer,
        pooling: str = "mean",
        normalize: bool = True,
        max_seq_len: int = 512,
        prompts: dict[str, str] | None = None,
        base_model: str | None = None,
        matryoshka_dims: Sequence[int] | None = None,
        rotation: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling={pooling!r} is not supported; choose one of {POOLING_MODES}")
        self.backbone = backbone
        # BERT's pooler (a dense layer on [CLS]) is never used by our pooling: freeze it so DDP does not wait for
        # its gradients, yet keep its weights so AutoModel loads the export without "newly initialised" warnings.
        if getattr(backbone, "pooler", None) is not None:
            backbone.pooler.requires_grad_(False)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_seq_len = int(max_seq_len)
        # Prompts are prefixes prepended to the text, e.g. {"query": "query: ", "document": ""}.
        self.prompts = dict(prompts or {})
        self.base_model = base_model
        # leading dims the model was trained to be truncated to (loss.matryoshka_dims); [] = the full dim only
        self.matryoshka_dims = [int(d) for d in matryoshka_dims or []]
        # an orthogonal [H, H] map applied to every pooled vector (gte_model.rotate); never trained. Not in the
        # state dict: the export writes it as sentence-transformers' Dense module and the loader reads it back
        self.register_buffer("rotation", None, persistent=False)
        if rotation is not None:
            self.set_rotation(rotation)

    # ---- properties -----------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_rotation(self, rotation: torch.Tensor | None) -> None:
        """Apply `rotation` ([dim, dim], float32; None = none) to every pooled vector from now on."""
        if rotation is not None:
            rotation = torch.as_tensor(rotation, dtype=torch.float32)
            if tuple(rotation.shape) != (self.dim, self.dim):
                raise ValueError(f"rotation of shape {tuple(rotation.shape)}: must be [{self.dim}, {self.dim}]")
            rotation = rotation.to(next(self.backbone.parameters()).device)
        self.rotation = rotation

    # ---- training -------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        packed: Packed | None = None,
    ) -> torch.Tensor:
        """Pooled embeddings [B, H] (not normalised: the losses normalise for cosine), from padded tensors or from
        a `Packed` batch (gte_model.packed: no padding tokens, the same result)."""
        if packed is not None:
            hidden = packed_forward(self.backbone, packed)  # [T, H]
            pooled = pool_packed(hidden, packed.seq_index, packed.lengths, packed.starts, self.pooling)
        else:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            pooled = pool(out.last_hidden_state, attention_mask, self.pooling)  # [B, T, H] -> [B, H]
        if self.rotation is None:
            return pooled
        with torch.autocast(device_type=pooled.device.type, enabled=False):  # fp32: a bf16 product would round
            return pooled.float() @ self.rotation.float().T  # [B, H], fp32 even in a module cast to bf16

    def tokenize_ids(self, texts: Sequence[str], max_seq_len: int | None = None) -> list[list[int]]:
        """Token ids per text, truncated to max_seq_len (special tokens included), no padding."""
        limit = int(max_seq_len or self.max_seq_len)
        enc = self.tokenizer(list(texts), truncation=True, max_length=limit, padding=False)
        return enc["input_ids"]

    def tokenize(self, texts: Sequence[str], max_seq_len: int | None = None) -> dict[str, torch.Tensor]:
        """Padded batch tensors for `forward`."""
        return collate(self.tokenize_ids(texts, max_seq_len), self.tokenizer.pad_token_id)

    def prompt_text(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The prefix to prepend: a literal `prompt`, or the model's prompt called `prompt_name` ("query",
        "document"); a name this model has no prompt for means no prefix (the model was trained without one)."""
        if prompt is not None and prompt_name is not None:
            raise ValueError(f"give prompt_name={prompt_name!r} or prompt={prompt!r}, not both")
        if prompt is not None:
            return prompt
        return self.prompts.get(prompt_name, "") if prompt_name else ""

    # ---- inference ------------------------------------------------------------------------------------
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        max_seq_len: int | None = None,
        normalize: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        bf16: bool = False,
        show_progress: bool | None = None,
        convert_to_tensor: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts -> float32 [N, dim] (numpy, or a CPU tensor with convert_to_tensor=True).

        Texts are sorted by token length so each batch pads to a similar width, then returned in input order.
        (The unpadded forward of training is not used here: sorted batches hold little padding, and it was not
        faster than this padded path on STS-B sentences: benchmarks/README.md, "The unpadded forward".)
        `prompt_name` picks one of the model's prompts ("query", "document"; as in sentence-transformers), `prompt`
        is a literal prefix.
        """
        items = check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        normalize = self.normalize if normalize is None else normalize
        out = torch.zeros((len(items), self.dim), dtype=torch.float32)
        if items:
            prefix = self.prompt_text(prompt_name, prompt)
            ids = self.tokenize_ids([prefix + t for t in items], max_seq_len)
            order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # longest first: OOM shows up at once
            show = len(items) >= _PROGRESS_MIN_TEXTS if show_progress is None else show_progress
            was_training = self.training
            self.eval()
            device = self.device
            autocast = (
                torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            )
            with torch.inference_mode(), autocast:
                for start in progress(range(0, len(order), batch_size), disable=not show, desc="encode", unit="batch"):
                    idx = order[start : start + batch_size]
                    batch = collate([ids[i] for i in idx], self.tokenizer.pad_token_id)
                    emb = self(**{k: v.to(device) for k, v in batch.items()}).float()
                    if normalize:
                        emb = F.normalize(emb, p=2, dim=-1)
                    out[torch.tensor(idx)] = emb.cpu()
            self.train(was_training)
        return out if convert_to_tensor else out.numpy()
