"""The serving modules import each other in one direction only: no cycle, not even through an
import inside a function (inference.py runs TensorRT engines with the helpers of tensorrt.py,
and tensorrt.py imports nothing of `trainers`)."""
import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVING = os.path.join(REPO, "trainers", "serving")
PACKAGE = "trainers.serving"


def _serving_imports(path: str) -> set[str]:
    """The `trainers.serving` modules a file imports, at module level or inside functions."""
    modules = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "."):
            modules.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[2] for alias in node.names
                        if alias.name.startswith(PACKAGE + ".")}
    return modules


def _import_graph() -> dict[str, set[str]]:
    names = [f[:-3] for f in os.listdir(SERVING) if f.endswith(".py") and f != "__init__.py"]
    return {name: _serving_imports(os.path.join(SERVING, name + ".py")) - {name}
            for name in names}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph as a path `[a, b, ..., a]`, or None."""
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":  # on the current path: back to it is a cycle
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"inference": {"tensorrt"}, "tensorrt": {"inference"}}) == [
        "inference", "tensorrt", "inference"]
    assert _cycle({"export": {"inference", "tensorrt"}, "inference": {"tensorrt"},
                   "tensorrt": set()}) is None


def test_serving_modules_import_each_other_without_a_cycle():
    graph = _import_graph()
    assert graph["tensorrt"] == set(), graph["tensorrt"]
    assert "tensorrt" in graph["inference"]  # EngineRunner uses its checks
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


@pytest.mark.parametrize("order", [("inference", "tensorrt"), ("tensorrt", "inference")])
def test_each_module_imports_alone_in_a_fresh_interpreter(order):
    code = "; ".join(f"import {PACKAGE}.{name}" for name in order)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
