"""Helpers shared by the built-in sources."""

from __future__ import annotations

from pathlib import Path

from gte_model.core.errors import UserError


class MissingSourceError(UserError, FileNotFoundError):
    """A built-in source's files are not installed; the message names the install command."""


def require(path: Path, source: str, install: str) -> Path:
    if not path.exists():
        raise MissingSourceError(
            f"source {source!r} needs {path}, which is missing; install it with `{install}` "
            "(scripts/setup.sh does this when run as root), or drop the source from `sources`"
        )
    return path


def record(source: str, query: str, positive: str, key: str) -> dict:
    return {"query": query, "positive": positive, "negatives": [], "source": source, "key": key}
