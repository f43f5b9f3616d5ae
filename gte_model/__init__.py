"""gte_model: the embedding model (backbone + pooling), its loading and its export. Imports nothing from
train or data_prep, so an exported model is usable alone."""

from gte_model.load import DEFAULT_MODEL, ModelLoadError, build_from_preset, load_model, packaged_model_path
from gte_model.model import GTEModel, check_texts, collate
from gte_model.packed import Packed, pack, supports_packing
from gte_model.pooling import pool
from gte_model.presets import PRESETS, preset_config

__all__ = [
    "DEFAULT_MODEL",
    "GTEModel",
    "ModelLoadError",
    "PRESETS",
    "Packed",
    "build_from_preset",
    "check_texts",
    "collate",
    "load_model",
    "pack",
    "packaged_model_path",
    "pool",
    "preset_config",
    "supports_packing",
]
