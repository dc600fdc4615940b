"""Imports run downward (ARCHITECTURE.md): no module of edc_lab imports a higher layer, none takes part
in an import cycle.

Every module is read with ``ast`` (nothing is imported), its imports collected at the top level
and inside functions alike. The few upward imports that are allowed are listed in ``ALLOWED``,
each with its reason; the unit tests at the bottom check that the checker does catch a
violation and a cycle.
"""

from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import edc_lab

PACKAGE_DIR = Path(edc_lab.__file__).resolve().parent

#: layers, bottom (0) to top; a module belongs to the layer of the longest prefix listed here
LAYERS: dict[str, int] = {
    "edc_lab.data": 0,
    "edc_lab.models": 0,
    "edc_lab.stats": 0,
    "edc_lab.auroc": 0,
    "edc_lab.acceleration": 0,  # compiling and autocast dtypes: prediction, training and bench use them
    "edc_lab.options": 0,  # the argument validators every sub-command's add_arguments uses
    "edc_lab.train": 1,
    "edc_lab.predict": 2,  # a package: tiling, memory, reader, predictor, scenes, its CLI
    "edc_lab.explain": 2,
    "edc_lab.viz": 3,
    "edc_lab.cli": 4,
    "edc_lab.bench": 4,
    "edc_lab.lab": 4,
    "edc_lab": 4,  # the package's __init__ (it imports nothing)
}


@dataclass(frozen=True)
class Allowed:
    """An upward import that is allowed: ``importer`` and ``imported`` are module patterns (fnmatch),
    the import must sit in a function named ``function`` (a method when ``method``), importing only
    ``names`` when they are given."""

    importer: str
    imported: str
    function: str
    method: bool
    names: frozenset[str] | None
    reason: str


ALLOWED: tuple[Allowed, ...] = (
    Allowed(
        importer="edc_lab.*", imported="edc_lab.viz*", function="plot", method=True, names=None,
        reason="TorchGeo's habit: a dataset's plot(sample) draws with edc_lab.viz; the import sits inside the "
               "method, so reading data never loads the plotting layer and there is no import cycle",
    ),
)


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    names: tuple[str, ...]
    function: str | None  # innermost enclosing function; None: module level
    method: bool  # that function is defined directly in a class
    typing_only: bool  # under ``if TYPE_CHECKING:`` (never executed)
    line: int


# --------------------------------------------------------------------------- the checker
def module_names(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = ("edc_lab",) + path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def layer_of(module: str) -> int:
    """The layer of the longest prefix of ``module`` in LAYERS."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module}: in no layer; add it to LAYERS in tests/test_layering.py and ARCHITECTURE.md")


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module of ``from <node.module> import ...`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(source: str, module: str, known: set[str], is_package: bool = False) -> list[Import]:
    """The imports of edc_lab modules in ``source`` (the module ``module``), wherever they stand.

    ``from edc_lab.train import distributed`` imports the module ``edc_lab.train.distributed`` when
    that is one of the ``known`` modules, else the package ``edc_lab.train``.
    """
    found: list[Import] = []

    def visit(node: ast.AST, function: str | None, method: bool, in_class: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name, in_class, False, typing_only)
            elif isinstance(child, ast.ClassDef):
                visit(child, function, method, True, typing_only)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                visit(child, function, method, in_class, True)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, alias.name, (), function, method, typing_only, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, is_package, child)
                for alias in child.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    found.append(Import(module, target, (alias.name,), function, method, typing_only, child.lineno))
            else:
                visit(child, function, method, in_class, typing_only)

    visit(ast.parse(source), None, False, False, False)
    return [i for i in found if i.imported == "edc_lab" or i.imported.startswith("edc_lab.")]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def allowed_by(item: Import) -> Allowed | None:
    for rule in ALLOWED:
        if (fnmatch.fnmatchcase(item.importer, rule.importer) and fnmatch.fnmatchcase(item.imported, rule.imported)
                and item.function == rule.function and item.method == rule.method
                and (rule.names is None or (item.names and set(item.names) <= rule.names))):
            return rule
    return None


def upward_imports(imports: list[Import]) -> list[str]:
    """Each import of a higher layer that ALLOWED does not cover, described."""
    found = []
    for item in imports:
        if layer_of(item.imported) > layer_of(item.importer) and allowed_by(item) is None:
            where = f"in {item.function}()" if item.function else "at the top"
            found.append(f"{item.importer}:{item.line} imports {item.imported} {where}: layer "
                         f"{layer_of(item.importer)} -> {layer_of(item.imported)}")
    return found


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph ``module -> modules it imports``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def search(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := search(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := search(start)) is not None:
            return cycle
    return None


def all_imports() -> list[Import]:
    modules = module_names()
    found = []
    for name, path in modules.items():
        found += imports_of(path.read_text(encoding="utf-8"), name, set(modules), path.name == "__init__.py")
    return found


# --------------------------------------------------------------------------- the package
def test_every_module_has_a_layer():
    for name in module_names():
        layer_of(name)


def test_no_module_imports_a_higher_layer():
    violations = upward_imports(all_imports())
    assert not violations, "imports must run downward (ARCHITECTURE.md):\n" + "\n".join(violations)


def test_no_import_cycle_at_the_top_level():
    graph: dict[str, set[str]] = {}
    for item in all_imports():
        if item.function is None and not item.typing_only and item.imported != item.importer:
            graph.setdefault(item.importer, set()).add(item.imported)
    cycle = import_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_allowed_exception_is_still_used():
    """An exception nobody needs any more is taken out of ALLOWED (and ARCHITECTURE.md)."""
    used = {allowed_by(item) for item in all_imports() if layer_of(item.imported) > layer_of(item.importer)}
    assert set(ALLOWED) <= used, [rule.reason for rule in ALLOWED if rule not in used]


# --------------------------------------------------------------------------- the checker itself
KNOWN = {"edc_lab.data.fake", "edc_lab.viz.plots", "edc_lab.train", "edc_lab.train.loop", "edc_lab.cli"}


def test_the_checker_finds_an_upward_import_at_the_top_and_inside_a_function():
    source = "import torch\nfrom edc_lab.viz.plots import plot_sample\n\ndef draw():\n    import edc_lab.train.loop\n"
    violations = upward_imports(imports_of(source, "edc_lab.data.fake", KNOWN))
    assert len(violations) == 2
    assert "edc_lab.data.fake:2 imports edc_lab.viz.plots at the top: layer 0 -> 3" in violations[0]
    assert "edc_lab.data.fake:5 imports edc_lab.train.loop in draw()" in violations[1]


def test_the_checker_allows_exactly_the_listed_exceptions():
    method = "class Fake:\n    def plot(self, sample):\n        from edc_lab.viz.plots import plot_sample\n"
    assert upward_imports(imports_of(method, "edc_lab.data.fake", KNOWN)) == []
    function = "def plot(sample):\n    from edc_lab.viz.plots import plot_sample\n"  # not a method
    assert len(upward_imports(imports_of(function, "edc_lab.data.fake", KNOWN))) == 1
    validators = "def add_arguments(parser):\n    from edc_lab.cli import float_in, int_in\n"  # now edc_lab.options
    assert len(upward_imports(imports_of(validators, "edc_lab.data.fake", KNOWN))) == 2  # one per name


def test_the_checker_resolves_submodules_and_relative_imports():
    source = "from edc_lab.train import loop, make_config\nfrom ..viz import plots\nfrom . import fake\n"
    imported = [i.imported for i in imports_of(source, "edc_lab.data.fake", KNOWN)]
    assert imported == ["edc_lab.train.loop", "edc_lab.train", "edc_lab.viz.plots", "edc_lab.data.fake"]


def test_the_checker_finds_a_cycle():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    # a function-level import is left out of the graph: only top-level imports run at import time
    source = "def f():\n    import edc_lab.train.loop\n"
    assert imports_of(source, "edc_lab.train", KNOWN)[0].function == "f"
