"""Paths anywhere for `gte prep`: a user file or out_dir may be an fsspec URL (`s3://`, `gs://`, `memory://`, ...).

Kept minimal on purpose: a remote input is copied into the build's work folder and read from there (the readers
stay the local ones, streaming); a remote out_dir is built in a local temp folder like any other, then uploaded,
the completion record last, so a reader never takes a half-uploaded folder for a finished one. Plain paths and
`file://` URLs are local paths. Remote file systems need their fsspec package (s3fs, gcsfs, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from gte_model.core.atomic import OWNER_FILE
from gte_model.core.errors import UserError
from gte_model.core.record import RECORD_FILE, file_fingerprint


def is_remote(path: str) -> bool:
    """True for a URL of a file system other than the local one."""
    protocol, sep, _ = str(path).partition("://")
    return bool(sep) and protocol not in ("file", "local")


def local(path: str) -> str:
    """A local path from a plain path or a file:// URL."""
    return str(path)[len("file://"):] if str(path).startswith("file://") else str(path)


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)[0]


def exists(path: str) -> bool:
    return _fs(path).exists(path) if is_remote(path) else Path(local(path)).exists()


def fingerprint(path: str) -> str:
    """size + modification time (or ETag) of a file: like core.record.file_fingerprint, for URLs too."""
    if not is_remote(path):
        return file_fingerprint(local(path))
    try:
        info = _fs(path).info(path)
    except FileNotFoundError:
        return "missing"
    stamp = info.get("mtime") or info.get("LastModified") or info.get("ETag") or info.get("created") or ""
    return f"size={info.get('size')},mtime={stamp}"


def dir_fingerprint(url: str) -> str:
    """Digest of a remote folder's listing (each file's path, size and modification time or ETag)."""
    fs = _fs(url)
    listing = sorted((name, info.get("size"), str(info.get("mtime") or info.get("LastModified") or info.get("ETag")
                                                   or info.get("created") or ""))
                     for name, info in fs.find(url, detail=True).items())
    return hashlib.blake2b(json.dumps(listing).encode(), digest_size=16).hexdigest()


def fetch(path: str, folder: Path) -> str:
    """A local path for `path`: itself when local, else a copy of the remote file (or folder) inside `folder`."""
    if not is_remote(path):
        return local(path)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(path.partition("://")[2]).name
    _fs(path).get(path, str(target), recursive=True)
    return str(target)


def build_remote(url: str, build: Callable[[Path], Path]) -> str:
    """Run `build(local folder)` for a remote out_dir: the remote completion record (and owner marker) come down
    first, so the build's own "already done?" and "whose is it?" checks see them; a rebuilt folder goes up, its
    record last. A remote folder with files but no owner marker is refused: gte did not write it. (A remote out_dir
    is not locked: the lock file lives on local or shared POSIX file systems only.)"""
    fs = _fs(url)
    with tempfile.TemporaryDirectory(prefix="gte-remote-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        for name in (OWNER_FILE, RECORD_FILE):
            with contextlib.suppress(FileNotFoundError):
                fs.get(f"{url.rstrip('/')}/{name}", str(out / name))
        if not (out / OWNER_FILE).is_file() and fs.exists(url) and fs.ls(url):
            raise UserError(f"out_dir={url}: the folder is not empty and was not written by gte (no {OWNER_FILE} "
                            "marker); nothing was deleted; choose an empty or new out_dir")
        build(out)
        if not (out / "manifest.json").is_file():  # nothing was built: the remote output is complete
            return url
        if fs.exists(url):
            fs.rm(url, recursive=True)
        for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != RECORD_FILE):
            fs.put_file(str(path), f"{url.rstrip('/')}/{path.relative_to(out).as_posix()}")
        fs.put_file(str(out / RECORD_FILE), f"{url.rstrip('/')}/{RECORD_FILE}")
    return url
