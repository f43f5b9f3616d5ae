"""Typed YAML configs with dotted command-line overrides, shared by `gte train`, `gte prep`, `gte mine`, `gte run`.

A schema is a dataclass (fields documented where declared). `load_config(Schema, "x.yaml", ["optim.lr=1e-4"])`
merges defaults <- YAML <- overrides through OmegaConf structured configs, so unknown keys and wrong types fail;
we re-raise with a close-match hint and the exact spelling to use on the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from gte_model.core.atomic import write_text
from gte_model.core.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A config problem a user can fix; the message lists every problem found."""


def load_config(schema: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Defaults of `schema` <- YAML file <- `key=value` overrides -> a validated `schema` instance."""
    base = OmegaConf.structured(schema)
    layers = []
    if path is not None:
        path = Path(path)
        layers.append((str(path), _read_yaml(path)))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.max_steps=100)")
        layers.append((f"override {item!r}", OmegaConf.from_dotlist([item])))
    problems = []
    merged = base
    for where, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except (ConfigKeyError, ValidationError, OmegaConfBaseException) as exc:
            problems.append(f"{where}: {_explain(exc, schema)}")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config: {_explain(exc, schema)}") from exc
    check = getattr(cfg, "validate", None)
    if check is not None:
        errors = check()
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    return cfg


def config_from_argv(schema: type[T], argv: list[str] | None, usage: str) -> T | None:
    """`gte <cmd> [CONFIG.yaml] [key=value ...]` -> the loaded config; None after printing `usage` (no arguments,
    -h or --help). The one argument parser of every config-driven command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return None
    path = argv.pop(0) if "=" not in argv[0] else None
    return load_config(schema, path, argv)


def _read_yaml(path: Path):
    """A YAML mapping, or a ConfigError naming the file (missing, unreadable, bad YAML, not a mapping)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist; check the path")
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc}); save the config as UTF-8") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}:{line}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the file holds a {type(raw).__name__}, not a mapping of keys; write `key: value` "
                          "lines (see configs/*.yaml)")
    try:
        return OmegaConf.create(raw)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from exc


def config_to_dict(cfg: Any) -> dict:
    """Plain dict of a (nested) config dataclass, for saving next to a run or in an export."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    write_text(path, dump_config(cfg))


def dump_config(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _explain(exc: OmegaConfBaseException, schema: type) -> str:
    key = getattr(exc, "full_key", None) or ""
    msg = str(exc).splitlines()[0]
    if isinstance(exc, ConfigKeyError) and key:
        known = _all_keys(schema)
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else f"; known keys under it: {_siblings(key, known)}"
        return f"unknown key {key}{hint}"
    return f"{key or '?'}: {msg}"


def _all_keys(schema: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(schema):
        name = f"{prefix}{f.name}"
        keys.append(name)
        ftype = f.type if isinstance(f.type, type) else None
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore
        if dataclasses.is_dataclass(default):
            keys += _all_keys(type(default), name + ".")
        elif ftype is not None and dataclasses.is_dataclass(ftype):
            keys += _all_keys(ftype, name + ".")
    return keys


def _siblings(key: str, known: list[str]) -> str:
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    names = sorted({k[len(parent) :].split(".")[0] for k in known if k.startswith(parent)})
    return ", ".join(names) or "(none)"
