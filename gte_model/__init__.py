"""gte_model: the embedding model (backbone + pooling), its loading and its export. Imports nothing from
train or data_prep, so an exported model is usable alone.

  from gte_model import load_model, export_model
  model = load_model("all-MiniLM-L6-v2")          # a preset, a packaged short name or a local folder
  export_model(model, "runs/minilm-export")         # AutoModel, SentenceTransformer and load_model read it

Names are imported on first use (module __getattr__), so `import gte_model.core.config` pulls neither torch
nor transformers.
"""

from __future__ import annotations

import importlib

# public name -> the module that defines it
_EXPORTS = {
    "DEFAULT_MODEL": "gte_model.load",
    "ModelLoadError": "gte_model.assets",
    "build_from_preset": "gte_model.load",
    "load_model": "gte_model.load",
    "model_folder": "gte_model.load",
    "packaged_model_path": "gte_model.assets",
    "export_model": "gte_model.export",
    "update_eval_results": "gte_model.export",
    "GTEModel": "gte_model.model",
    "check_texts": "gte_model.model",
    "count_non_finite": "gte_model.model",
    "collate": "gte_model.model",
    "Packed": "gte_model.packed",
    "pack": "gte_model.packed",
    "supports_packing": "gte_model.families",
    "pool": "gte_model.pooling",
    "PRESETS": "gte_model.presets",
    "preset_config": "gte_model.presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gte_model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
