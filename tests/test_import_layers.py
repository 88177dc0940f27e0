"""Imports point down: the layers of src/pinchpoint, bottom to top, and a scan that fails on
any import of a layer above (or beside) a module's own, and on any import cycle.

``LAYERS`` below is the one definition of the layering. A module may import its own folder and
the folders of lower layers; folders that share a layer are independent of each other. Every
import counts wherever it is written: at the top of a module, inside a function (a lazy import
of a module below is fine; one that points up, or closes a cycle, is what this test refuses),
under ``if TYPE_CHECKING``, and a module named by a string in the importlib form
(``"pinchpoint.x.y:attr"``, what registries resolve at run time).

Anyone can print the offending edges:

    python tests/test_import_layers.py
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "pinchpoint"

# Bottom to top. "pinchpoint" is the package's own __init__ (its version).
LAYERS: list[tuple[str, ...]] = [
    ("pinchpoint", "errors", "metric_names"),  # leaves: the version, errors, metric vocabulary
    ("config",),      # run-level schemas, resolvers, checks of single fields and common groups
    ("storage",),     # tiers, emulation, atomic I/O, checkpoints (files and S3)
    ("data", "telemetry"),   # dataset readers/writers; phase timers, timeline, sampler, MLPerf log
    ("parallel",),    # ranks, process groups, DP/FSDP/TP/PP/EP, the collective profile
    ("plan",),        # the planner's arithmetic
    ("workloads",),   # the models, each behind the Workload protocol, and their registry
    ("cluster",),     # Slurm (requests, accounting, pre-flight), the fabric between nodes
    ("tracking",),    # MLflow: a run's record, sweep points, the store
    ("analysis",),    # reports from MLflow (tables, plots, crossovers); no torch
    ("runner",),      # validates a run and wires everything into one session per rank
    ("sweepers",),    # Hydra sweepers, the Slurm launcher, the sweep's MLflow callback
    ("cli",),         # the ``pinchpoint`` command
]

_DOTTED = re.compile(r"^pinchpoint(\.\w+)+(:\w+)?$")


@dataclass(frozen=True)
class Edge:
    source: str        # importing module
    target: str        # imported module
    line: int
    how: str           # "top", "in function", "by name"

    def __str__(self) -> str:
        where = "" if self.how == "top" else f" ({self.how})"
        return (f"{_short(self.source)}:{self.line} -> {_short(self.target)}{where}   "
                f"[{folder(self.source)} L{layer(self.source)} -> "
                f"{folder(self.target)} L{layer(self.target)}]")


def _short(module: str) -> str:
    return module[len(ROOT) + 1:] if module.startswith(ROOT + ".") else module


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def folder(module: str) -> str:
    """The folder (or top-level module) a module belongs to: what LAYERS orders."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer(module: str) -> int:
    name = folder(module)
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise KeyError(f"{name} ({module}) is in no layer: add it to LAYERS in {__file__}")


def _resolve(name: str, known: dict[str, Path]) -> str:
    """The longest known module that ``name`` names (``a.b.attr`` -> ``a.b``)."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _function_imports(tree: ast.AST) -> set[int]:
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(n) for n in ast.walk(node)
                          if isinstance(n, (ast.Import, ast.ImportFrom)))
    return inside


def edges() -> list[Edge]:
    """Every import of one pinchpoint module by another, wherever it is written."""
    known = modules()
    out = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        inside = _function_imports(tree)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            how = "in function" if id(node) in inside else "top"
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[:len(up) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                # ``from a import b``: the submodule a.b when there is one, else a itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and _DOTTED.match(node.value):
                # "pkg.module:attr" or "pkg.module.attr" (Hydra's get_method); not a tag or a
                # logger name such as "pinchpoint.run_key" (no module of that name)
                name = node.value.split(":")[0]
                found = _resolve(name, known)
                rest = name[len(found) + 1:]
                if found != ROOT and "." not in rest:
                    targets, how = [found], "by name"
            for target in targets:
                if target == ROOT or target.startswith(ROOT + "."):
                    target = _resolve(target, known)
                    if target != module:
                        out.append(Edge(module, target, getattr(node, "lineno", 0), how))
    return sorted(set(out), key=lambda e: (e.source, e.line, e.target))


def upward(all_edges: list[Edge]) -> list[Edge]:
    """Edges into another folder that is not in a lower layer."""
    return [e for e in all_edges if folder(e.source) != folder(e.target)
            and layer(e.target) >= layer(e.source)]


def cycles(all_edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), each a cycle of imports."""
    graph: dict[str, set[str]] = {}
    for e in all_edges:
        graph.setdefault(e.source, set()).add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _cycle_edges(group: list[str], all_edges: list[Edge]) -> list[Edge]:
    members = set(group)
    return [e for e in all_edges if e.source in members and e.target in members]


# --- the tests -----------------------------------------------------------------------------------
def test_every_folder_has_a_layer():
    for module in modules():
        layer(module)


def test_no_upward_imports():
    bad = upward(edges())
    assert not bad, "imports of a layer above (or beside) the importer's own:\n" + \
        "\n".join(map(str, bad))


def test_no_import_cycles():
    all_edges = edges()
    found = cycles(all_edges)
    assert not found, "import cycles:\n" + "\n\n".join(
        "\n".join(map(str, _cycle_edges(group, all_edges))) for group in found)


def test_the_readme_lists_the_layers_in_this_order():
    """README's Layout shows LAYERS (this file stays the one definition)."""
    text = (SRC.parent / "README.md").read_text()
    block = text[text.index("src/pinchpoint/ "):text.index("\ntests/ ")]
    shown = [w.rstrip("/").removesuffix(".py") for w in block.split()
             if w.endswith(("/", ".py")) and w != "src/pinchpoint/"]
    assert shown == [name for names in LAYERS for name in names if name != ROOT]


def test_the_scan_sees_lazy_and_named_imports(tmp_path, monkeypatch):
    """The scan itself: a lazy import inside a function and an importlib-style string count."""
    pkg = tmp_path / ROOT
    (pkg / "errors.py").parent.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from pinchpoint.cli import main\n")
    (pkg / "config").mkdir()
    (pkg / "config" / "__init__.py").write_text('TARGET = "pinchpoint.cli:main"\n'
                                                'TAG = "pinchpoint.kind"\n')
    (pkg / "storage.py").write_text('VALIDATOR = "pinchpoint.cli.main"\n')
    (pkg / "cli.py").write_text("from pinchpoint import errors\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    found = {(e.source, e.target, e.how) for e in upward(edges())}
    assert found == {("pinchpoint.errors", "pinchpoint.cli", "in function"),
                     ("pinchpoint.config", "pinchpoint.cli", "by name"),
                     ("pinchpoint.storage", "pinchpoint.cli", "by name")}
    assert cycles(edges()) == [["pinchpoint.cli", "pinchpoint.errors"]]


def main() -> int:
    all_edges = edges()
    print("layers, bottom to top:")
    for i, names in enumerate(LAYERS):
        print(f"  L{i:<2} {', '.join(names)}")
    bad = upward(all_edges)
    found = cycles(all_edges)
    print(f"\nupward edges ({len(bad)}):")
    for e in bad:
        print(f"  {e}")
    print(f"\nimport cycles ({len(found)}):")
    for group in found:
        print("  " + " <-> ".join(_short(m) for m in group))
        for e in _cycle_edges(group, all_edges):
            print(f"      {e}")
    return 1 if bad or found else 0


if __name__ == "__main__":
    sys.exit(main())
