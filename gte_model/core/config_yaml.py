"""Config YAML read strictly and by the schema's types: the reader behind gte_model.core.config.

- A string field gets the text as written: `dir: 2024.10` is "2024.10", `name: yes` is "yes", `dir: 0123` is
  "0123" (plain YAML would give 2024.1, True and 83). `null` unsets a `str | None` field; in a `str` field it is
  the text null. An int field reads `0123` as 123, never as octal. Lists and dicts are typed element by element.
- No interpolation: a value holding `${` is refused. OmegaConf would resolve `${oc.env:VAR}` and copy an
  environment variable (a cloud key, WANDB_API_KEY) into config.yaml, the model card and the export.
- Bounded: MAX_CONFIG_BYTES per file, MAX_CONFIG_NODES values, MAX_CONFIG_DEPTH levels of nesting, and no YAML
  aliases (`*name`), merge keys (`<<`) or custom tags, so a small file cannot expand into a huge config.
- A key given twice in one mapping is refused naming the file, the line and the key (YAML keeps the last).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from gte_model.core.errors import UserError

MAX_CONFIG_BYTES = 256 * 1024  # the shipped configs are under 8 KiB
MAX_CONFIG_NODES = 10_000  # values in one file or override (the quickstart holds ~250)
MAX_CONFIG_DEPTH = 32  # nesting levels (the quickstart needs 5); deeper input would exhaust Python's stack
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_DECIMAL = re.compile(r"[-+]?[0-9][0-9_]*")


class ConfigError(UserError, ValueError):
    """A config problem a user can fix; the message lists every problem found."""


class UnknownKeyError(ConfigError):
    """A key the schema lacks; gte_model.core.config adds the close-match hint."""

    def __init__(self, where: str, key: str) -> None:
        super().__init__(f"{where}: unknown key {key}")
        self.where, self.key = where, key


class _Refused(Exception):
    """A problem at a line of the text being read (turned into a ConfigError naming the source)."""

    def __init__(self, line: int | None, message: str, unknown_key: str = "") -> None:
        super().__init__(message)
        self.line, self.unknown_key = line, unknown_key


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that composes a node tree with no aliases, a bounded number of nodes and bounded depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.node_count = 0
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            raise _Refused(mark.line, "YAML aliases (*name) are not supported in configs; write the values out")
        self.node_count += 1
        if self.node_count > MAX_CONFIG_NODES:
            raise _Refused(mark.line, f"more than {MAX_CONFIG_NODES:,} values; a config sets options, not data "
                                      "(put long lists in a file the config names)")
        if self.depth >= MAX_CONFIG_DEPTH:
            raise _Refused(mark.line, f"nested more than {MAX_CONFIG_DEPTH} levels deep; flatten it")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def parse_yaml(text: str, where: str, schema: Any, key: str = "") -> Any:
    """YAML text -> plain Python data typed by `schema` (a dataclass, or a field's type); None for empty text.
    `where` names the source in errors: a file (its line numbers follow) or, with the `key` it sets, an override."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _convert(loader, node, schema, key)
    except _Refused as exc:
        at = _at(where, None if key else exc.line)
        raise (UnknownKeyError(at, exc.unknown_key) if exc.unknown_key else ConfigError(f"{at}: {exc}")) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = mark.line if mark and not key else None
        raise ConfigError(f"{_at(where, line)}: not valid YAML ({problem}); fix the syntax") from None
    finally:
        loader.dispose()


def string_value(text: str, field_type: Any, key: str, where: str) -> str | None:
    """An override's text for a string field: as typed, less one pair of surrounding quotes (`key=''` is empty);
    `null` unsets a `str | None` field."""
    if text == "null" and _unwrap(field_type)[1]:
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    try:
        return _literal(text, key, None)
    except _Refused as exc:
        raise ConfigError(f"{where}: {exc}") from None


def is_string_field(field_type: Any) -> bool:
    return _unwrap(field_type)[0] is str


def child_type(parent_type: Any, name: str) -> Any:
    """The type of `name` inside a value of `parent_type` (a dataclass field, a dict value, a list element);
    None when unknown (no such field, or an untyped container)."""
    inner = _unwrap(parent_type)[0]
    if dataclasses.is_dataclass(inner):
        return _hints(inner).get(name)
    args = typing.get_args(inner)
    if typing.get_origin(inner) is dict and len(args) == 2:
        return args[1]
    if typing.get_origin(inner) is list and args:
        return args[0]
    return None


def _convert(loader: _StrictLoader, node: Node, typ: Any, key: str) -> Any:
    expected = _kind(typ) if key else None  # a whole file that is no mapping is named by the file reader
    given = "value" if isinstance(node, ScalarNode) else "mapping" if isinstance(node, MappingNode) else "list"
    if expected and given != expected and node.tag != _NULL_TAG:
        example = {"list": "[a, b]", "mapping": "{key: value}", "value": "one value"}[expected]
        raise _Refused(node.start_mark.line, f"{key}: takes a {expected}, not a {given}; write "
                                             f"{example}" + (f" (e.g. {key}=[{node.value}])" if expected == "list"
                                                             and given == "value" else ""))
    if isinstance(node, ScalarNode):
        return _scalar(loader, node, typ, key)
    if isinstance(node, MappingNode):
        return _mapping(loader, node, typ, key)
    return [_convert(loader, item, child_type(typ, "0"), f"{key}.{i}" if key else str(i))
            for i, item in enumerate(node.value)]


def _mapping(loader: _StrictLoader, node: MappingNode, typ: Any, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    first_line: dict[str, int] = {}
    section = dataclasses.is_dataclass(_unwrap(typ)[0])
    for key_node, value_node in node.value:
        line = key_node.start_mark.line
        if key_node.tag == _MERGE_TAG:
            raise _Refused(line, "YAML merge keys (<<) are not supported in configs; write the values out")
        if not isinstance(key_node, ScalarNode):
            raise _Refused(line, f"a key under {key or 'the top level'} is not a plain name")
        name = _literal(key_node.value, key, line)
        dotted = f"{key}.{name}" if key else name
        if name in out:
            raise _Refused(line, f"key {dotted} appears twice (first at line {first_line[name] + 1}); YAML would "
                                 "silently keep only the last; merge them into one")
        if section and child_type(typ, name) is None:
            raise _Refused(line, "unknown key", unknown_key=dotted)
        first_line[name] = line
        out[name] = _convert(loader, value_node, child_type(typ, name), dotted)
    return out


def _scalar(loader: _StrictLoader, node: ScalarNode, typ: Any, key: str) -> Any:
    inner, optional = _unwrap(typ)
    # plain and untagged: the tag YAML guessed from the text (an explicit !!tag is constructed as YAML says)
    plain = node.style is None and node.tag == loader.resolve(ScalarNode, node.value, (True, False))
    if inner is str and plain:
        # a plain scalar in a string field is its text: YAML would turn yes into True and 2024.10 into 2024.1
        return None if optional and node.tag == _NULL_TAG else _literal(node.value, key, node.start_mark.line)
    if inner is int and plain and _DECIMAL.fullmatch(node.value):
        return int(node.value.replace("_", ""))  # YAML 1.1 reads a leading 0 as octal (0123 -> 83)
    if plain and ":" in node.value and node.tag in (_INT_TAG, _FLOAT_TAG):
        raise _Refused(node.start_mark.line, f"{key or 'value'}={node.value}: YAML 1.1 reads this as a base-60 "
                                             "number; write the number itself")
    try:
        value = loader.construct_object(node)
    except yaml.constructor.ConstructorError as exc:
        raise _Refused(node.start_mark.line, f"{key or 'value'}: {exc.problem}; configs take plain values "
                                             "(no !tags)") from None
    return _literal(value, key, node.start_mark.line) if isinstance(value, str) else value


def _literal(text: str, key: str, line: int | None) -> str:
    if "${" in text:
        raise _Refused(line, f"{key or 'value'}={text}: `${{...}}` interpolation is not supported (it could copy an "
                             "environment variable such as a cloud key into config.yaml and the export); write the "
                             "value itself")
    return text


@functools.cache
def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)  # evaluates the string annotations of `from __future__ import annotations`


def _kind(typ: Any) -> str | None:
    """What a field holds: a list, a mapping (a section or a dict) or a single value; None when untyped."""
    inner = _unwrap(typ)[0]
    if typing.get_origin(inner) is list:
        return "list"
    if dataclasses.is_dataclass(inner) or typing.get_origin(inner) is dict:
        return "mapping"
    return "value" if inner in (str, int, float, bool) else None


def _unwrap(typ: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (typ, False)."""
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return typ, False


def _at(where: str, line: int | None) -> str:
    return f"{where}:{line + 1}" if line is not None else where
