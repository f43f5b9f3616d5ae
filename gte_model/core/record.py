"""Completion records: the one answer to "is this artifact already done?".

An artifact (a prep output, a mined output, a training run, a pipeline phase) is complete when its folder holds
RECORD_FILE, written last. The record says what produced it: the artifact kind and the code's format version for
it, the config (flat dotted keys, minus keys that cannot change the output) and fingerprints of its inputs (files:
size + mtime; pairs dirs: their manifest digest; models: their weights digest).

  same record       -> nothing to do
  different record  -> the caller continues where that is sound (e.g. more training steps), else `StaleOutput`
                       names the changed keys or inputs and the key that forces a rebuild
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

    def changes(self, other: Record) -> list[str]:
        """What differs from `other`, one entry per key or input, e.g. 'optim.lr (1e-05 -> 2e-05)'. Records of two
        kinds (a prep output where a mine output is wanted) differ in kind alone: their keys are not comparable."""
        out = []
        if (self.kind, self.version) != (other.kind, other.version):
            out.append(f"format ({self.kind} v{self.version} -> {other.kind} v{other.version})")
            if self.kind != other.kind:
                return out
        for where, old, new in (("", self.config, other.config), ("input ", self.inputs, other.inputs)):
            for key in sorted(set(old) | set(new)):
                added = not where and key not in old and key in other.defaults
                if old.get(key) != new.get(key) and not (added and other.defaults[key] == new[key]):
                    out.append(f"{where}{key} ({_short(old.get(key))} -> {_short(new.get(key))})")
        return out


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
        f"{folder}: was built from another config or other inputs: {'; '.join(changes)}; "
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
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            return f"{name}:sha256={h.hexdigest()[:32]}"
    return "missing"


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


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
