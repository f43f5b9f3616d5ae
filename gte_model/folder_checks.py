"""What a model folder may make the loader build or use, checked before anything is built.

A model folder is input like any other: a config.json field that is negative, zero or absurdly large must fail in
one line naming the file and the field, not as "damaged weights", a ZeroDivisionError or a build that never ends.
  check_config_json(cfg, path, files)    shape fields are positive integers within sane bounds, heads divide the
                                         hidden size, and the parameters they imply fit in the weights file
  check_tokenizer(tokenizer, folder, n)  a pad token, and no token id beyond the embedding table
  check_max_seq_len(value, backbone, w)  1 <= max_seq_len <= the positions the backbone has
  check_prompts(prompts, path)           {name: prefix} strings
Every failure is a ModelLoadError (a UserError): `<file>: <field>=<value> <problem>; <fix>`.
"""

from __future__ import annotations

import json
from pathlib import Path

from gte_model.assets import ModelLoadError
from gte_model.families import max_positions

# config.json shape fields (with their DistilBERT / T5-style spellings) -> the largest value accepted. Far above any
# encoder in use (BERT-large: 24 layers, 1024 wide; XLM-R: 250k tokens; long-context models: 8-32k positions), far
# below what hangs or exhausts memory while the backbone is built.
_MAX_SHAPE = {
    "hidden_size": 2**16, "dim": 2**16, "d_model": 2**16,
    "num_hidden_layers": 512, "n_layers": 512,
    "num_attention_heads": 2**10, "n_heads": 2**10,
    "intermediate_size": 2**18, "hidden_dim": 2**18,
    "vocab_size": 2**22,
    "max_position_embeddings": 2**20,
    "type_vocab_size": 2**10,
    "local_attention": 2**20,
    "global_attn_every_n_layers": 512,
}
# Parameters a weights file can hold per byte, at most: 2 for 4-bit quantisation (the densest in use), doubled as
# slack, so only a config.json that does not describe its weights is refused.
_PARAMS_PER_BYTE = 4


def check_config_json(config: dict, path: Path, weights: list[Path]) -> None:
    """Refuse a config.json (`config`, read from `path`) whose shape fields are not positive integers within bounds,
    whose heads do not divide its hidden size, or whose implied parameter count is far beyond what the weight files
    (gte_model.load.weight_files) hold."""
    for key, limit in _MAX_SHAPE.items():
        value = config.get(key)
        if key in config and (type(value) is not int or value < 1):
            raise ModelLoadError(f"{path}: {key}={value!r} must be a positive integer; fix config.json or export "
                                 "the model again")
        if key in config and value > limit:
            raise ModelLoadError(f"{path}: {key}={value:,} is beyond the {limit:,} this loader builds (far more than "
                                 "any encoder has: building it would exhaust memory or never end); fix config.json "
                                 "or export the model again")
    _check_fields(config, path)
    hidden, heads = _first(config, "hidden_size", "dim", "d_model"), _first(config, "num_attention_heads", "n_heads")
    if hidden and heads and hidden % heads and "head_dim" not in config:
        raise ModelLoadError(f"{path}: num_attention_heads={heads} does not divide hidden_size={hidden}; every head "
                             "needs the same width: fix config.json or export the model again")
    params, size = _implied_parameters(config), _weights_bytes(weights)
    if params and size is not None and params > _PARAMS_PER_BYTE * size:
        shape = ", ".join(f"{k}={config[k]:,}" for k in _MAX_SHAPE if k in config)
        held = f"{weights[0].name} holds" if len(weights) == 1 else f"its {len(weights) - 1} weight shards hold"
        raise ModelLoadError(f"{path}: {shape} imply at least {params:,} parameters, but {held} only "
                             f"{size:,} bytes; config.json does not describe these weights: fix it or export the "
                             "model again")


def check_tokenizer(tokenizer, folder: Path, vocab_size: int | None) -> None:
    """Padding needs a pad token; every token id must have a row in the backbone's embedding table."""
    if tokenizer.pad_token_id is None:
        raise ModelLoadError(f"{folder / 'tokenizer_config.json'}: the tokenizer has no pad_token, which batches "
                             'of texts need; set "pad_token" there to a token of its vocabulary (e.g. "[PAD]")')
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ModelLoadError(f"{folder / 'config.json'}: vocab_size={vocab_size} is smaller than the tokenizer's "
                             f"{len(tokenizer)} tokens (ids past it have no embedding); use the tokenizer the model "
                             "was trained with or export the model again")


def check_max_seq_len(value, backbone, where: str) -> int:
    """value as the model's max_seq_len: an integer from 1 to the positions the backbone has (where: the file and
    field, or the argument, that set it)."""
    limit = max_positions(backbone) or getattr(backbone.config, "max_position_embeddings", None)
    if type(value) is not int or value < 1 or (limit is not None and value > limit):
        bound = f"from 1 to {limit} (the positions the backbone has)" if limit else "a positive integer"
        raise ModelLoadError(f"{where}={value!r} must be {bound}; set it within that range")
    return value


def check_prompts(prompts, path: Path) -> dict[str, str]:
    """A folder's prompts: {name: prefix}, both strings (None = no prompts)."""
    if prompts is None:
        return {}
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
        raise ModelLoadError(f"{path}: prompts={json.dumps(prompts)[:80]} must be an object of name -> prefix "
                             'strings, e.g. {"query": "query: ", "document": ""}; fix the file or export again')
    return prompts


def _check_fields(config: dict, path: Path) -> None:
    """The padding id indexes the embedding table; the activation is one transformers knows (a name it cannot find
    fails deep in the build as a KeyError)."""
    from transformers.activations import ACT2FN

    pad, vocab = config.get("pad_token_id"), config.get("vocab_size")
    if pad is not None and vocab and (type(pad) is not int or not 0 <= pad < vocab):
        raise ModelLoadError(f"{path}: pad_token_id={pad!r} is not a token id of its vocab_size={vocab}; set it to "
                             "the tokenizer's pad token id or export the model again")
    for key in ("hidden_act", "hidden_activation"):
        if isinstance(config.get(key), str) and config[key] not in ACT2FN:
            raise ModelLoadError(f"{path}: {key}={config[key]!r} is not an activation transformers knows (e.g. gelu, "
                                 "relu, silu); fix config.json or export the model again")


def _first(config: dict, *keys: str) -> int | None:
    return next((config[k] for k in keys if k in config), None)


def _implied_parameters(config: dict) -> int | None:
    """A lower bound on the backbone's parameters: token embeddings, learned positions (not with RoPE), and per layer
    the Q, K, V, O projections and the two feed-forward matrices. None when config.json does not give the shape."""
    hidden = _first(config, "hidden_size", "dim", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layers")
    vocab = config.get("vocab_size")
    if not (hidden and layers and vocab):
        return None
    ffn = _first(config, "intermediate_size", "hidden_dim") or 0
    rope = any("rope" in key for key in config)
    positions = 0 if rope else config.get("max_position_embeddings", 0)
    return (vocab + positions) * hidden + layers * (4 * hidden * hidden + 2 * hidden * ffn)


def _weights_bytes(files: list[Path]) -> int | None:
    """Bytes of the tensors in a folder's weight files (gte_model.load.weight_files; a sharded index holds none);
    None when one is truncated (loading it then fails, blaming the file)."""
    sizes = [_file_bytes(f) for f in files if not f.name.endswith(".index.json")]
    return None if not sizes or None in sizes else sum(sizes)


def _file_bytes(path: Path) -> int | None:
    """A weights file's size; None when it is missing, or a safetensors file shorter than its header says."""
    try:
        size = path.stat().st_size
        if path.suffix != ".safetensors":
            return size
        with path.open("rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len > size:
                return None
            header = json.loads(fh.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return size if size >= 8 + header_len + end else None
