"""Import rules of the pack, checked on the source with ``ast`` (nothing is imported or executed).

Used by ``test_architecture.py``. :func:`check` parses every module of the repo's code -- the pack root
``__init__.py``, ``sonic_core/**.py`` and ``nodes/**.py`` (never tests/, bench/, scripts/) -- collects every import
statement wherever it sits (module level, functions, methods, class bodies, ``if TYPE_CHECKING:`` blocks,
try/except, other branches) plus ``importlib.import_module("literal")`` / ``__import__("literal")`` calls, resolves
relative imports to absolute module names and returns one line per violation::

    FILE:LINE: [RULE] WHAT: WHY

Module names. ``sonic_core`` is a top-level package (the pack root is on ``sys.path``; ``nodes/`` imports it
absolutely). The pack root itself is imported by ComfyUI under its folder name, so the root ``__init__.py`` is the
package ``<pack>`` and ``nodes/x.py`` is ``<pack>.nodes.x`` (shown as ``nodes.x``); a relative import in ``nodes/``
therefore never collides with ComfyUI's own top-level ``nodes`` module, which is what an absolute ``import nodes``
means.

Rules:

cycle
    No import cycle among the repo's modules. Edges: ``import a.b.c`` depends on ``a.b.c``; ``from p import n``
    on ``p.n`` when that is a module of the repo, else on ``p``; in both cases also on every parent package of the
    target (Python runs their ``__init__`` first) except the importer's own ancestors, which are necessarily
    imported before the importer runs (otherwise every package ``__init__`` importing a submodule that imports a
    sibling would be a "cycle"). Imports inside functions count (a deferred cycle is still a cycle in the design;
    the report marks those hops "in a function"). Imports under ``if TYPE_CHECKING:`` do not count: they never
    run. Each strongly connected group is reported as cycles ``a -> b -> ... -> a``, enough of them that every
    import edge taking part in a loop appears in at least one.
comfyui-in-core
    ``sonic_core`` (any module, any position) imports a ComfyUI module (:data:`COMFYUI_MODULES` or a submodule).
metering-purity
    ``sonic_core.metering`` or anything under it imports torch (or a submodule), the networks
    (``sonic_core.models``...) or the weights loader (``sonic_core.weights``...).
comfyui-in-nodes
    A module of the pack (root ``__init__.py`` or ``nodes/``) other than ``nodes/comfy_compat.py`` imports a
    ComfyUI module.
unresolved
    An import that cannot be resolved: a relative import climbing above its top-level package, or a module of the
    repo (``sonic_core...``, ``<pack>...``) that does not exist. Without it the rules above would silently miss
    whatever that import pulls in.

Rules 2-4 apply to every import whatever guards it: ``if TYPE_CHECKING:`` imports (they still couple the code to
the forbidden module) and ``try: ... except ImportError:`` imports alike (an optional import is still an import).
For the cycle rule the ``try`` body and its ``except`` fallback both count (either may run); only the
``if TYPE_CHECKING:`` body is left out (its ``else:`` runs, and counts). Dynamic imports are seen only when the
module name is a string literal (``import_module(name_variable)`` is invisible to a source check).
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

PACK = "<pack>"
CORE = "sonic_core"
COMPAT = f"{PACK}.nodes.comfy_compat"
COMFYUI_MODULES = frozenset({"nodes", "comfy", "comfy_api", "comfy_extras", "comfy_execution", "server",
                             "folder_paths", "execution", "latent_preview", "node_helpers"})
METERING = f"{CORE}.metering"
METERING_FORBIDDEN = ("torch", f"{CORE}.models", f"{CORE}.weights")


@dataclass(frozen=True)
class Module:
    name: str          # canonical dotted name, e.g. "sonic_core.weights" or "<pack>.nodes.cost"
    path: str          # posix path relative to the repo root
    is_package: bool   # an __init__.py

    @property
    def display(self) -> str:
        return self.name[len(PACK) + 1:] if self.name.startswith(PACK + ".") else self.name


@dataclass(frozen=True)
class Import:
    """One imported module (a statement importing several gives several)."""

    line: int
    statement: str          # short source form, for the report
    target: str             # absolute dotted name that is imported (the module, or the package for names)
    internal: Module | None # the repo module it resolves to, None for external ones
    implied: tuple[Module, ...]  # parent packages of an internal target that run first (not the importer's own)
    deferred: bool          # inside a function body
    type_only: bool         # under ``if TYPE_CHECKING:``
    error: str | None = None  # why it could not be resolved


@dataclass(frozen=True, order=True)
class Violation:
    path: str   # posix, relative to the repo root
    line: int
    rule: str   # cycle | comfyui-in-core | metering-purity | comfyui-in-nodes | unresolved
    what: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.what}: {self.why}"


@dataclass
class Tree:
    root: Path
    modules: dict[str, Module] = field(default_factory=dict)   # canonical name (and aliases) -> module
    imports: dict[Module, list[Import]] = field(default_factory=dict)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def discover(root: Path) -> dict[str, Module]:
    """Modules of the repo's code under ``root``, by canonical name, with ``<pack>.sonic_core...`` aliases."""
    modules: dict[str, Module] = {}
    files: list[Path] = []
    if (root / "__init__.py").is_file():
        files.append(root / "__init__.py")
    for top in (CORE, "nodes"):
        if (root / top).is_dir():
            files += sorted(p for p in (root / top).rglob("*.py") if "__pycache__" not in p.parts)
    for path in files:
        rel = path.relative_to(root)
        parts = list(rel.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        if not parts or parts[0] != CORE:
            parts.insert(0, PACK)
        module = Module(".".join(parts), rel.as_posix(), is_package)
        modules[module.name] = module
        if parts[0] == CORE:  # ``from .sonic_core import x`` in the root __init__ would reach the same file
            modules[f"{PACK}.{module.name}"] = module
    return modules


def _statement(node: ast.AST) -> str:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
        if isinstance(node, ast.Import):
            return f"import {names}"
        return f"from {'.' * node.level}{node.module or ''} import {names}"
    return ast.unparse(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _branches(node: ast.If) -> tuple[bool, bool]:
    """(body is type-checking only, orelse is type-checking only) for an ``if`` on TYPE_CHECKING."""
    test = node.test
    if _is_type_checking(test):
        return True, False
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and _is_type_checking(test.operand):
        return False, True
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) and any(map(_is_type_checking, test.values)):
        return True, False
    return False, False


def _dynamic_target(node: ast.Call) -> str | None:
    """The literal module name of ``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value and not arg.value.startswith("."):
        return arg.value
    return None


def _raw_imports(tree: ast.Module, dynamic: bool = True):
    """``(node, deferred, type_only)`` for every import statement and literal dynamic import, in source order.

    With ``dynamic`` false (the source mentions neither ``import_module`` nor ``__import__``) expressions are not
    searched, which keeps the scan fast.
    """
    found: list[tuple[ast.AST, bool, bool]] = []

    def visit(node: ast.AST, deferred: bool, type_only: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, deferred, type_only))
            return
        if not dynamic and isinstance(node, ast.expr):
            return
        if isinstance(node, ast.Call) and _dynamic_target(node):
            found.append((node, deferred, type_only))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            body = node.body if isinstance(node.body, list) else [node.body]
            for child in ast.iter_child_nodes(node):  # decorators, defaults, annotations run at definition time
                visit(child, deferred or any(child is b for b in body), type_only)
            return
        if isinstance(node, ast.If):
            body_tc, else_tc = _branches(node)
            visit(node.test, deferred, type_only)
            for child in node.body:
                visit(child, deferred, type_only or body_tc)
            for child in node.orelse:
                visit(child, deferred, type_only or else_tc)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, deferred, type_only)

    visit(tree, False, False)
    return sorted(found, key=lambda item: (item[0].lineno, item[0].col_offset))


class _Resolver:
    def __init__(self, modules: dict[str, Module]):
        self.modules = modules

    @staticmethod
    def in_repo_space(name: str) -> bool:
        return within(name, CORE) or within(name, PACK)

    def implied(self, importer: Module, target: str) -> tuple[Module, ...]:
        """Parent packages of ``target`` (repo modules) that are not ``importer`` or one of its ancestors."""
        parts = target.split(".")
        out = []
        for i in range(1, len(parts)):
            parent = self.modules.get(".".join(parts[:i]))
            if parent is not None and not within(importer.name, parent.name):
                out.append(parent)
        return tuple(out)

    def one(self, importer: Module, node, target: str, deferred: bool, type_only: bool) -> Import:
        statement = _statement(node)
        internal = self.modules.get(target)
        error = None
        if internal is None and self.in_repo_space(target):
            error = f"{_show(target)} is not a module of the repo"
        return Import(node.lineno, statement, target, internal,
                      self.implied(importer, target) if self.in_repo_space(target) else (), deferred, type_only,
                      error)

    def resolve(self, importer: Module, node, deferred: bool, type_only: bool) -> list[Import]:
        if isinstance(node, ast.Call):
            return [self.one(importer, node, _dynamic_target(node), deferred, type_only)]
        if isinstance(node, ast.Import):
            return [self.one(importer, node, alias.name, deferred, type_only) for alias in node.names]
        if node.module == "__future__":
            return []
        if node.level:
            package = importer.name if importer.is_package else importer.name.rpartition(".")[0]
            parts = package.split(".") if package else []
            if node.level - 1 >= len(parts):
                return [Import(node.lineno, _statement(node), "", None, (), deferred, type_only,
                               "relative import beyond the top-level package")]
            base = ".".join(parts[:len(parts) - (node.level - 1)])
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module
        out: list[Import] = []
        seen: set[str] = set()
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            target = candidate if alias.name != "*" and candidate in self.modules else base
            if target not in seen:
                seen.add(target)
                out.append(self.one(importer, node, target, deferred, type_only))
        return out


def _show(name: str) -> str:
    return name[len(PACK) + 1:] if name.startswith(PACK + ".") else name


def scan(root: Path) -> Tree:
    tree = Tree(Path(root), discover(Path(root)))
    resolver = _Resolver(tree.modules)
    for module in sorted(set(tree.modules.values()), key=lambda m: m.path):
        source = (tree.root / module.path).read_text(encoding="utf-8")
        parsed = ast.parse(source, filename=module.path)
        imports: list[Import] = []
        dynamic = "import_module" in source or "__import__" in source
        for node, deferred, type_only in _raw_imports(parsed, dynamic):
            imports += resolver.resolve(module, node, deferred, type_only)
        tree.imports[module] = imports
    return tree


def _where(imp: Import) -> str:
    tags = [t for t, on in (("under TYPE_CHECKING", imp.type_only), ("in a function", imp.deferred)) if on]
    return f"`{imp.statement}`" + (f" ({', '.join(tags)})" if tags else "")


WHY_CORE = "sonic_core must never depend on ComfyUI (adapters belong in nodes/)"
WHY_NODES = "only nodes/comfy_compat.py may import ComfyUI; import what you need from .comfy_compat"
WHY_ROOT = "the pack's root __init__.py must not import ComfyUI directly; go through nodes/comfy_compat.py"
WHY_METERING = ("the metering package must price with pure arithmetic on shipped data "
                "(no torch, sonic_core.models or sonic_core.weights)")
WHY_UNRESOLVED = "fix the import (an unresolved import hides what it pulls in from these rules)"
WHY_CYCLE = ("the repo's modules must not import each other in a loop (move the shared part into a module both "
             "can import, or invert the dependency)")


def rule_violations(tree: Tree) -> list[Violation]:
    """Rules 2-4 and unresolved imports."""
    out = []
    for module, imports in tree.imports.items():
        in_core = within(module.name, CORE)
        in_metering = within(module.name, METERING)
        in_pack = within(module.name, PACK)
        for imp in imports:
            def add(rule: str, what: str, why: str) -> None:
                out.append(Violation(module.path, imp.line, rule, what, why))

            if imp.error:
                add("unresolved", f"{_where(imp)} cannot be resolved: {imp.error}", WHY_UNRESOLVED)
                continue
            external = imp.internal is None
            if external and imp.target.split(".")[0] in COMFYUI_MODULES:
                what = f"{module.display} imports ComfyUI module '{imp.target}' via {_where(imp)}"
                if in_core:
                    add("comfyui-in-core", what, WHY_CORE)
                if in_pack and module.name != COMPAT:
                    add("comfyui-in-nodes", what, WHY_ROOT if module.name == PACK else WHY_NODES)
            if in_metering:
                name = imp.target if external else imp.internal.name
                hit = next((f for f in METERING_FORBIDDEN if within(name, f)), None)
                if hit:
                    kind = {"torch": "torch", f"{CORE}.models": "the networks",
                            f"{CORE}.weights": "the weights loader"}[hit]
                    add("metering-purity", f"{module.display} imports '{name}' ({kind}) via {_where(imp)}",
                        WHY_METERING)
    return out


def import_graph(tree: Tree) -> dict[Module, dict[Module, list[Import]]]:
    """Runtime dependency edges between repo modules (TYPE_CHECKING imports excluded), each with its imports."""
    graph: dict[Module, dict[Module, list[Import]]] = {m: {} for m in tree.imports}
    for module, imports in tree.imports.items():
        for imp in imports:
            if imp.type_only or imp.internal is None:
                continue
            for target in (imp.internal, *imp.implied):
                if target != module:
                    graph[module].setdefault(target, []).append(imp)
    return graph


def _components(graph: dict[Module, dict[Module, list[Import]]]) -> list[list[Module]]:
    """Strongly connected components (Tarjan, iterative) with more than one module."""
    index: dict[Module, int] = {}
    low: dict[Module, int] = {}
    stack: list[Module] = []
    on_stack: set[Module] = set()
    out: list[list[Module]] = []
    order = sorted(graph, key=lambda m: m.name)
    for start in order:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start], key=lambda m: m.name)))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child], key=lambda m: m.name))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    out.append(group)
    return out


def _shortest_path(graph, start: Module, goal: Module, allowed: set[Module]) -> list[Module]:
    previous: dict[Module, Module | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            break
        for child in sorted(graph[node], key=lambda m: m.name):
            if child in allowed and child not in previous:
                previous[child] = node
                queue.append(child)
    path = [goal]
    while previous[path[-1]] is not None:
        path.append(previous[path[-1]])
    return path[::-1]


def cycles(tree: Tree) -> list[list[Module]]:
    """Cycles ``[a, b, ..., a]`` covering every edge that lies on a loop, each rotated to start at its least name."""
    graph = import_graph(tree)
    found: set[tuple[Module, ...]] = set()
    for group in _components(graph):
        members = set(group)
        for source in group:
            for target in graph[source]:
                if target in members:
                    loop = [source, *_shortest_path(graph, target, source, members)]
                    ring = loop[:-1]
                    first = min(range(len(ring)), key=lambda i: ring[i].name)
                    ring = ring[first:] + ring[:first]
                    found.add(tuple(ring + ring[:1]))
    return [list(c) for c in sorted(found, key=lambda c: (len(c), [m.name for m in c]))]


def cycle_violations(tree: Tree) -> list[Violation]:
    graph = import_graph(tree)
    out = []
    for loop in cycles(tree):
        hops = []
        for here, there in zip(loop, loop[1:]):
            imp = min(graph[here][there], key=lambda i: (i.deferred, i.line))
            how = f"line {imp.line}" + (", in a function" if imp.deferred else "")
            if imp.internal != there:
                how += f", `{imp.statement}` runs {there.display}'s __init__"
            hops.append(f"{here.display} ({how})")
        first = min(graph[loop[0]][loop[1]], key=lambda i: (i.deferred, i.line))
        out.append(Violation(loop[0].path, first.line, "cycle",
                             "import cycle " + " → ".join(hops) + f" → {loop[-1].display}", WHY_CYCLE))
    return out


def violations(root: Path | Tree) -> list[Violation]:
    """Every violation of the rules in the code under ``root`` (or an already scanned tree), by file and line."""
    tree = root if isinstance(root, Tree) else scan(root)
    return sorted(rule_violations(tree) + cycle_violations(tree))


def check(root: Path | Tree) -> list[str]:
    """:func:`violations` as report lines."""
    return [str(v) for v in violations(root)]
