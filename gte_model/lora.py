"""LoRA adapters on a backbone's Linear layers (PEFT), and the two ways to export them.

  add_lora(backbone, r=8, alpha=16)     injects trainable low-rank adapters in place and freezes everything else; the
                                        backbone stays the same BertModel object, so the packed forward still finds
                                        its modules (gte_model.packed calls the wrapped Linear layers)
  lora_settings(backbone)               {r, alpha, dropout, target_modules} of an adapted backbone, else None
  without_lora(backbone, merge=True)    a plain copy: adapters merged into the weights (W + B A alpha/r), or dropped
  adapter_files(backbone, base_path)    adapter_config.json + adapter_model.safetensors, PEFT's adapter format

Needs peft (`pip install -e .[lora]`), imported only when an adapter is added or found; without it add_lora raises
a one-line MissingExtra (a UserError) naming model.lora.r.
"""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from gte_model.core.errors import extra_problem, import_extra

ALL_LINEAR = "all-linear"
ADAPTER_NAME = "default"  # PEFT's name for a model's one adapter
# Linear layers never adapted: BERT's pooler is not on the path of our pooling (GTEModel freezes it), and an
# adapter there would get no gradient (DDP would wait for it).
_SKIPPED_PREFIXES = ("pooler.",)


def linear_names(backbone: nn.Module) -> list[str]:
    """The distinct last names of the backbone's adaptable Linear layers, e.g. ['query', 'key', 'value', 'dense']."""
    return list(dict.fromkeys(path.rpartition(".")[2] for path in _adaptable(backbone)))


def _adaptable(backbone: nn.Module) -> list[str]:
    return [path for path, module in backbone.named_modules()
            if isinstance(module, nn.Linear) and not path.startswith(_SKIPPED_PREFIXES)]


def target_paths(backbone: nn.Module, target_modules: list[str]) -> list[str]:
    """Module paths of the Linear layers named by `target_modules` (last names, or "all-linear"). An unknown name is
    a ValueError listing the backbone's Linear names."""
    names = linear_names(backbone)
    wanted = set(names) if ALL_LINEAR in target_modules else set(target_modules)
    unknown = sorted(wanted - set(names))
    if unknown or not wanted:
        raise ValueError(f"target_modules={list(target_modules)}: {type(backbone).__name__} has no Linear "
                         f"layer named {', '.join(unknown) or '(none given)'}; choose from {', '.join(names)} "
                         f"or {ALL_LINEAR}")
    return [path for path in _adaptable(backbone) if path.rpartition(".")[2] in wanted]


def add_lora(backbone: nn.Module, r: int, alpha: float, dropout: float = 0.0,
             target_modules: list[str] | None = None) -> nn.Module:
    """Adapters of rank r on the target Linear layers (default all of them), injected in place; every other
    parameter is frozen (requires_grad False). Returns the same backbone. B starts at zero: the output is unchanged
    until the first update."""
    if r < 1:
        raise ValueError(f"LoRA rank r={r} must be >= 1")
    peft = import_extra(**_peft_extra(r))  # a missing peft: one line naming the setting (MissingExtra, a UserError)
    paths = target_paths(backbone, list(target_modules or [ALL_LINEAR]))
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=paths, bias="none")
    backbone.requires_grad_(False)
    peft.inject_adapter_in_model(config, backbone, adapter_name=ADAPTER_NAME)  # only the adapters require grad now
    return backbone


def missing_peft(r: int) -> str | None:
    """Why add_lora with rank r would fail for want of peft (found without importing it), else None: config
    validation reports it with every other problem."""
    return extra_problem(**_peft_extra(r))


def _peft_extra(r: int) -> dict:
    return dict(module="peft", key=f"model.lora.r={r}", extra="lora", instead="set model.lora.r=0 (full fine-tuning)")


def _lora_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(path, m) for path, m in backbone.named_modules() if isinstance(m, LoraLayer)]


def has_lora(backbone: nn.Module) -> bool:
    """True when the backbone carries LoRA adapters (without importing peft for a plain one)."""
    return any(type(m).__module__.startswith("peft.") for m in backbone.modules())


def lora_settings(backbone: nn.Module) -> dict | None:
    """{r, alpha, dropout, target_modules} of the adapter (target_modules: the adapted layers' last names)."""
    if not has_lora(backbone):
        return None
    config = backbone.peft_config[ADAPTER_NAME]
    targets = sorted({path.rpartition(".")[2] for path, _ in _lora_layers(backbone)})
    return {"r": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout, "target_modules": targets}


def without_lora(backbone: nn.Module, merge: bool = True) -> nn.Module:
    """A deep copy with each adapted layer replaced by its base Linear: merged (W + B A alpha/r, the same outputs)
    or, with merge=False, the untouched base weights. The backbone passed in keeps its adapters."""
    plain = copy.deepcopy(backbone)
    for path, layer in _lora_layers(plain):
        if merge:
            layer.merge(safe_merge=True)  # safe_merge: refuses (raises) a merge that would hold NaN
        parent, _, name = path.rpartition(".")
        setattr(plain.get_submodule(parent) if parent else plain, name, layer.get_base_layer())
    if hasattr(plain, "peft_config"):
        del plain.peft_config
    return plain


def adapter_files(backbone: nn.Module, folder: Path, base_path: str) -> None:
    """Write the adapter as PEFT does (adapter_config.json, adapter_model.safetensors with `base_model.model.` keys);
    `base_path` is where PEFT and sentence-transformers look for the base model's config."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = copy.deepcopy(backbone.peft_config[ADAPTER_NAME])
    config.base_model_name_or_path = base_path
    config.inference_mode = True
    config.save_pretrained(str(folder))
    state = get_peft_model_state_dict(backbone, adapter_name=ADAPTER_NAME)
    save_file({f"base_model.model.{k}": v.detach().cpu().contiguous() for k, v in state.items()},
              str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
