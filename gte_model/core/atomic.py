"""Atomic writes: a file or a folder appears complete or not at all, and we never replace what is not ours.

Files are written to `.<name>.gte-tmp-<pid>@<host>` beside the target, flushed and renamed over it. Folders are
built in such a temp folder by `build_dir`, under the folder's lock (core.lock), and renamed into place.

Ownership: every folder gte builds carries an owner marker (OWNER_FILE) naming what built it (`gte export`,
`gte train`, ...). A writer replaces only a folder whose marker names its own kind, and only when told to (the
command's overwrite switch); anything else, a folder without the marker included, is refused in one line naming
what built it, and nothing is deleted.

Temp names carry a token no user file has (`.gte-tmp-`, `.gte-old-`), the writer's pid and its host, and temp
folders carry the owner marker from the start: `clean_stale` removes only such names of dead processes of this
machine, never a live writer's, nor one of another node sharing the file system, nor a look-alike user file.
Files get the usual mode of a new file (0666 minus the umask), also those that libraries write private (0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from gte_model.core.errors import UserError, names_path
from gte_model.core.lock import HOST, hold, pid_alive

OWNER_FILE = ".gte-owner"  # present in every folder this project built; first line: what built it
_TMP = re.compile(r"^\.(?P<name>.+)\.gte-(?:tmp|old)-(?P<pid>\d+)@(?P<host>[^@/]+)$")
# Marker texts older versions wrote for what is now this kind (the trainer's export was marked `gte export`).
_OLDER_NAMES = {"gte train": ("gte export",), "gte run": ("gte run export",)}


def temp_name(final: str | Path, kind: str = "tmp") -> Path:
    """`.<name>.gte-<kind>-<pid>@<host>` beside `final`: this process's private temp path for it."""
    final = Path(final)
    return final.parent / f".{final.name}.gte-{kind}-{os.getpid()}@{HOST}"


def write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with names_path(path), open(tmp, "wb") as fh:  # a full disk names the file, not `?`
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    """JSON without NaN or infinity (which are not JSON): a non-finite number is a bug upstream, raised here."""
    return write_text(path, json.dumps(obj, indent=indent, allow_nan=False, default=str) + "\n")


def owner(folder: str | Path) -> str | None:
    """What built `folder` (its owner marker's first line), None when gte did not."""
    try:
        return (Path(folder) / OWNER_FILE).read_text().splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        return None


def mark_ours(folder: str | Path, what: str) -> None:
    (Path(folder) / OWNER_FILE).write_text(what + "\n")


def check_replaceable(folder: str | Path, key: str, kind: str, overwrite: bool = False,
                      flag: str = "overwrite=true") -> None:
    """Refuse to replace a non-empty folder unless gte's `kind` (the owner marker this writer writes) built it and
    `overwrite` is set. `flag` is how the user sets overwrite (`--overwrite`, `overwrite=true`)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{key}={folder}: is a file, not a folder; choose a folder path")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    built_by = owner(folder)
    if built_by is None:
        raise UserError(f"{key}={folder}: the folder is not empty and was not written by gte (no {OWNER_FILE} "
                        f"marker); nothing was deleted; choose an empty or new {key}")
    if built_by not in (kind, *_OLDER_NAMES.get(kind, ())):
        raise UserError(f"{key}={folder}: holds the output of `{built_by}`, which `{kind}` never replaces; nothing "
                        f"was deleted; choose another {key}")
    if not overwrite:
        raise UserError(f"{key}={folder}: already holds a `{built_by}` output; nothing was deleted; set {flag} to "
                        f"replace it, or choose another {key}")


def claim_dir(folder: str | Path, key: str, kind: str, older: bool = False, write: bool = True) -> Path:
    """Make `folder` a folder of `kind` that is written in place (a run dir): a new or empty one is created and
    marked; one marked by another kind, or unmarked and not `older` (what an older version of `kind` left, judged
    by the caller), is refused. write=False checks without creating (processes other than the main one)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{key}={folder}: is a file, not a folder; choose a folder path")
    built_by = owner(folder)
    if built_by is None and folder.is_dir() and any(folder.iterdir()) and not older:
        raise UserError(f"{key}={folder}: the folder is not empty and was not written by gte (no {OWNER_FILE} "
                        f"marker); nothing was changed; choose an empty or new {key}")
    if built_by is not None and built_by != kind:  # (older names of kind are exports, never a claimed folder)
        raise UserError(f"{key}={folder}: holds the output of `{built_by}`, not a `{kind}` folder; nothing was "
                        f"changed; choose another {key}")
    if write and built_by != kind:
        folder.mkdir(parents=True, exist_ok=True)
        mark_ours(folder, kind)
    return folder


@contextlib.contextmanager
def build_dir(final: str | Path, what: str, key: str, overwrite: bool = False,
              flag: str = "overwrite=true") -> Iterator[Path]:
    """Yield a fresh temp folder beside `final`; on success rename it over `final` (see check_replaceable: only an
    output of `what` with `overwrite`); on failure remove it. Readers of `final` see the old folder or the new one,
    never half; `final` is locked (core.lock) throughout."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with hold(final, key):
        check_replaceable(final, key, what, overwrite, flag)
        clean_stale(final.parent)
        tmp = temp_name(final)
        tmp.mkdir()
        mark_ours(tmp, what)  # a temp folder of ours from the start: clean_stale may remove it after a crash
        try:
            with names_path(final):  # a full disk in any writer (pyarrow, shutil, a file object) names the output
                yield tmp
            mark_ours(tmp, what)
            apply_umask(tmp)
            replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def replace_dir(tmp: Path, final: Path) -> None:
    """Rename tmp over final: the old folder moves aside first and is deleted after."""
    old = temp_name(final, "old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def clean_stale(parent: str | Path) -> list[Path]:
    """Remove what dead processes of this host left beside their outputs: temp files named
    `.<name>.gte-tmp-<pid>@<host>`, and temp folders (`.gte-tmp-`, `.gte-old-`) that carry the owner marker (or are
    empty). Anything else, however it is named, is not provably ours and stays."""
    parent, removed = Path(parent), []
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        match = _TMP.match(path.name)
        if match is None or match.group("host") != HOST or pid_alive(int(match.group("pid"))):
            continue
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        elif owner(path) is not None:
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.rmdir()  # an empty folder only
            if path.exists():
                continue
        removed.append(path)
    return removed


def apply_umask(folder: str | Path) -> None:
    """Give every file under folder the mode of a new file (0666 minus the umask): safetensors writes 0600, which
    would keep an export from another user or a serving account."""
    mask = _umask()
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: read by setting it (and putting it back at once)
    os.umask(mask)
    return mask


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry so a rename survives a power loss, not only a process kill."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
