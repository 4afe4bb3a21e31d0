"""Import structure: one direction between the packages, no circle in them, every module importable alone.

Rule: `diffusers_vlavit` may import `transformers_vlavit`; `transformers_vlavit` imports `diffusers_vlavit`
only inside the functions that need it (the text-to-video task, the converter's detokenizer part, the CLI).
The static checks read the module-level imports (also those under a module-level `if` / `try`, not those
inside functions or classes) of every file under `src/`; the dynamic check imports each module alone.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("transformers_vlavit", "diffusers_vlavit")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path for package in PACKAGES for path in sorted((SOURCE / package).rglob("*.py"))
    }


MODULES = _modules()


def _module_level_imports(node: ast.AST):
    """Import statements that run when the module is imported (not those in function or class bodies)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        else:
            yield from _module_level_imports(child)


def _imported_modules(name: str, path: Path) -> set[str]:
    """Project modules `name` imports at module level, with the packages that importing them runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for statement in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(statement, ast.Import):
            targets.update(alias.name for alias in statement.names)
            continue
        if statement.level:
            base = package.split(".")[: len(package.split(".")) - statement.level + 1]
            module = ".".join(base + ([statement.module] if statement.module else []))
        else:
            module = statement.module
        for alias in statement.names:  # `from package import submodule` imports the submodule
            targets.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module)
    edges = set()
    for target in targets:
        if target.split(".")[0] not in PACKAGES:
            continue
        parts = target.split(".")
        # importing a.b.c runs a/__init__ and a/b/__init__ too, unless the importer is already inside them
        for depth in range(1, len(parts) + 1):
            ancestor = ".".join(parts[:depth])
            if ancestor != target and (name == ancestor or name.startswith(ancestor + ".")):
                continue
            edges.add(ancestor)
    edges.discard(name)
    return edges


def _import_graph() -> dict[str, set[str]]:
    return {name: _imported_modules(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_scan_sees_the_packages():
    graph = _import_graph()
    some = ("transformers_vlavit.modeling_video_lavit", "transformers_vlavit.layout", "diffusers_vlavit.tiny")
    assert set(some) <= set(graph)
    # the scan resolves relative imports, package inits and absolute imports of the other package
    modeling = graph["transformers_vlavit.modeling_video_lavit"]
    assert "transformers_vlavit.configuration_video_lavit" in modeling
    assert "transformers_vlavit" in graph["diffusers_vlavit.tiny"]


def test_transformers_vlavit_does_not_import_diffusers_vlavit_at_module_level():
    graph = _import_graph()
    offenders = {
        name: sorted(target for target in targets if target.startswith("diffusers_vlavit"))
        for name, targets in graph.items()
        if name.startswith("transformers_vlavit")
    }
    assert {name: targets for name, targets in offenders.items() if targets} == {}


def test_no_import_circle_between_or_inside_the_packages():
    assert _cycles(_import_graph()) == []


_IMPORT_EACH_ALONE = """
import importlib, json, sys, traceback
names, packages = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
failures, loads_transformers_side = {}, []
for name in names:
    for loaded in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failures[name] = traceback.format_exc(limit=-3)
    diffusers_side = name.startswith(("diffusers_vlavit.models", "diffusers_vlavit.pipelines"))
    if diffusers_side and "transformers_vlavit" in sys.modules:
        loads_transformers_side.append(name)
print(json.dumps({"failures": failures, "loads_transformers_side": loads_transformers_side}))
"""


def test_every_module_imports_alone():
    """Each module imported first, with no project module loaded before it (import-order cycles fail here),
    and the diffusers models and pipelines without `transformers_vlavit` (no registration side effects)."""
    names = sorted(MODULES)
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_ALONE, json.dumps(names), json.dumps(PACKAGES)],
        capture_output=True,
        text=True,
        timeout=590,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] == {}
    assert report["loads_transformers_side"] == []


# modules diffusers loads as custom code components (a pipeline folder's `processor/`, `visual_tokenizer/`,
# `motion_tokenizer/`) or pipelines: diffusers copies only a module's direct relative imports, so those must
# import no sibling themselves
DIFFUSERS_CUSTOM_CODE = (
    "transformers_vlavit.processing_video_lavit",
    "transformers_vlavit.modeling_visual_tokenizer",
    "transformers_vlavit.modeling_motion_tokenizer",
    "diffusers_vlavit.pipelines.pipeline_keyframe",
    "diffusers_vlavit.pipelines.pipeline_video",
    "diffusers_vlavit.pipelines.pipeline_video_lavit",
    "diffusers_vlavit.models.keyframe_decoder",
    "diffusers_vlavit.models.motion_condition_encoder",
    "diffusers_vlavit.models.unet_spatio_temporal_motion",
)


def test_diffusers_custom_code_imports_only_leaf_siblings():
    graph = _import_graph()
    deep = {}
    for name in DIFFUSERS_CUSTOM_CODE:
        package = name.rpartition(".")[0]
        siblings = [target for target in graph[name] if target.rpartition(".")[0] == package]
        nested = {sibling: sorted(graph[sibling] - {package}) for sibling in siblings}
        deep.update({f"{name} -> {sibling}": targets for sibling, targets in nested.items() if targets})
    assert deep == {}
