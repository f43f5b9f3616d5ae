"""Atomic writes: a file or a folder appears complete or not at all, and we never replace what is not ours.

Files are written to `.<name>.tmp-<pid>@<host>` beside the target, flushed and renamed over it. Folders are built
in `.<name>.tmp-<pid>@<host>` and renamed into place by `build_dir`; a folder is replaced only if it carries our
owner marker (OWNER_FILE). Temp names carry the writer's pid and host, so `clean_stale` removes those of dead
processes of this machine (a kill or a full disk) and never a live writer's, nor one of another node sharing the
file system (whose pids this machine cannot see).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from gte_model.core.errors import UserError

OWNER_FILE = ".gte-owner"  # present in every folder this project built; content: what built it
_TMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:@(?P<host>.+))?$")
_HOST = socket.gethostname().replace("/", "_")


def temp_name(final: str | Path, kind: str = "tmp") -> Path:
    """`.<name>.<kind>-<pid>@<host>` beside `final`: this process's private temp path for it."""
    final = Path(final)
    return final.parent / f".{final.name}.{kind}-{os.getpid()}@{_HOST}"


def write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
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


def is_ours(folder: str | Path) -> bool:
    return (Path(folder) / OWNER_FILE).is_file()


def mark_ours(folder: str | Path, what: str) -> None:
    (Path(folder) / OWNER_FILE).write_text(what + "\n")


def check_replaceable(folder: str | Path, key: str) -> None:
    """Refuse to replace a non-empty folder that this project did not build (user data, another tool's output)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{key}={folder}: is a file, not a folder; choose a folder path")
    if folder.is_dir() and any(folder.iterdir()) and not is_ours(folder):
        raise UserError(
            f"{key}={folder}: the folder is not empty and was not written by gte (no {OWNER_FILE} marker); "
            f"nothing was deleted; choose an empty or new {key}"
        )


@contextlib.contextmanager
def build_dir(final: str | Path, what: str, key: str) -> Iterator[Path]:
    """Yield a fresh temp folder beside `final`; on success mark it ours and rename it over `final` (which must be
    ours or empty); on failure remove it. Readers of `final` see the old folder or the new one, never half."""
    final = Path(final)
    check_replaceable(final, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent)
    tmp = temp_name(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        mark_ours(tmp, what)
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
    """Remove temp files and folders (`.<name>.tmp-<pid>@<host>`, `.old-`) whose writer, a process of this host,
    is no longer alive. Names without a host are from older versions and judged by pid alone."""
    parent, removed = Path(parent), []
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        match = _TMP.match(path.name)
        if match is None or match.group("host") not in (None, _HOST) or _alive(int(match.group("pid"))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
