"""Resolve a model name to a GTEModel: a size preset, a packaged short name, or a local folder.

Local folders are either sentence-transformers folders (modules.json: pooling, normalisation, max length and
prompts are read from it) or plain Hugging Face folders (config.json + weights: mean pooling by default).
Nothing is downloaded; remote code runs only with trust_remote_code=True. Weights are read from safetensors
whenever a folder has them (a stale pytorch_model.bin beside them is ignored); a .bin alone is read weights-only.
A folder whose weights hold NaN or inf is refused: a diverged run must not be scored or used as if it were a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModel, AutoTokenizer

from gte_model.assets import PACKAGED, ModelLoadError, is_installed, packaged_model_path
from gte_model.core.record import file_sha256
from gte_model.decoder import append_eos, prepare_decoder
from gte_model.folder_checks import check_config_json, check_max_seq_len, check_prompts, check_tokenizer
from gte_model.model import GTEModel, count_non_finite
from gte_model.presets import PRESETS, preset_config
from gte_model.rotate import DENSE_ACTIVATION, DENSE_WEIGHT

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# In order of preference: safetensors loads without unpickling anything.
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


class UntrustedCodeError(ModelLoadError):
    """A folder whose own model code runs only when trusted. `flag` is the switch the message names as the fix (as
    the caller spells it: `--trust-remote-code`, `teacher.trust_remote_code=true`), so a caller that runs a config as
    one section of its own (`gte run`'s stage1, stage2, ...) can name the key its user sets."""

    def __init__(self, reason: str, flag: str) -> None:
        super().__init__(f"{reason}: {flag}")
        self.reason, self.flag = reason, flag

    def __reduce__(self):
        return type(self), (self.reason, self.flag)


def load_model(
    name_or_path: str | Path,
    *,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_seq_len: int | None = None,
    tokenizer_from: str | Path | None = None,
    trust_remote_code: bool = False,
    trust_flag: str = "trust_remote_code=True",
) -> GTEModel:
    """Load a GTEModel. Keyword arguments override what the folder says (None keeps it). trust_remote_code: run a
    folder's own model code (config.json auto_map); trust_flag: how the user sets it in the command they ran
    (`--trust-remote-code`, `teacher.trust_remote_code=true`), named when a folder is refused for want of it.

    - a preset name (tiny, gte-small, gte-base, gte-large, gte-modern-base): fresh random weights, tokenizer from
      `tokenizer_from` (default: the packaged MiniLM's WordPiece vocabulary);
    - a packaged short name (all-MiniLM-L6-v2);
    - a local sentence-transformers or Hugging Face folder.
    """
    name = str(name_or_path)
    if name in PRESETS:
        tok_src = tokenizer_from or packaged_model_path(DEFAULT_MODEL)
        tokenizer = AutoTokenizer.from_pretrained(str(tok_src))
        check_tokenizer(tokenizer, Path(tok_src), None)
        return build_from_preset(
            name, tokenizer, pooling=pooling or "mean", normalize=normalize, max_seq_len=max_seq_len
        )
    return _load_folder(model_folder(name), pooling, normalize, max_seq_len, trust_remote_code, trust_flag)


def model_folder(name_or_path: str | Path) -> Path | None:
    """The folder a model name stands for (a packaged model's or a local one), None for a preset; a ModelLoadError
    when it stands for nothing. Cheap: commands call it to fail on a bad name before any slow work."""
    name = str(name_or_path)
    if name in PRESETS:
        return None
    if name.lower() in PACKAGED:
        return packaged_model_path(name)
    path = Path(name).expanduser()
    if not path.is_dir():
        packaged = ", ".join(sorted(set(PACKAGED)))
        raise ModelLoadError(
            f"{name}: not a preset ({', '.join(PRESETS)}), not a packaged model ({packaged})"
            f" and {path.resolve()} is not a folder; pass a model folder (an export), a preset or a packaged name"
            " (hub downloads are not used)"
        )
    return path


def build_from_preset(
    name: str, tokenizer, pooling: str = "mean", normalize: bool | None = None, max_seq_len: int | None = None
) -> GTEModel:
    """A randomly initialised model of a size preset around the given tokenizer."""
    ids = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id", None) for k in ("pad", "cls", "sep")}
    ids = {k: v for k, v in ids.items() if v is not None}
    config = preset_config(name, vocab_size=len(tokenizer), special_ids=ids)
    backbone = AutoModel.from_config(config)
    return GTEModel(
        backbone,
        tokenizer,
        pooling=pooling,
        normalize=True if normalize is None else normalize,
        max_seq_len=512 if max_seq_len is None else check_max_seq_len(max_seq_len, backbone, "max_seq_len"),
        base_model=f"preset:{name}",
    )


def read_st_settings(path: Path) -> dict:
    """Pooling, normalisation, max length and prompts from a sentence-transformers folder (empty if none)."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise ModelLoadError(f"{modules_file}: holds a {type(modules).__name__}, not a list of modules; re-export it")
    settings: dict = {"normalize": False}
    for module in modules:
        if not isinstance(module, dict):
            raise ModelLoadError(f"{modules_file}: holds {json.dumps(module)[:60]}, not a module object; re-export it")
        kind = module.get("type", "").rsplit(".", 1)[-1]
        module_dir = path / module.get("path", "")
        if kind == "Transformer":
            cfg = module_dir / "sentence_bert_config.json"
            if cfg.is_file() and "max_seq_length" in (st_config := _read_object(cfg)):
                # checked against the backbone's positions once it is built
                settings["max_seq_len"] = st_config["max_seq_length"]
                settings["max_seq_len_key"] = f"{cfg}: max_seq_length"
            if module.get("path"):
                settings["transformer_dir"] = module_dir
        elif kind == "Pooling":
            settings["pooling"] = _pooling_from_st(_read_object(module_dir / "config.json"), module_dir)
        elif kind == "Normalize":
            settings["normalize"] = True
        elif kind == "Dense" and "pooling" in settings and not settings["normalize"] and "rotation" not in settings:
            settings["rotation"] = _read_rotation(module_dir)
        else:
            raise ModelLoadError(f"{modules_file}: module type {module.get('type')!r} is not supported by GTEModel "
                                 "there; use a folder of Transformer, Pooling, [Dense (a rotation)] and Normalize "
                                 "modules, in that order")
    extra = path / "config_sentence_transformers.json"
    if extra.is_file():
        settings["prompts"] = check_prompts(_read_object(extra).get("prompts"), extra)
    return settings


def _read_rotation(folder: Path) -> torch.Tensor:
    """A Dense module's weight as GTEModel.rotation: square, no bias, identity activation (what gte rotate writes)."""
    cfg = _read_object(folder / "config.json")
    n_in, n_out = cfg.get("in_features"), cfg.get("out_features")
    if n_in != n_out or cfg.get("bias", True) or cfg.get("activation_function") != DENSE_ACTIVATION:
        raise ModelLoadError(f"{folder}/config.json: a Dense module {cfg} is not supported by GTEModel; only a "
                             f"square one without bias and with activation_function {DENSE_ACTIVATION} (a "
                             "rotation written by gte rotate)")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelLoadError(f"{weights}: missing; the model folder is incomplete, export it again")
    try:
        weight = load_file(str(weights))[DENSE_WEIGHT]
    except Exception as exc:  # noqa: BLE001 - a damaged file or a missing tensor; say which file
        raise ModelLoadError(f"{weights}: failed to read {DENSE_WEIGHT!r} ({_short(exc)}); export it again") from exc
    if tuple(weight.shape) != (n_in, n_in) or not torch.isfinite(weight).all():
        raise ModelLoadError(f"{weights}: {DENSE_WEIGHT} of shape {tuple(weight.shape)} is not a finite "
                             f"[{n_in}, {n_in}] matrix; export it again")
    return weight.float()


def _pooling_from_st(cfg: dict, where: Path) -> str:
    mode = cfg.get("pooling_mode")
    if mode is None:
        flags = {k for k, v in cfg.items() if k.startswith("pooling_mode_") and v}
        mode = _ST_POOLING_FLAGS.get(next(iter(flags), ""), None)
        if len(flags) != 1:
            mode = None
    mode = {"lasttoken": "last"}.get(mode, mode)
    if mode not in ("mean", "cls", "last"):
        raise ModelLoadError(f"{where}/config.json: pooling {cfg} is not supported; GTEModel pools by mean, cls or "
                             f"last token (set exactly one of {', '.join(_ST_POOLING_FLAGS)})")
    return mode


# sentence-transformers' pooling flags (its Pooling config before v6) -> our pooling modes
_ST_POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                     "pooling_mode_lasttoken": "last"}


def _describe_source(path: Path) -> str:
    for model in PACKAGED.values():
        if is_installed(model.name) and path.resolve() == packaged_model_path(model.name).resolve():
            return model.name
    return str(path.resolve())


def _read_json(path: Path) -> dict | list:
    if not path.is_file():
        raise ModelLoadError(f"{path}: missing; the model folder is incomplete, export it again")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc}); fix the file or export the model again") from exc


def _read_object(path: Path) -> dict:
    """A JSON file that must hold an object (a module's config)."""
    value = _read_json(path)
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path}: holds a {type(value).__name__}, not a JSON object; export the model again")
    return value


def _load_folder(path: Path, pooling, normalize, max_seq_len, trust_remote_code: bool, trust_flag: str) -> GTEModel:
    settings = read_st_settings(path)
    pooling = pooling or settings.get("pooling", "mean")
    weights_dir = settings.get("transformer_dir", path)
    weights = _weights_file(weights_dir)
    config_file = weights_dir / "config.json"
    config_json = _read_object(config_file)
    check_config_json(config_json, config_file, weight_files(weights_dir))  # before anything is built
    if config_json.get("auto_map") and config_json.get("model_type") not in CONFIG_MAPPING and not trust_remote_code:
        raise UntrustedCodeError(f"{config_file.resolve()}: auto_map names the folder's own code "
                                 f"({', '.join(remote_code_files(weights_dir)) or 'Python files'}), which runs only "
                                 "when trusted: read it, then trust it", trust_flag)
    try:
        config = AutoConfig.from_pretrained(str(weights_dir), trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(str(weights_dir), trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a damaged or foreign folder; say which
        raise ModelLoadError(f"{weights_dir.resolve()}: failed to load the config or tokenizer ({_short(exc)}); "
                             "export the model again (remote code needs trust_remote_code=True)") from exc
    if pooling == "last":
        append_eos(tokenizer, weights_dir)
    check_tokenizer(tokenizer, weights_dir, getattr(config, "vocab_size", None))
    try:
        backbone, info = AutoModel.from_pretrained(
            str(weights_dir),
            config=config,
            trust_remote_code=trust_remote_code,
            # Never a pickled .bin when safetensors are there: the .bin may be stale, and unpickling is unsafe.
            use_safetensors=weights.name != "pytorch_model.bin",
            output_loading_info=True,
        )
    except Exception as exc:  # noqa: BLE001 - a truncated or damaged file fails in any of several ways
        if "mismatched_sizes" in str(exc) or "size mismatch" in str(exc):  # intact tensors of other shapes
            raise ModelLoadError(f"{weights_dir.resolve() / 'config.json'}: its shapes do not match the tensors in "
                                 f"{weights.name} (hidden_size, intermediate_size or vocab_size changed?); restore "
                                 "config.json or export the model again") from exc
        raise ModelLoadError(f"{weights.resolve()}: failed to load ({_short(exc)}); the file is damaged or truncated "
                             "(an interrupted copy or a full disk?); copy or export the model again") from exc
    # A weights file with the wrong tensors loads "successfully" with random layers: refuse that.
    lost = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    if lost:
        raise ModelLoadError(f"{weights.resolve()}: weights are missing {len(lost)} tensors, e.g. {lost[:3]}; "
                             "they do not match config.json; export the model again")
    _check_finite(backbone, weights)
    prepare_decoder(backbone)
    rotation = settings.get("rotation")
    if rotation is not None and rotation.shape[0] != config.hidden_size:
        raise ModelLoadError(f"{path}/modules.json: its Dense module is [{rotation.shape[0]}, {rotation.shape[0]}] "
                             f"but the backbone's hidden size is {config.hidden_size}; export the model again")
    card = path / "gte_export.json"
    meta = _read_object(card) if card.is_file() else {}
    base = meta.get("base_model") if card.is_file() else _describe_source(path)
    return GTEModel(
        backbone,
        tokenizer,
        pooling=pooling,
        normalize=settings.get("normalize", True) if normalize is None else normalize,
        max_seq_len=_max_seq_len(max_seq_len, settings, backbone),
        prompts=settings.get("prompts"),
        base_model=base,
        matryoshka_dims=meta.get("matryoshka_dims"),
        rotation=rotation,
    )


def remote_code_files(folder: Path) -> list[str]:
    """The Python files of a folder's own model code (what config.json's auto_map points into), sorted."""
    return sorted(p.name for p in Path(folder).glob("*.py"))


def _max_seq_len(override: int | None, settings: dict, backbone: nn.Module) -> int:
    """The argument, else the folder's sentence_bert_config.json, else min(max positions, 512); checked against the
    positions the backbone has (a longer text would index past its position table)."""
    if override is not None:
        return check_max_seq_len(override, backbone, "max_seq_len")
    if "max_seq_len" in settings:
        return check_max_seq_len(settings["max_seq_len"], backbone, settings["max_seq_len_key"])
    return min(getattr(backbone.config, "max_position_embeddings", 512), 512)


def _weights_file(folder: Path) -> Path:
    """The weights file to load (safetensors first), or a ModelLoadError listing every missing piece."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    found = [folder / f for f in _WEIGHT_FILES if (folder / f).is_file()]
    if not found:
        missing.append(f"weights ({' or '.join(_WEIGHT_FILES)})")
    if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        missing.append(f"tokenizer ({' or '.join(_TOKENIZER_FILES)})")
    if missing:
        raise ModelLoadError(f"{folder.resolve()}: not a loadable model folder, missing {', '.join(missing)}; "
                             "point at a folder written by `gte export` or `gte train`")
    return found[0]


def _check_finite(backbone: nn.Module, weights: Path) -> None:
    """Refuse weights holding NaN or inf (a diverged run): every vector they give is NaN or meaningless."""
    bad = count_non_finite(backbone)
    if bad:
        raise ModelLoadError(
            f"{weights.resolve()}: weights hold {bad} non-finite values (NaN or inf); the run that wrote them "
            "diverged; do not use this model: export an earlier checkpoint or retrain with a lower optim.lr"
        )


def _short(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 200 characters: error messages stay one line."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 200 else text[:197] + "..."


# ---- what identifies a model's weights (completion records of training and mining) ---------------------------
def weights_digest(folder: str | Path) -> str:
    """`<weights file>:sha256=<digest>`: the sha256 of every file the loader reads a folder's weights from
    (weight_files, in its Transformer module's folder), plus `,rotation:sha256=<digest>` for a rotated export;
    'missing' when it has no weights file. One read of the weights: about a second per GB."""
    path = Path(folder).expanduser()
    settings = read_st_settings(path)
    files = weight_files(Path(settings.get("transformer_dir", path)))
    if not files:
        return "missing"
    digest = f"{files[0].relative_to(path).as_posix()}:sha256={file_sha256(*files)[:32]}"
    rotation = settings.get("rotation")
    if rotation is not None:
        digest += f",rotation:sha256={hashlib.sha256(rotation.numpy().tobytes()).hexdigest()[:32]}"
    return digest


def weight_files(folder: Path) -> list[Path]:
    """The files holding a folder's weights, as the loader picks them: model.safetensors, else a sharded
    checkpoint's index and the shards it names (sorted), else pytorch_model.bin; [] when there is none."""
    found = next((folder / f for f in _WEIGHT_FILES if (folder / f).is_file()), None)
    if found is None or not found.name.endswith(".index.json"):
        return [] if found is None else [found]
    index = _read_json(found)
    names = sorted(set(index.get("weight_map", {}).values())) if isinstance(index, dict) else []
    lost = [n for n in names if not (folder / n).is_file()]
    if not names or lost:
        raise ModelLoadError(f"{found}: names {'no shards' if not names else f'missing shards {lost[:3]}'}; the "
                             "model folder is incomplete, copy or export it again")
    return [found, *(folder / n for n in names)]
