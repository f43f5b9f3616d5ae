"""Debian package descriptions: short description -> long description, key = package name.

The English Translation-en index files that `apt-get update -o Acquire::Languages=en` downloads hold deb822 blocks:
`Package:`, `Description-en: <short>` and indented long lines where ` .` is a paragraph break.
"""

from __future__ import annotations

import gzip
import lzma
import subprocess
from collections.abc import Iterator
from pathlib import Path

from data_prep.sources.common import MissingSourceError, record

INSTALL = "apt-get update -o Acquire::Languages=en && apt-get install lz4"
_GLOB = "/var/lib/apt/lists/*i18n_Translation-en*"
_MISSING = ("source 'debian' needs the English package description index (Translation-en), which is missing; "
            f"run `{INSTALL}` (scripts/setup.sh does this when run as root), or drop 'debian' from `sources`")


def translation_files() -> list[Path]:
    """The Translation-en files in apt's standard lists folder, else those `apt-get indextargets` names."""
    found = sorted(Path("/").glob(_GLOB.lstrip("/")))
    if found:
        return found
    try:
        out = subprocess.run(
            ["apt-get", "indextargets", "-o", "Acquire::Languages=en", "--format", "$(FILENAME)",
             "Identifier: Translations"], capture_output=True, text=True, timeout=60, check=False,
        ).stdout
        names = [line.strip() for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        names = []
    return [Path(n) for n in names if Path(n).exists()]


def debian_files() -> list[Path]:
    """The Translation-en files the source reads, or MissingSourceError naming the install command."""
    files = translation_files()
    if not files:
        raise MissingSourceError(_MISSING)
    return files


def _open(path: Path):
    name = path.name
    if name.endswith(".lz4"):
        try:
            import lz4.frame
        except ImportError:
            raise MissingSourceError(f"{path}: reading it needs the Python package lz4, which is not installed; "
                                     "pip install lz4, or drop 'debian' from `sources`") from None

        return lz4.frame.open(path, "rt", encoding="utf-8", errors="replace")
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    if name.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def parse_translation(lines) -> Iterator[tuple[str, str, str]]:
    """deb822 Translation blocks -> (package, short, long); ` .` lines become paragraph breaks."""
    package, short, long_lines = None, None, []
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith(" ") and short is not None:
            long_lines.append("\n" if line.strip() == "." else line.strip())
        elif not line.strip():
            if package and short:
                yield package, short, " ".join(long_lines).replace(" \n ", "\n")
            package, short, long_lines = None, None, []
        elif line.startswith("Package:"):
            package = line.split(":", 1)[1].strip()
        elif line.startswith("Description-en:"):
            short = line.split(":", 1)[1].strip()
            long_lines = []
    if package and short:
        yield package, short, " ".join(long_lines).replace(" \n ", "\n")


def iter_debian(files: list[Path] | None = None) -> Iterator[dict]:
    files = debian_files() if files is None else files
    if not files:
        raise MissingSourceError(_MISSING)
    seen: set[str] = set()
    for path in files:
        with _open(path) as fh:
            for package, short, long in parse_translation(fh):
                # A package listed by several archives (main, updates, security) keeps its first description.
                if package in seen or not long.strip():
                    continue
                seen.add(package)
                yield record("debian", short, long, package)
