"""The one kind of failure a user can fix: every command prints it as `gte <cmd>: <where>: <problem>; <fix>` and
exits 2 (train.app.cli is the boundary). Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno

EXIT_USER_ERROR = 2
# OS errors that are the user's to fix (space, permissions), reported in one line that names the path.
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


class UserError(Exception):
    """An expected failure: the message names the file or key, the problem and the fix."""


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an expected failure, None for a bug (which keeps its traceback)."""
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
        where = exc.filename or "?"
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
        raise MissingExtra(f"{key}: {package or module} {problem}; run `pip install -e .[{extra}]` or "
                           f"{instead}") from exc
    return sys.modules[module]
