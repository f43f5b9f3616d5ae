"""The lines of an evaluation file (BEIR jsonl/tsv, STS-B csv) as text, or an EvalError naming the file and line.

Files are read as bytes and decoded line by line, so a line that is not UTF-8 is reported with its line and column
instead of a UnicodeDecodeError from deep inside a reader; a file that cannot be opened is reported with its reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from train.eval.errors import EvalError

_JSON_TYPES = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object", type(None): "null"}


def read_lines(path: Path, fix: str) -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending) per line; a leading byte-order mark is dropped. fix: what the
    user should do with a file that cannot be read as UTF-8 text (it ends the message)."""
    try:
        fh = open(path, "rb")  # opened apart from the `with`, so that only open errors are caught here
    except OSError as exc:
        raise EvalError(f"{path}: cannot be read ({exc.strerror or exc}); check the path and its permissions"
                        ) from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise EvalError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                f"{exc.start + 1}); {fix}") from None
            yield lineno, text.rstrip("\r\n")


def json_type(value) -> str:
    """The JSON name of a parsed value's type (a number, an array, null ...) for messages."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def lone_surrogate(text: str) -> int | None:
    """The 1-based position of a lone surrogate (a JSON escape such as \\ud800 that is no character), or None.

    Such a string cannot be encoded as UTF-8, so a tokenizer would fail on it far from the file that holds it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start + 1
    return None
