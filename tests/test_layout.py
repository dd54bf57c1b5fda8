"""The house rules of issue 12: no module over 500 lines, and no import cycle between the
package's modules (module-level imports; a function-level import is a deliberate lazy
edge, ``if TYPE_CHECKING`` blocks are ignored, and so is a module importing its own parent
package, as click command modules register on the group their package defines)."""

from __future__ import annotations

import ast
from pathlib import Path

import cvretrieval

PKG = Path(cvretrieval.__file__).parent
LIMIT = 500


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _top_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def test_no_module_is_over_500_lines():
    long = {name: n for name, p in _modules().items()
            if (n := len(p.read_text().splitlines())) > LIMIT}
    assert not long, f"modules over {LIMIT} lines: {long}"


def test_no_import_cycle_between_modules():
    mods = _modules()
    graph = {m: _top_level_imports(m, p, set(mods)) for m, p in mods.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt, [*stack, nxt])):
                return cycle
        state[node] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m, [m])):
            raise AssertionError(" -> ".join(cycle))
