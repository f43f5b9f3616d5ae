"""What `gte eval` reports as a user error: a task, benchmark file or package the user can fix. Each message is one
line, `<file or option>: <problem>; <fix>`; the `gte` boundary prints it (gte_model.core.errors)."""

from __future__ import annotations

from gte_model.core.errors import UserError


class EvalError(UserError, ValueError):
    """A task or benchmark input that cannot be evaluated (also a ValueError, as these were before)."""


class EvalDataMissing(EvalError, FileNotFoundError):
    """A benchmark file, folder or data package that is not there (also a FileNotFoundError)."""
