"""`gte <cmd> --show-config`: every key of a config schema with its value, type, accepted values and meaning.

Read from the same declarations the validation uses: the dataclass fields, their types, their Bounds
(gte_model.core.config.bounded) and the comment written where each field is declared (above it or after it on the
same line), so the listing cannot drift from the schema. A field may also carry `metadata={"doc": ...}`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Any

from gte_model.core.config_yaml import child_type

__all__ = ["field_doc", "field_docs", "show_config", "walk_keys"]
_WIDTH = 119


def show_config(schema: type, cfg: Any | None = None, command: str = "") -> str:
    """The listing of `schema`'s keys; with `cfg` (the loaded config) each value is cfg's and a changed default is
    named beside it."""
    defaults = schema()
    lines = [f"{command or 'config'} keys: set them in the YAML file (nested) or as key=value on the command line "
             "(dotted); `#` in a key is a list entry's index", ""]
    for key, f, owner, default in walk_keys(defaults):
        doc = field_doc(owner, f)
        if dataclasses.is_dataclass(default):  # a section: its own comment, then its keys
            lines += textwrap.wrap(f"[{key}]  {doc}", _WIDTH, subsequent_indent="    ") if doc else [f"[{key}]"]
            continue
        # an entry of a list of sections (files.#.path) shows its default: the entries' own values are in the list
        value = default if cfg is None or ".#." in key else _lookup(cfg, key)
        shown = _fmt(value) + (f"  (default {_fmt(default)})" if cfg is not None and value != default else "")
        extra = _accepts(f)
        lines.append(f"{key} = {shown}   [{_type_name(_field_type(owner, f.name))}{extra}]")
        if doc:
            lines += textwrap.wrap(doc, _WIDTH, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def walk_keys(cfg: Any, prefix: str = ""):
    """(dotted key, dataclass field, the section holding it, its value) of every key of a config instance, a section
    before its keys; a list of sections yields its own key, then its entries' keys spelled `key.#.name` from the
    entry's defaults."""
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        yield key, f, cfg, value
        if dataclasses.is_dataclass(value):
            yield from walk_keys(value, key + ".")
            continue
        entry = child_type(_field_type(cfg, f.name), "0")
        if typing.get_origin(_field_type(cfg, f.name)) is list and dataclasses.is_dataclass(entry):
            yield from walk_keys(entry(), key + ".#.")


def field_doc(owner: Any, f: dataclasses.Field) -> str:
    """The meaning of field `f` of section `owner`: its `doc` metadata, else the comment where it is declared (in
    the class that declares it, a base class for an inherited field)."""
    declared = (field_docs(cls).get(f.name) for cls in type(owner).__mro__ if dataclasses.is_dataclass(cls))
    return f.metadata.get("doc") or next((doc for doc in declared if doc), "")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field name: its comment} for one dataclass: the comment lines right above the field joined with the one after
    it; {} when the source cannot be read (an installed zip)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, the line holds only the comment)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.string.lstrip("#").strip(), not tok.line[: tok.start[1]].strip())
    docs = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line in comments and comments[line][1]:
            above.insert(0, comments[line][0])
            line -= 1
        after = [comments[n][0] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        docs[node.target.id] = " ".join(above + after)
    return docs


def _field_type(owner: Any, name: str) -> Any:
    return child_type(type(owner), name)


def _lookup(cfg: Any, key: str) -> Any:
    """cfg's value at a dotted key."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _accepts(f: dataclasses.Field) -> str:
    bounds = f.metadata.get("bounds")
    if bounds is None:
        return ""
    if bounds.choices:
        return ", one of: " + " | ".join(bounds.choices)
    return ", " + bounds.span()


def _type_name(typ: Any) -> str:
    if isinstance(typ, type) and not typing.get_args(typ):
        return typ.__name__
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(typ)).replace("NoneType", "None")  # FileSource, not a.b.FileSource


def _fmt(value: Any) -> str:
    """A value as it is written on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, str):
        return value if value.strip() == value and value else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if dataclasses.is_dataclass(value):
        return "{" + ", ".join(f"{f.name}: {_fmt(getattr(value, f.name))}" for f in dataclasses.fields(value)) + "}"
    return str(value)
