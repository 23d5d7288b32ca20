"""The layout's promises, checked: no import cycle among the project's modules (any import, anywhere in a module,
inside functions too), validating specs in the app's process never loads torch, no function over 80 lines.

The layer order itself is the import contract in ``pyproject.toml`` (``lint-imports``, run by ``make test``)."""

from __future__ import annotations

import ast
import subprocess
import sys

import grimp

from engine.paths import REPO_ROOT

PACKAGES = ("engine", "store", "ui", "app_pages")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative), i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_cycles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": set()}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"x": {"y"}, "y": set()}) == []


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES)  # every import statement, module level or inside a function
    modules = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    assert len(modules) > 120  # the whole project was read
    assert _cycles(edges) == []


def test_validating_specs_never_loads_torch():
    """Every preset, both demo specs on both built-in models, and a spec as the Jobs form builds it (every method,
    every analysis, counterfactual methods, method parameters) are built and validated in a fresh interpreter:
    torch, transformers and peft stay out of ``sys.modules`` (the Home demo button and the Jobs form's submit run
    this in the app's process)."""
    code = """
import sys
from engine.catalog.analyses import ANALYSES
from engine.catalog.methods import METHOD_NAMES
from engine.spec.load import spec_from_dict
from engine.spec.presets import DEMO_TASKS, PRESETS, demo_spec
from ui.spec_form import changes, preset_values
for name in PRESETS:
    spec_from_dict({"preset": name})
for model in ("tiny", "smollm2-135m"):
    for task in DEMO_TASKS:
        demo_spec(model, task)
values = preset_values("quick")
values["scoring.methods"] = list(METHOD_NAMES)
values["analysis.stages"] = list(ANALYSES)
values["analysis.cf_methods"] = ["datainf", "ekfac"]
form = {"preset": "quick", **changes(values, "quick"), "name": "from-the-form"}
form["scoring"]["params"] = {"lissa": {"max_iter": 50}, "gradsim_proj": {"proj_dim": 8}}
spec_from_dict(form)
print(sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_function_longer_than_80_lines():
    """Functions stay short enough to read at once (docstrings included), in the packages and the pages."""
    long = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 80:
                        long.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def _env_reads(source: str) -> list[tuple[int, str]]:
    """``(line, variable)`` of every read of an environment variable in ``source``: ``os.environ.get(k)``,
    ``os.environ[k]``, ``os.getenv(k)``, with ``k`` a string or a name; a name is resolved through the module's own
    constants, and one imported from ``engine.paths`` counts as an ``INFLUENCE_*`` variable."""
    tree = ast.parse(source)
    consts, from_paths = {}, set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            consts.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
        if isinstance(node, ast.ImportFrom) and node.module == "engine.paths":
            from_paths.update(a.asname or a.name for a in node.names)

    def name_of(key: ast.AST) -> str:
        if isinstance(key, ast.Constant):
            return str(key.value)
        if isinstance(key, ast.Name):
            return "INFLUENCE_(from engine.paths)" if key.id in from_paths else consts.get(key.id, key.id)
        return "?"

    out = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            target = ast.unparse(node.func)
            if target in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and ast.unparse(node.value) in (
                "os.environ", "environ"):
            key = node.slice
        if key is not None:
            out.append((node.lineno, name_of(key)))
    return out


def test_the_env_read_finder_sees_reads_through_constants():
    code = ('import os\nfrom engine.paths import JOBS_ENV\nRUNS = "INFLUENCE_RUNS"\n'
            'a = os.environ.get(RUNS)\nb = os.environ[JOBS_ENV]\nc = os.getenv("INFLUENCE_X")\nd = os.environ.get("PORT")\n')
    assert _env_reads(code) == [(4, "INFLUENCE_RUNS"), (5, "INFLUENCE_(from engine.paths)"), (6, "INFLUENCE_X"),
                                (7, "PORT")]


def test_only_engine_paths_reads_the_influence_settings():
    """Every ``INFLUENCE_*`` variable is read in ``engine/paths.py`` alone (its names and defaults are a contract);
    the other modules ask ``engine.paths``."""
    found = [f"{path.relative_to(REPO_ROOT)}:{line} {name}" for package in (*PACKAGES, "scripts")
             for path in sorted((REPO_ROOT / package).rglob("*.py")) if path != REPO_ROOT / "engine" / "paths.py"
             for line, name in _env_reads(path.read_text(encoding="utf-8")) if name.startswith("INFLUENCE_")]
    assert found == []
