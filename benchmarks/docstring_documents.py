"""A second real corpus for the documents-only recipe (docs/domain.md): the docstrings of installed Python packages,
one document per documented function or class (title: its name inside the module, `_` as spaces; id: file and
qualified name), read with `ast` from
the source files (nothing is imported or run).

  .venv/bin/python benchmarks/docstring_documents.py /tmp/docstrings.jsonl networkx sklearn   # -> one jsonl
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

MIN_WORDS = 30  # shorter docstrings are one-liners: too little text to make a query and a passage from


def documents(package: str) -> list[dict]:
    root = Path(importlib.util.find_spec(package).origin).parent
    out = []
    for path in sorted(root.rglob("*.py")):
        if "tests" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        for node, name in _walk(tree, ""):
            text = ast.get_docstring(node) or ""
            if len(text.split()) >= MIN_WORDS:
                out.append({"id": f"{path.relative_to(root.parent).as_posix()}:{module}{name}",
                            "title": name.lstrip(".").replace("_", " "), "text": text})
    return out


def _walk(tree: ast.AST, prefix: str):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            name = f"{prefix}.{node.name}"
            yield node, name
            if isinstance(node, ast.ClassDef):
                yield from _walk(node, name)


def main(out: str, *packages: str) -> None:
    rows = [doc for package in packages for doc in documents(package)]
    with open(out, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"{len(rows)} documents from {', '.join(packages)} -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
