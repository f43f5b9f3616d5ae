"""One writer per output folder: a lock file beside it, so a second gte process refuses instead of mixing its files
with the first one's (a run dir's checkpoints and metrics.jsonl, a prep out_dir's staging).

The lock of `<parent>/<name>` is `<parent>/.<name>.gte-lock` (beside the folder, not in it: finished folders are
replaced by a rename). It is created with O_CREAT|O_EXCL (atomic on local file systems and on NFSv3+, Lustre, GPFS)
and holds JSON: the holder as pid@host and its start time. While held, a thread touches it every HEARTBEAT_S
seconds. A lock is stale, and taken over, when
  - its holder ran on this host and that pid is no longer alive (a kill, a crash, an out-of-memory kill), or
  - its holder runs on another host (multi-node jobs on a shared file system: that host's pids mean nothing here)
    and the file has not been touched for STALE_S seconds (the holder's heartbeat stopped: the node died).
A lock that cannot be read (its holder was killed between creating and writing it) is judged by its age alone.
Holding is re-entrant within a process (prep holds its out_dir, then build_dir takes the same lock again).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from gte_model.core.errors import UserError

HEARTBEAT_S = 30.0  # how often a holder touches its lock file
STALE_S = 600.0  # a lock of another host untouched this long is a dead holder's
HOST = socket.gethostname().replace("/", "_")
_held: dict[Path, int] = {}  # lock file -> how many times this process holds it


def lock_path(folder: str | Path) -> Path:
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.gte-lock"


@contextlib.contextmanager
def hold(folder: str | Path, key: str) -> Iterator[Path]:
    """Hold `folder`'s lock for the block, or raise UserError naming the live holder. `key` names the folder in the
    message (the config key or argument the user set)."""
    path = lock_path(folder)
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    text = _acquire(path, key, Path(folder))
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, text, stop), daemon=True, name="gte-lock-heartbeat")
    beat.start()
    _held[path] = 1
    try:
        yield path
    finally:
        del _held[path]
        stop.set()
        beat.join()
        if _read(path) == text:  # never remove a lock that someone took over (after judging ours stale)
            path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """True while a process of this host has this pid (ours, or another user's we may not signal)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(path: Path, key: str, folder: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    me = json.dumps({"holder": f"{os.getpid()}@{HOST}", "pid": os.getpid(), "host": HOST, "started": time.time()})
    for _ in range(5):  # a stale lock removed, or a holder leaving, between our tries
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            text = _read(path)
            if text is None:
                continue
            info = _parse(text)
            if not _stale(path, info):
                raise UserError(_in_use(key, folder, path, info)) from None
            if _read(path) == text:  # still the stale one: a racer that took it over meanwhile is kept
                path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
            fh.flush()
            os.fsync(fh.fileno())
        return me
    raise UserError(f"{key}={folder}: could not take its lock {path} (other processes keep taking it); "
                    "wait for them to finish and re-run")


def _in_use(key: str, folder: Path, path: Path, info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])) if "started" in info else "?"
    return (f"{key}={folder}: in use by gte process {info.get('holder', '?')} (running since {since}, lock {path}); "
            "wait for it to finish or choose another folder; if that process is gone, delete the lock file")


def _stale(path: Path, info: dict) -> bool:
    if info.get("host") == HOST and isinstance(info.get("pid"), int):
        return not pid_alive(info["pid"]) or (info["pid"] == os.getpid() and path not in _held)
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    return age > STALE_S


def _heartbeat(path: Path, text: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        if _read(path) != text:
            return
        with contextlib.suppress(OSError):
            os.utime(path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _parse(text: str) -> dict:
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}
