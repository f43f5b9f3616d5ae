"""The one kind of failure a user can fix: every command prints it as `gte <cmd>: <where>: <problem>; <fix>` and
exits 2 (train.app.cli is the boundary). Anything else is a bug and keeps its traceback. Ctrl-C is one line and
exit 130 (EXIT_INTERRUPTED), with worker processes kept quiet (ignore_interrupts)."""

from __future__ import annotations

import contextlib
import errno
import signal
from collections.abc import Iterator
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
INTERRUPTED = "interrupted; finished work is kept, re-run the same command to continue"
# OS errors that are the user's to fix (space, permissions), reported in one line that names the path.
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # only a write raises these: the path written is the cause


class UserError(Exception):
    """An expected failure: the message names the file or key, the problem and the fix."""


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an expected failure, None for a bug (which keeps its traceback)."""
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
        where = exc.filename or "(a write whose path was not reported)"
        fix = "free space on that disk" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "fix its permissions"
        return f"{where}: {exc.strerror or exc}; {fix} and re-run (finished work is kept)"
    return None


class MissingExtra(UserError, ImportError):
    """A setting needs an optional package (an extra of pyproject.toml) that is not installed."""


def import_extra(module: str, key: str, extra: str, instead: str, package: str | None = None):
    """The optional `module`, or a one-line MissingExtra: `<key>: <package> is not installed; run `pip install -e
    .[<extra>]` or <instead>` (key: the setting that needs it; instead: the setting that does without it)."""
    import sys

    try:
        __import__(module)  # the import statement's own hook (what tests and import-time shims replace)
    except ImportError as exc:
        # the package itself is absent, or present but broken (a missing dependency, a build for another torch)
        names = (module, module.split(".")[0])
        missing = exc.name in names or str(exc) in [f"No module named '{n}'" for n in names]
        problem = "is not installed" if missing else f"fails to import ({str(exc).splitlines()[0][:150]})"
        raise MissingExtra(_extra_message(key, package or module, problem, extra, instead)) from exc
    return sys.modules[module]


def extra_problem(module: str, key: str, extra: str, instead: str, package: str | None = None) -> str | None:
    """import_extra's message when `module` is not installed, else None; found without importing it, so config
    validation reports it up front (before a pipeline's first phase) and stays fast."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: imports of it are blocked (None in sys.modules)
        found = False
    return None if found else _extra_message(key, package or module, "is not installed", extra, instead)


def _extra_message(key: str, package: str, problem: str, extra: str, instead: str) -> str:
    return f"{key}: {package} {problem}; run `pip install -e .[{extra}]` or {instead}"


@contextlib.contextmanager
def names_path(path: str | Path) -> Iterator[None]:
    """Writes inside name `path` when the disk is full or read-only: writes through a file object, pyarrow and
    shutil raise OSError(ENOSPC) without a filename, which would reach the user as `?`. Errors that already name
    their file keep it; other errnos (a read's) are left alone, so they are never blamed on the wrong path."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno in _WRITE_ERRNOS:
            exc.filename = str(path)
        raise


def ignore_interrupts() -> None:
    """Initializer of worker processes: Ctrl-C reaches the whole process group, and a worker that dies mid-task
    prints its own traceback and can deadlock its pool; the parent alone stops and terminates the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
