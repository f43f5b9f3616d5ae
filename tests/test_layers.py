"""The layers stay visible: every import of the product packages (function-local ones included) points down or
sideways as allowed, and no group of modules imports itself in a circle.

  0 gte_model.core   1 gte_model   2 data_prep | train | train.eval   3 train.app
Within layer 2: data_prep imports nothing of train; train (training) imports neither data_prep nor train.eval;
train.eval imports only layers 0-1.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gte_model", "data_prep", "train")


def layer(module: str) -> tuple[int, str]:
    """(rank, group) of a project module."""
    if module.startswith("gte_model.core"):
        return 0, "core"
    if module.startswith("gte_model"):
        return 1, "model"
    if module.startswith("data_prep"):
        return 2, "data_prep"
    if module.startswith("train.app") or module == "train.__main__":
        return 3, "app"
    if module.startswith("train.eval"):
        return 2, "eval"
    return 2, "train"


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in the file (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import a.b.c` names a.b.c, or a symbol of a.b
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {m: imports_of(p, modules) - {m} for m, p in modules.items()}


def test_no_module_imports_a_higher_layer_or_a_forbidden_sibling():
    bad = []
    for module, targets in graph().items():
        rank, group = layer(module)
        for target in targets:
            t_rank, t_group = layer(target)
            if t_rank > rank or (t_rank == rank == 2 and t_group != group):  # layer 2's groups import no sibling
                bad.append(f"{module} ({group}) imports {target} ({t_group})")
            if group == "model" and target == "gte_model":
                bad.append(f"{module} imports the gte_model package itself (its __init__): import the module")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles():
    g = graph()
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_walker_sees_function_local_imports(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    from gte_model.core import text\n")
    modules = {"gte_model.core.text": tmp_path / "x.py", "gte_model.core": tmp_path / "y.py"}
    assert imports_of(tmp_path / "m.py", modules) == {"gte_model.core", "gte_model.core.text"}
