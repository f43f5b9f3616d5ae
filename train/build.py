"""What a stage trains, built from its config: the model (loaded, sized, LoRA, checkpointing) and its optimizer."""

from __future__ import annotations

import torch

from gte_model import GTEModel, load_model
from gte_model.core.config import ConfigError
from gte_model.core.errors import UserError
from gte_model.decoder import set_bidirectional
from gte_model.families import max_positions, set_rope_theta
from gte_model.lora import add_lora
from train.config import TrainConfig, launched_with_deepspeed


def build_model(cfg: TrainConfig) -> GTEModel:
    m, d = cfg.model, cfg.data
    gte = load_model(m.init_from, pooling=m.pooling, normalize=m.normalize, tokenizer_from=m.tokenizer_from or None,
                     trust_remote_code=m.trust_remote_code, trust_flag="model.trust_remote_code=true")
    # model.max_seq_len, else what the base model served, never below what training used (all checked against the
    # backbone's positions in fit_positions, named by their config keys)
    gte.max_seq_len = m.max_seq_len or max(gte.max_seq_len, d.query_max_len, d.doc_max_len)
    too_big = [d for d in cfg.loss.matryoshka_dims if d > gte.dim]
    if too_big:
        raise UserError(f"loss.matryoshka_dims={list(cfg.loss.matryoshka_dims)}: {too_big} exceed the model's "
                        f"{gte.dim} dims (model.init_from={m.init_from}); use dims <= {gte.dim}")
    gte.matryoshka_dims = sorted(cfg.loss.matryoshka_dims, reverse=True)
    # The config is the truth for prompts: what training prepends is what the export tells clients to prepend.
    gte.prompts = {k: v for k, v in (("query", d.query_prompt), ("document", d.doc_prompt)) if v}
    gte.prompts.update(source_prompt_names(d.prompts))
    fit_positions(gte, cfg)
    if m.bidirectional:
        try:
            set_bidirectional(gte.backbone)
        except ValueError as exc:
            raise ConfigError(f"model.bidirectional=true with model.init_from={m.init_from}: {exc}; unset "
                              "model.bidirectional") from None
    if m.lora.r:  # before grad checkpointing and the optimizer: from here only the adapters require grad
        try:
            add_lora(gte.backbone, m.lora.r, m.lora.alpha, m.lora.dropout, m.lora.target_modules)
        except ValueError as exc:
            raise ConfigError(f"model.lora.{exc}") from None
    if cfg.train.grad_checkpointing:
        b = gte.backbone  # transformers 5 renamed it; 4.x has only the old name
        enable = getattr(b, "activation_checkpointing_enable", None) or b.gradient_checkpointing_enable
        enable({"use_reentrant": False})
    return gte.train()  # from_pretrained leaves a model in eval mode: dropout off


def source_prompt_names(prompts: dict[str, dict[str, str]]) -> dict[str, str]:
    """data.prompts as sentence-transformers prompt names: <source> (query side), <source>-document. An empty
    prompt is kept: it overrides query_prompt / doc_prompt for that source."""
    names = {}
    for source, roles in prompts.items():
        if "query" in roles:
            names[source] = roles["query"]
        if "document" in roles:
            names[f"{source}-document"] = roles["document"]
    return names


def fit_positions(gte: GTEModel, cfg: TrainConfig) -> None:
    """Apply model.rope_theta and check model.max_seq_len and data.*_max_len against the backbone's positions: every
    problem at once."""
    m, d, name = cfg.model, cfg.data, type(gte.backbone).__name__
    errors = []
    if m.rope_theta:
        try:
            set_rope_theta(gte.backbone, m.rope_theta)
        except ValueError as exc:
            errors.append(f"model.rope_theta={m.rope_theta:g} with model.init_from={m.init_from}: {exc}; unset "
                          "model.rope_theta or start from a RoPE backbone (model.init_from=gte-modern-base)")
    limit = max_positions(gte.backbone)
    lengths = (("model.max_seq_len", m.max_seq_len), ("data.query_max_len", d.query_max_len),
               ("data.doc_max_len", d.doc_max_len))
    for key, value in lengths:
        if limit is not None and value > limit:
            errors.append(f"{key}={value} exceeds the {limit} positions of the backbone (model.init_from="
                          f"{m.init_from}, {name}); set {key}<={limit}, or start from a longer-context backbone "
                          "(model.init_from=gte-modern-base: 8,192)")
    if errors:
        raise UserError("; ".join(errors))


def build_optimizer(gte: GTEModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights, over the trainable parameters only (with LoRA: the
    adapters, so its state is theirs alone). The learning rate is set before every step
    (Trainer.lr_at: a pure function of the step), so a resume needs no scheduler state."""
    o = cfg.optim
    named = [(n, p) for n, p in gte.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n]
    decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n)]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all tensors instead of a Python loop over ~100 of them (measured by
    # benchmarks/train_profile.py, benchmarks/README.md). DeepSpeed wraps the optimizer, so keep its plain path.
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=not launched_with_deepspeed())


__all__ = ["build_model", "build_optimizer", "fit_positions"]
