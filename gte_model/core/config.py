"""Typed YAML configs with dotted command-line overrides, shared by `gte train`, `gte prep`, `gte mine`, `gte run`
and `gte merge`.

A schema is a dataclass (fields documented where declared). `load_config(Schema, "x.yaml", ["optim.lr=1e-4"])`
merges defaults <- YAML <- overrides through OmegaConf structured configs, so unknown keys and wrong types fail;
we re-raise with a close-match hint and the exact spelling to use on the command line. The YAML is read by the
schema's types and strictly (gte_model.core.config_yaml): a string field gets the text as written, no `${...}`
interpolation, no duplicate keys, bounded size. An override `key=value` into a string field takes the text after
`=` as typed (one pair of surrounding quotes removed); any other field reads it as YAML (`models=[a,b]`,
`train.grad_cache=false`); `files.0.path=x` changes an existing list entry.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
import typing
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from gte_model.core.atomic import write_text
from gte_model.core.config_yaml import (
    MAX_CONFIG_BYTES,
    ConfigError,
    UnknownKeyError,
    child_type,
    is_string_field,
    parse_yaml,
    string_value,
)

__all__ = ["Bounds", "ConfigError", "bounded", "config_from_argv", "config_to_dict", "dump_config", "field_problems",
           "load_config", "save_config"]
T = TypeVar("T")
_INT64 = (-(2**63), 2**63 - 1)  # what torch, numpy and JSON readers take as a whole number
# what OmegaConf raises for a value that does not fit (a dict into a list, a str index): each becomes one problem
SHOW_CONFIG = "--show-config"
SHOW_CONFIG_HELP = (f"{SHOW_CONFIG} lists every config key with its default, type, accepted values and meaning "
                    f"(after a CONFIG and overrides: their values)")
_MERGE_ERRORS = (OmegaConfBaseException, TypeError, ValueError, KeyError, IndexError, AttributeError, ArithmeticError)


def load_config(schema: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Defaults of `schema` <- YAML file <- `key=value` overrides -> a validated `schema` instance."""
    cfg = _merged(schema, path, overrides)
    errors = _int64_problems(cfg)
    check = getattr(cfg, "validate", None)
    errors += check() if check is not None and not errors else []
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    return cfg


def _merged(schema: type[T], path: str | Path | None, overrides: list[str] | None) -> T:
    """Defaults <- YAML <- overrides as a `schema` instance, keys and types checked, the rules between fields not."""
    merged = OmegaConf.structured(schema)
    problems = []
    if path is not None:
        try:
            data = _read_yaml(Path(path), schema)  # a file that cannot be read at all stops here, named
        except UnknownKeyError as exc:
            problems.append(f"{exc.where}: {_unknown_key(exc.key, schema)}")
        else:
            try:
                merged = OmegaConf.merge(merged, data)
            except _MERGE_ERRORS as exc:
                problems.append(f"{path}: {_explain(exc, schema)}")
    for item in overrides or []:
        problem = _apply_override(merged, schema, item)
        if problem:
            problems.append(problem)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    try:
        return OmegaConf.to_object(merged)
    except _MERGE_ERRORS as exc:
        raise ConfigError(f"invalid config: {_explain(exc, schema)}") from exc


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What one config field accepts, declared where the field is (`bounded`) and checked by `field_problems`:
    a range (ge/gt low end, le/lt high end; a float must also be finite) or a set of choices."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    hint: str = ""  # what usual values look like, appended to the message

    def problem(self, key: str, value: Any) -> str | None:
        hint = f" ({self.hint})" if self.hint else ""
        if self.choices:
            return None if value in self.choices else f"{key}={value}: choose one of {', '.join(self.choices)}{hint}"
        inside = ((not isinstance(value, float) or math.isfinite(value))
                  and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                  and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        finite = "a finite number " if isinstance(value, float) else ""
        return None if inside else f"{key}={value}: must be {finite}{self.span()}{hint}"

    def span(self) -> str:
        low = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else ""
        high = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else ""
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if self.ge is not None else "> ") + low[1:]
        return ("<= " if self.le is not None else "< ") + high[:-1]


def bounded(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **limits: Any) -> Any:
    """A dataclass field with its Bounds: `chunk_size: int = bounded(64, ge=1)`,
    `precision: str = bounded("fp32", choices=("fp32", "bf16"))`."""
    limits["choices"] = tuple(limits.get("choices", ()))  # a registry dict offers its keys
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"bounds": Bounds(**limits)})


def field_problems(cfg: Any, prefix: str = "") -> list[str]:
    """Every field of `cfg` (nested sections and lists of sections included) outside its declared Bounds, in
    override spelling, all at once. Rules between fields stay in each schema's validate()."""
    errors = []
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        bounds = f.metadata.get("bounds")
        problem = bounds.problem(key, value) if bounds is not None and value is not None else None
        errors += [problem] if problem else []
        if dataclasses.is_dataclass(value):
            errors += field_problems(value, key + ".")
        elif isinstance(value, list):
            errors += [e for i, item in enumerate(value) if dataclasses.is_dataclass(item)
                       for e in field_problems(item, f"{key}.{i}.")]
    return errors


def config_from_argv(schema: type[T], argv: list[str] | None, usage: str, command: str = "") -> T | None:
    """`gte <cmd> [CONFIG.yaml] [key=value ...]` -> the loaded config; None after printing `usage` (no arguments,
    -h or --help) or the key listing (--show-config, anywhere: with a CONFIG or overrides it lists their values).
    The one argument parser of every config-driven command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage.rstrip() + f"\n\n{SHOW_CONFIG_HELP}")
        return None
    show = SHOW_CONFIG in argv
    argv = [a for a in argv if a != SHOW_CONFIG]
    flags = [a for a in argv if a.startswith("--") and "=" not in a]
    if flags:  # a config command's only flags are --help and --show-config; `--max-steps 3` is not a config path
        name = flags[0][2:].replace("-", "_")
        keys = [k for k in _all_keys(schema) if k.rsplit(".", 1)[-1] == name] or ["KEY"]
        raise ConfigError(f"{flags[0]}: this command takes key=value overrides, not flags; write {keys[0]}=VALUE "
                          "(`--show-config` lists every key)")
    path = argv.pop(0) if argv and "=" not in argv[0] else None
    if show:  # the values as loaded, before the rules between keys: a config still being written can be listed
        from gte_model.core.config_show import show_config

        loaded = _merged(schema, path, argv) if path is not None or argv else None
        print(show_config(schema, loaded, command or schema.__name__))
        return None
    return load_config(schema, path, argv)


def _apply_override(merged: Any, schema: type, item: str) -> str | None:
    """Set one `key=value` in `merged`; the problem in one line, or None."""
    where = f"override {item if len(item) <= 100 else item[:80] + '...'!r}"
    key, eq, text = item.partition("=")
    key = key.strip()
    if not eq or not key or "" in key.split("."):
        return f"{where} is not key=value (e.g. train.max_steps=100)"
    if len(item) > MAX_CONFIG_BYTES:
        return f"{where}: longer than {MAX_CONFIG_BYTES:,} characters; put the value in a config file"
    field_type, problem = _field_type(merged, schema, key)
    if problem:
        return f"{where}: {problem}"
    try:
        if is_string_field(field_type):
            value = string_value(text, field_type, key, where)
        else:
            value = parse_yaml(text, where, field_type, key)
        OmegaConf.update(merged, key, value, merge=True)
    except UnknownKeyError as exc:
        return f"{exc.where}: {_unknown_key(exc.key, schema)}"
    except ConfigError as exc:
        return str(exc)
    except _MERGE_ERRORS as exc:
        return f"{where}: {_explain(exc, schema, key)}"
    return None


def _field_type(merged: Any, schema: type, key: str) -> tuple[Any, str | None]:
    """The declared type at a dotted key (None when unknown: OmegaConf then names the unknown key), or a problem:
    an index into a list must be a number below the list's length."""
    typ: Any = schema
    parts = key.split(".")
    for i, part in enumerate(parts):
        current = OmegaConf.select(merged, ".".join(parts[:i]), default=None) if i else merged
        if OmegaConf.is_list(current):
            size = len(current)
            if not part.isdigit() or int(part) >= size:
                parent = ".".join(parts[:i])
                entries = f"entries {parent}.0 to {parent}.{size - 1}" if size else "no entries"
                return None, (f"{parent}.{part}: {parent} has {entries}; set the whole list in the config file or "
                              f"as {parent}=[...] before changing one entry")
        typ = child_type(typ, part) if typ is not None else None
    return typ, None


def _int64_problems(cfg: Any, prefix: str = "") -> list[str]:
    """Whole numbers beyond 64 bits (a 25-digit seed) fail later inside numpy or torch; name them here."""
    if dataclasses.is_dataclass(cfg):
        items = [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]
    elif isinstance(cfg, dict):
        items = list(cfg.items())
    elif isinstance(cfg, list):
        items = list(enumerate(cfg))
    else:
        low, high = _INT64
        if isinstance(cfg, int) and not isinstance(cfg, bool) and not low <= cfg <= high:
            return [f"{prefix}={cfg}: out of range; use a whole number between -2**63 and 2**63-1"]
        return []
    return [e for name, value in items for e in _int64_problems(value, f"{prefix}.{name}" if prefix else str(name))]


def _read_yaml(path: Path, schema: type) -> dict:
    """The file's mapping, typed by `schema`, or a ConfigError naming the file (missing, too large, not UTF-8, bad
    YAML, not a mapping, a duplicate key, an alias, an interpolation)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist; check the path")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes, more than a config may hold ({MAX_CONFIG_BYTES:,}); a config "
                          "sets options, not data (name data files in it)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc}); save the config as UTF-8") from exc
    raw = parse_yaml(text, str(path), schema)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the file holds a {type(raw).__name__}, not a mapping of keys; write `key: value` "
                          "lines (see configs/*.yaml)")
    return raw


def config_to_dict(cfg: Any) -> dict:
    """Plain dict of a (nested) config dataclass, for saving next to a run or in an export."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    write_text(path, dump_config(cfg))


def dump_config(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _explain(exc: Exception, schema: type, where: str = "") -> str:
    """One line for what OmegaConf raised; `where` is the key being set when the exception names none."""
    # OmegaConf spells list entries files[0]; the command line spells them files.0
    key = (getattr(exc, "full_key", None) or where).replace("[", ".").replace("]", "")
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)) and key:
        return _unknown_key(key, schema)
    return f"{key or '?'}: {msg}"


def _unknown_key(key: str, schema: type) -> str:
    """`unknown key K; did you mean ...?` (or the keys beside it)."""
    # list entries are matched as `#`, then the hint gets the user's own index back
    indices = re.findall(r"(?<=\.)\d+(?=\.|$)", key)
    template = re.sub(r"(?<=\.)\d+(?=\.|$)", "#", key)
    known = _all_keys(schema)
    close = difflib.get_close_matches(template, known, n=1, cutoff=0.5)
    if close:
        hint = "; did you mean " + re.sub("#", lambda _: indices.pop(0) if indices else "0", close[0]) + "?"
    else:
        hint = f"; known keys under it: {_siblings(template, known)}"
    return f"unknown key {key}{hint}"


def _all_keys(schema: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a schema; an entry of a list of sections is spelled `#` (files.#.path)."""
    keys = []
    for f in dataclasses.fields(schema):
        name = f"{prefix}{f.name}"
        keys.append(name)
        typ = child_type(schema, f.name)
        if dataclasses.is_dataclass(typ):
            keys += _all_keys(typ, name + ".")
        elif dataclasses.is_dataclass(child_type(typ, "0")) and typing.get_origin(typ) is list:
            keys += _all_keys(child_type(typ, "0"), name + ".#.")
    return keys


def _siblings(key: str, known: list[str]) -> str:
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    names = sorted({k[len(parent) :].split(".")[0] for k in known if k.startswith(parent)})
    return ", ".join(names) or "(none)"
