"""Completion records: the one answer to "is this artifact already done?".

An artifact (a prep output, a mined output, a training run, a pipeline phase) is complete when its folder holds
RECORD_FILE, written last. The record says what produced it: the artifact kind and the code's format version for
it, the config (flat dotted keys, minus keys that cannot change the output) and fingerprints of its inputs (files:
size + mtime; pairs dirs: the sha256s of their shards (gte_model.core.pairs.manifest_digest); models: their weights
digest (gte_model.load.weights_digest)).

  same record       -> nothing to do
  different record  -> the caller continues where that is sound (e.g. more training steps), else `StaleOutput`
                       names the changed keys or inputs and the key that forces a rebuild

Record.changes returns Change objects: callers decide on their keys, messages are rendered from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from gte_model.core.atomic import write_json
from gte_model.core.errors import UserError

RECORD_FILE = "gte_record.json"


class StaleOutput(UserError):
    """An existing artifact made from another config or other inputs, which cannot be continued."""


@dataclass
class Record:
    kind: str  # prep, mine, train, phase:<name>
    version: int  # the code's output format version for this kind: a bump invalidates older artifacts
    config: dict = field(default_factory=dict)  # flat dotted key -> value
    inputs: dict = field(default_factory=dict)  # input name -> fingerprint
    stats: dict = field(default_factory=dict)  # what the build measured (seconds, memory): not part of the identity
    # the config's default values (flat), never written: a key an older record lacks (added to the code since) is no
    # change while it holds its default, so a new option does not rebuild what the old code made
    defaults: dict = field(default_factory=dict, compare=False, repr=False)

    def changes(self, other: Record) -> list[Change]:
        """What differs from `other`, one Change per key or input (str(change) reads e.g. 'optim.lr (1e-05 ->
        2e-05)'). Records of two kinds (a prep output where a mine output is wanted) differ in kind alone: their keys
        are not comparable."""
        out = []
        if (self.kind, self.version) != (other.kind, other.version):
            out.append(Change("format", f"{self.kind} v{self.version}", f"{other.kind} v{other.version}", "format"))
            if self.kind != other.kind:
                return out
        for where, old, new in (("config", self.config, other.config), ("input", self.inputs, other.inputs)):
            for key in sorted(set(old) | set(new)):
                added = where == "config" and key not in old and key in other.defaults
                if old.get(key) != new.get(key) and not (added and other.defaults[key] == new[key]):
                    out.append(Change(key, old.get(key), new.get(key), where))
        return out


@dataclass(frozen=True)
class Change:
    """One difference between two records: callers decide on `key` and `where`, messages use str(change)."""

    key: str  # a dotted config key, an input name, or "format"
    old: object
    new: object
    where: str = "config"  # config, input or format

    def __str__(self) -> str:
        if self.where == "format":
            return f"format ({self.old} -> {self.new})"
        if self.where == "input":
            return f"input {self.key} ({_input_diff(self.old, self.new)})"
        return f"{self.key} ({_short(self.old)} -> {_short(self.new)})"


def describe(changes: list[Change]) -> str:
    return "; ".join(str(c) for c in changes)


def flatten(tree, prefix: str = "", skip: frozenset[str] | set[str] = frozenset()) -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; dataclasses become dicts; dotted keys in `skip` (and below them) are left out."""
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        tree = dataclasses.asdict(tree)
    out: dict = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if name in skip:
            continue
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + ".", skip))
        else:
            out[name] = _jsonable(value)
    return out


def read_record(folder: str | Path, name: str = RECORD_FILE) -> Record | None:
    path = Path(folder) / name
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return Record(raw["kind"], int(raw["version"]), raw.get("config", {}), raw.get("inputs", {}),
                      raw.get("stats", {}))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None  # a damaged record is no record: the artifact is rebuilt or continued


def write_record(folder: str | Path, record: Record, name: str = RECORD_FILE) -> Path:
    raw = dataclasses.asdict(record)
    del raw["defaults"]
    return write_json(Path(folder) / name, raw)


def defaults_of(config, skip: frozenset[str] | set[str] = frozenset()) -> dict:
    """The flat default values of a dataclass config's type ({} for anything else), for Record.defaults."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return {}
    return flatten(type(config)(), skip=skip)


def is_complete(folder: str | Path, kind: str | tuple[str, ...]) -> bool:
    rec = read_record(folder)
    return rec is not None and rec.kind in ((kind,) if isinstance(kind, str) else kind)


def check_done(folder: str | Path, want: Record, force_key: str) -> bool:
    """True when `folder` holds the same record (nothing to do), False when it holds none (build it); raises
    StaleOutput naming what changed when it holds another."""
    have = read_record(folder)
    if have is None:
        return False
    changes = have.changes(want)
    if not changes:
        return True
    raise StaleOutput(
        f"{folder}: was built from another config or other inputs: {describe(changes)}; "
        f"set {force_key}=true to rebuild it, or choose another output folder"
    )


# ---- fingerprints ---------------------------------------------------------------------------------------------
def file_fingerprint(path: str | Path) -> str:
    """size + mtime: changes when the file is edited or replaced, costs no read."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_dir():
        return digest_json(sorted((p.relative_to(path).as_posix(), file_fingerprint(p))
                                  for p in path.rglob("*") if p.is_file()))
    st = path.stat()
    return f"size={st.st_size},mtime_ns={st.st_mtime_ns}"


def folder_digest(folder: str | Path, names: tuple[str, ...]) -> str:
    """sha256 over the first of `names` found in `folder` (e.g. a manifest or a weights file), 'missing' if none."""
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            return f"{name}:sha256={file_sha256(path)[:32]}"
    return "missing"


def file_sha256(*paths: str | Path) -> str:
    """sha256 (hex) of the files' bytes, one after another: a content digest."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def digest_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _input_diff(old, new) -> str:
    """Two fingerprints, shown in full where they differ: fingerprints made of `name=value` parts joined by commas
    show only the parts that changed, so the difference is never cut off."""
    if not (isinstance(old, str) and isinstance(new, str)):
        return f"{json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"
    a, b = old.split(","), new.split(",")
    if len(a) > 1 and [x.split("=")[0] for x in a] == [y.split("=")[0] for y in b]:  # the same parts, by name
        return "; ".join(f"{x} -> {y}" for x, y in zip(a, b) if x != y)
    return f"{old} -> {new}"


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
