"""The package's import graph: its circles and the imports made inside functions.

    python eval/import_graph.py [--label NAME]

Reads every module of `llm_unlearn` (grimp, import-linter's graph library: every import in a
file, at module level, under `if TYPE_CHECKING:` or inside a function, is an arrow) and prints

- circles between modules: the strongly connected components of that graph with more than one
  module (an import inside a function still closes a circle: it runs);
- circles between the package's parts (`llm_unlearn.audit.report` counts as `llm_unlearn.audit`):
  what the layers contract in pyproject.toml forbids;
- each import of a package module made inside a function (ast), marked `breaks a circle` where the
  imported module, or its part, reaches the importing one (hoisted, it would close a circle), else
  `lazy` (kept off a start-up path: the torch-free CLI); and each third-party module imported inside
  a function (`third-party`: optional, heavy backends such as llama_cpp, bitsandbytes, lm_eval).

The counts are saved under NAME (default `current`) in eval/results/import_graph.json, so the
state before and after a change sit side by side.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "llm_unlearn"
RESULTS = ROOT / "eval" / "results" / "import_graph.json"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The components of `graph` (node -> successors) with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    """Whether a path of arrows leads from `start` to `goal`."""
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for succ in graph.get(node, ()):
            if succ not in seen:
                seen.add(succ)
                todo.append(succ)
    return False


def part(module: str) -> str:
    """The package part a module belongs to: `llm_unlearn.audit.report` -> `llm_unlearn.audit`."""
    return ".".join(module.split(".")[:2])


def function_imports(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, function, imported module) for every import statement inside a function of `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def walk(node: ast.AST, function: str | None) -> Iterator[tuple[int, str, str]]:
        for child in ast.iter_child_nodes(node):
            inside = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if function is not None and isinstance(child, ast.Import):
                for alias in child.names:
                    yield child.lineno, function, alias.name
            elif function is not None and isinstance(child, ast.ImportFrom) and child.module:
                for alias in child.names:
                    yield child.lineno, function, f"{child.module}.{alias.name}"
            yield from walk(child, inside)

    yield from walk(tree, None)


def resolve(name: str, modules: set[str]) -> str:
    """The package module `from a.b import c` names: `a.b.c` when that is a module, else `a.b`."""
    return name if name in modules else name.rsplit(".", 1)[0]


def measure() -> dict:
    graph = grimp.build_graph(PACKAGE)
    modules = set(graph.modules)
    arrows = {m: set(graph.find_modules_directly_imported_by(m)) for m in modules}
    parts: dict[str, set[str]] = {}
    for importer, imported in ((a, b) for a in arrows for b in arrows[a]):
        if part(importer) != part(imported):
            parts.setdefault(part(importer), set()).add(part(imported))

    inside: list[dict] = []
    seen: set[tuple[str, int, str]] = set()
    for module in sorted(modules):
        spec = graph.find_children(module)  # a package's file is its __init__.py
        relative = (
            Path(*module.split(".")) / "__init__.py" if spec else Path(*module.split(".")).with_suffix(".py")
        )
        for line, function, name in function_imports(ROOT / relative):
            outside = name.split(".")[0] != PACKAGE
            target = name.split(".")[0] if outside else resolve(name, modules)
            if (module, line, target) in seen:  # `from a import b, c`: one statement
                continue
            seen.add((module, line, target))
            if outside:
                kind = "third-party"
            elif reaches(arrows, target, module) or (
                part(target) != part(module) and reaches(parts, part(target), part(module))
            ):
                kind = "breaks a circle"
            else:
                kind = "lazy"
            inside.append(
                {"module": module, "line": line, "function": function, "imports": target, "kind": kind}
            )
    return {
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "modules": len(modules),
        "module_circles": strongly_connected(arrows),
        "part_circles": strongly_connected(parts),
        "imports_inside_functions": inside,
        "breaking_a_circle": sum(i["kind"] == "breaks a circle" for i in inside),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current", help="the key the counts are saved under")
    args = parser.parse_args()
    result = measure()
    print(f"{result['modules']} modules at {result['commit']}")
    print(f"{len(result['module_circles'])} circles between modules")
    for circle in result["module_circles"]:
        print("  " + " <-> ".join(circle))
    print(f"{len(result['part_circles'])} circles between package parts")
    for circle in result["part_circles"]:
        print("  " + " <-> ".join(circle))
    print(
        f"{len(result['imports_inside_functions'])} imports inside functions, "
        f"{result['breaking_a_circle']} of them breaking a circle"
    )
    for item in result["imports_inside_functions"]:
        print(f"  {item['module']}:{item['line']} {item['function']}() -> {item['imports']} ({item['kind']})")
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    saved[args.label] = result
    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
