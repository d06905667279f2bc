"""The package's shape: no import cycles, a leaf registry, every module importable on its own,
and every registered model keeping the model contract on a tiny input.

Why these are tests: an import cycle or a registry that needs the model modules first does not
fail where it is introduced but later, as an ImportError in whichever module happens to be
imported first; a model that forgets `normalization` used to be papered over with getattr
defaults. Each check below fails on exactly that mistake.
"""

from __future__ import annotations

import ast
import inspect
import multiprocessing
import sys
from pathlib import Path

import pytest
import torch

import fcnseg
from fcnseg.models import build_model, list_models, model_info
from fcnseg.models.protocol import PROTOCOL_ATTRIBUTES, SegmentationModel

PACKAGE_DIR = Path(fcnseg.__file__).parent
PACKAGE = "fcnseg"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _imports_of(module: str, path: Path) -> set[str]:
    """fcnseg modules that `module` imports anywhere in its body (functions included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` names the submodule when there is one.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name in MODULES and name != module)
    return found


GRAPH: dict[str, set[str]] = {name: _imports_of(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
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

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_the_import_graph_has_no_cycle():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    # The check above must be able to fail.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_the_registry_is_a_leaf():
    assert GRAPH["fcnseg.models.registry"] == set()
    # The protocol may raise the project's error types: errors.py is itself a leaf.
    assert GRAPH["fcnseg.models.protocol"] <= {"fcnseg.errors"}
    assert GRAPH["fcnseg.errors"] == set()


def test_lower_layers_do_not_import_higher_ones():
    """models/ and data/ know nothing of engine, inference, export, serving, reports or the CLI."""
    higher = (
        "fcnseg.engine",
        "fcnseg.inference",
        "fcnseg.export",
        "fcnseg.serve",
        "fcnseg.report",
        "fcnseg.cli",
    )
    offenders = {
        module: sorted(t for t in targets if t.startswith(higher))
        for module, targets in GRAPH.items()
        if module.startswith(("fcnseg.models", "fcnseg.data", "fcnseg.metrics", "fcnseg.losses"))
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def _import_in_child(module: str, queue) -> None:
    try:
        __import__(module)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put(f"{module}: {type(exc).__name__}: {exc}")
    else:
        queue.put("")


def test_every_module_imports_on_its_own():
    """Each module imported first, in a process that has imported nothing of fcnseg.

    The children are forked from a process holding only third-party modules (torch and friends
    are imported once here, which keeps 60 imports to seconds); every fcnseg module is removed
    from sys.modules in the child before its one import.
    """
    context = multiprocessing.get_context("fork")
    errors = []
    for module in MODULES:
        queue = context.Queue()
        process = context.Process(target=_fresh_import, args=(module, queue))
        process.start()
        process.join(120)
        errors.append(queue.get(timeout=5) if process.exitcode == 0 else f"{module}: died")
    assert [error for error in errors if error] == []


def _fresh_import(module: str, queue) -> None:
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith("fcnseg.")]:
        del sys.modules[name]
    _import_in_child(module, queue)


# --- Every registered model keeps the contract ----------------------------------------------

#: Smallest input side every registered model accepts (the unpadded paper nets need none; the
#: skip heads and GoogLeNet need a few stride-32 cells).
SMOKE_SIZE = (64, 96)


def _smoke_options(name: str) -> dict:
    builder = model_info(name).builder
    parameters = inspect.signature(builder).parameters.values()
    takes_pretrained = any(
        p.name == "pretrained" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )
    return {"pretrained": False} if takes_pretrained else {}


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_runs_and_keeps_the_contract(name):
    torch.manual_seed(0)
    model = build_model(name, 3, **_smoke_options(name)).eval()
    assert isinstance(model, SegmentationModel)
    for attribute in PROTOCOL_ATTRIBUTES:
        assert hasattr(model, attribute), attribute
    assert model.num_classes == 3 and model.normalization in ("imagenet", "caffe_bgr", "tf_lite")
    x = torch.randn(1, model.in_channels, *SMOKE_SIZE)
    with torch.no_grad():
        out = model(x)
    if model.head_classes:
        assert isinstance(out, dict) and set(out) == set(model.head_classes)
        for head, classes in model.head_classes.items():
            assert out[head].shape == (1, classes, *SMOKE_SIZE)
    else:
        assert out.shape == (1, 3, *SMOKE_SIZE)
        assert torch.isfinite(out).all()
    del model


def test_a_model_without_the_contract_is_refused():
    from fcnseg.models.factory import check_model_contract

    with pytest.raises(TypeError, match="normalization"):
        check_model_contract(torch.nn.Conv2d(3, 3, 1), "bare-conv")
