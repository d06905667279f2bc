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
from collections.abc import Iterable
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


def _from_base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` reads from (relative levels resolved)."""
    base = node.module or ""
    if not node.level:
        return base
    anchor = (module if is_package else module.rpartition(".")[0]).split(".")
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, base] if base else anchor)


def _imports_of(module: str, path: Path) -> set[str]:
    """fcnseg modules that `module` imports anywhere in its body (functions included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, path.name == "__init__.py", node)
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


# --- The layer table ------------------------------------------------------------------------

#: docs/architecture.md's "Layers" table as data, top row first. Each name is a package (covering
#: every module in it, so a new module inherits its package's row) or a module; a module's row is
#: that of the longest name covering it. The bare package name covers only `fcnseg/__init__.py`.
#: errors.py is the leaf under the leaves: any of them may raise the project's error types.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fcnseg", "fcnseg.cli"),
    ("fcnseg.api",),
    ("fcnseg.serve", "fcnseg.report"),
    ("fcnseg.engine",),
    ("fcnseg.inference",),
    ("fcnseg.export",),
    ("fcnseg.exported",),
    ("fcnseg.models", "fcnseg.data"),
    ("fcnseg.config", "fcnseg.metrics", "fcnseg.losses"),
    (
        "fcnseg.constants",
        "fcnseg.io_utils",
        "fcnseg.paths",
        "fcnseg.choices",
        "fcnseg.version",
        "fcnseg.models.registry",
        "fcnseg.models.protocol",
    ),
    ("fcnseg.errors",),
)

#: (importer, imported) pairs allowed to break the table: none (issue 21 emptied it). An entry
#: needs a reason beside it and a plan to remove it.
KNOWN_LAYER_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()

#: (importer, "module.name") private names allowed across packages: none.
KNOWN_PRIVATE_IMPORTS: frozenset[tuple[str, str]] = frozenset()

#: Modules over MAX_MODULE_LINES and "module.function" over MAX_FUNCTION_LINES allowed without a
#: `# size:` reason: none.
KNOWN_OVERSIZE: frozenset[str] = frozenset()

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
SIZE_REASON = "# size:"


def _layer_entry(module: str) -> tuple[int, str] | None:
    """(row, table name) of `module`: rows count up from the leaves (0); None if not covered."""
    best: tuple[int, str] | None = None
    for depth, row in enumerate(LAYERS):
        for name in row:
            covers = module == name or (name != PACKAGE and module.startswith(name + "."))
            if covers and (best is None or len(name) > len(best[1])):
                best = (len(LAYERS) - 1 - depth, name)
    return best


def layer_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Imports that climb or cross the table: a module may import its own table name's modules
    (its package) and any module of a lower row, nothing else (not even a sibling in its row)."""
    found = set()
    for module, targets in graph.items():
        here = _layer_entry(module)
        for target in targets:
            there = _layer_entry(target)
            if here is None or there is None:
                found.add((module, target))
            elif there[1] != here[1] and there[0] >= here[0]:
                found.add((module, target))
    return found


def test_every_module_has_a_row_in_the_layer_table():
    assert [module for module in MODULES if _layer_entry(module) is None] == []


def test_every_module_imports_only_its_package_and_lower_rows():
    assert layer_violations(GRAPH) - KNOWN_LAYER_VIOLATIONS == set()


def test_the_known_layer_violations_are_still_violations():
    # An entry that no longer breaks the table must leave the list, so the list only shrinks.
    assert KNOWN_LAYER_VIOLATIONS <= layer_violations(GRAPH)


def test_the_layer_check_flags_a_climbing_and_a_sideways_import():
    graph = {
        "fcnseg.models.factory": {"fcnseg.engine.setup", "fcnseg.models.registry"},
        "fcnseg.data.io": {"fcnseg.models.factory", "fcnseg.errors"},
        "fcnseg.models.registry": {"fcnseg.models.factory"},
        "fcnseg.engine.setup": {"fcnseg.engine.checkpoint", "fcnseg.models", "fcnseg.config"},
        "fcnseg.cli.train": {"fcnseg.cli", "fcnseg.engine.train"},
        "fcnseg.newthing": set(),
    }
    assert layer_violations(graph) == {
        ("fcnseg.models.factory", "fcnseg.engine.setup"),
        ("fcnseg.data.io", "fcnseg.models.factory"),
        ("fcnseg.models.registry", "fcnseg.models.factory"),
    }
    assert _layer_entry("fcnseg.newthing") is None  # a new top-level module needs a row


# --- Private names stay in their package ------------------------------------------------------


def _package_of(module: str) -> str:
    """`fcnseg.<x>`: the package (or top-level module) a module belongs to."""
    return ".".join(module.split(".")[:2])


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(
    module: str, source: str, modules: Iterable[str], is_package: bool = False
) -> set[str]:
    """`pkg.mod._name` for each private name of another package that `source` uses: imported
    (`from fcnseg.x.y import _name`, or a private module) or read as `alias._name` off a module
    it imported (`import fcnseg.x.y as m` / `from fcnseg.x import y`)."""
    known = set(modules)
    home = _package_of(module)
    tree = ast.parse(source)
    found: set[str] = set()
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _from_base(module, is_package, node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:
                    aliases[alias.asname or alias.name] = full
                if base.startswith(PACKAGE) and _package_of(full) != home:
                    if any(_is_private(part) for part in full.split(".")[1:]):
                        found.add(full)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in known:
                    aliases[alias.asname] = alias.name
                if alias.name in known and _package_of(alias.name) != home:
                    if any(_is_private(part) for part in alias.name.split(".")[1:]):
                        found.add(alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            target = _dotted(node.value, aliases)
            if target is not None and target in known and _package_of(target) != home:
                found.add(f"{target}.{node.attr}")
    return found


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The module an expression such as `m` or `fcnseg.engine.evaluate` names, if any."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id if node.id == PACKAGE else None)
    if isinstance(node, ast.Attribute):
        parent = _dotted(node.value, aliases)
        return f"{parent}.{node.attr}" if parent is not None else None
    return None


def _all_private_imports() -> set[tuple[str, str]]:
    return {
        (module, name)
        for module, path in MODULES.items()
        for name in private_imports(
            module, path.read_text(), MODULES, is_package=path.name == "__init__.py"
        )
    }


def test_no_module_uses_another_packages_private_names():
    assert _all_private_imports() - KNOWN_PRIVATE_IMPORTS == set()


def test_the_known_private_imports_are_still_there():
    assert KNOWN_PRIVATE_IMPORTS <= _all_private_imports()


def test_the_private_name_check_flags_imports_and_attribute_reads():
    modules = {"fcnseg.engine.evaluate", "fcnseg.engine", "fcnseg.data.io", "fcnseg.serve.pool"}
    source = (
        "from fcnseg.engine.evaluate import _primary, predict\n"
        "import fcnseg.data.io as io\n"
        "from fcnseg.engine import evaluate\n"
        "def f():\n"
        "    return io._to_rgb(evaluate._cache, fcnseg.data.io._hidden, evaluate.__name__)\n"
    )
    assert private_imports("fcnseg.serve.pool", source, modules) == {
        "fcnseg.engine.evaluate._primary",
        "fcnseg.data.io._to_rgb",
        "fcnseg.engine.evaluate._cache",
        "fcnseg.data.io._hidden",
    }
    relative = "from ..engine.evaluate import _primary\nfrom .io import _to_rgb\n"
    assert private_imports("fcnseg.data.check", relative, modules) == {
        "fcnseg.engine.evaluate._primary"
    }
    # Inside its own package a private name is the package's business.
    assert private_imports("fcnseg.engine.predict", source, modules) == {
        "fcnseg.data.io._to_rgb",
        "fcnseg.data.io._hidden",
    }


# --- Sizes ---------------------------------------------------------------------------------


def oversize(module: str, source: str) -> set[str]:
    """The module (over MAX_MODULE_LINES) and its functions (over MAX_FUNCTION_LINES, def line
    to last line) without a `# size: <reason>` line: the module's first line, or the line
    directly above the def (above its decorators)."""
    lines = source.splitlines()
    found = set()
    if len(lines) > MAX_MODULE_LINES and not lines[0].startswith(SIZE_REASON):
        found.add(module)
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        assert node.end_lineno is not None
        if node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES:
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        if first < 2 or not lines[first - 2].strip().startswith(SIZE_REASON):
            found.add(f"{module}.{node.name}")
    return found


def _all_oversize() -> set[str]:
    return {name for module, path in MODULES.items() for name in oversize(module, path.read_text())}


def test_modules_and_functions_are_small_or_say_why():
    assert _all_oversize() - KNOWN_OVERSIZE == set()


def test_the_known_oversize_entries_are_still_oversize():
    assert KNOWN_OVERSIZE <= _all_oversize()


def test_the_size_check_flags_long_code_without_a_reason():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    long_def = f"def long():\n{body}"
    assert oversize("m", long_def) == {"m.long"}
    assert oversize("m", f"# size: a table of cases\n{long_def}") == set()
    assert oversize("m", f"@decorated\n{long_def}") == {"m.long"}
    assert oversize("m", f"{SIZE_REASON} one table\n@decorated\n{long_def}") == set()
    assert oversize("m", "def short():\n    return 1\n") == set()
    many = "x = 1\n" * (MAX_MODULE_LINES + 1)
    assert oversize("m", many) == {"m"}
    assert oversize("m", f"# size: generated table\n{many}") == set()


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
    assert model.num_classes == 3 and model.normalization in (
        "imagenet",
        "caffe_bgr",
        "caffe_bgr_raw",
        "tf_lite",
    )
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
