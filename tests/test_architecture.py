"""The package's shape, checked: no import cycles (function-level imports included), the layers
import only downwards, MLflow stays on the tracking side, and functions stay short."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "xfer"
PLUGINS = PKG.parent / "hydra_plugins" / "xfer_plugins"  # xfer's Hydra plugins (launcher, sweeper)
#: library modules: data path and models; they never import jobs, tracking or serving
LIBRARY = {"errors", "schema", "data", "transforms", "models", "encode", "train", "freeze", "features", "surgery",
           "heads", "bundle", "plots"}
#: what may import mlflow
TRACKING_SIDE = {"tracking", "locate", "serving", "_pyfunc_model", "registry", "report", "sweep", "run"}
#: what serving a model needs: never the training loop or the jobs
SERVING = {"serving", "_pyfunc_model", "bundle", "predict"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["xfer", *parts])


def imports() -> dict[str, set[str]]:
    """Module -> the xfer modules it imports anywhere in its body."""
    graph = {}
    for path in PKG.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if node.module is None:  # from . import x
                    deps |= {f"{target}.{a.name}" for a in node.names}
                deps.add(target)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d.startswith("xfer") and d != name}
    modules = set(graph)
    return {m: {d for d in deps if d in modules} for m, deps in graph.items()}


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for d in graph[todo.pop()]:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_no_import_cycles():
    graph = imports()
    cycles = sorted(m for m in graph if m in reachable(graph, m) and m != "xfer")
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_layers_import_downwards_only():
    graph = imports()
    for lib in LIBRARY:
        bad = {d for d in reachable(graph, f"xfer.{lib}") if d.startswith("xfer.jobs") or
               d.split(".")[-1] in ("tracking", "serving", "registry", "sweep", "run")}
        assert not bad, f"xfer.{lib} reaches {bad}"
    for mod in SERVING:
        bad = {d for d in reachable(graph, f"xfer.{mod}") if d in ("xfer.train",) or d.startswith("xfer.jobs")}
        assert not bad, f"xfer.{mod} (serving side) reaches {bad}"


def test_mlflow_stays_on_the_tracking_side():
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        if "mlflow" in names:
            assert module_name(path).split(".")[-1] in TRACKING_SIDE, path


@pytest.mark.parametrize("path", sorted([*PKG.rglob("*.py"), *PLUGINS.rglob("*.py")]),
                         ids=lambda p: str(p.relative_to(PKG.parent)))
def test_functions_are_short(path):
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long
