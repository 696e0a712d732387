"""Architecture rules of the repo's code, checked on the source (nothing of the pack is imported here).

The rules and how imports are resolved are described in ``architecture_rules.py``. ``test_repo_follows_the_rules``
runs them on the real tree; the ``test_engine_*`` tests run the same engine on small synthetic trees, so the check
is shown able to fail (and not to fail on the patterns the code legitimately uses).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import architecture_rules as rules
import pytest
from architecture_rules import Violation

REPO = Path(__file__).resolve().parent.parent
CYCLE_WHY, CORE_WHY, NODES_WHY, ROOT_WHY, METERING_WHY, UNRESOLVED_WHY = (
    rules.WHY_CYCLE, rules.WHY_CORE, rules.WHY_NODES, rules.WHY_ROOT, rules.WHY_METERING, rules.WHY_UNRESOLVED)


@pytest.fixture(scope="module")
def repo_tree() -> rules.Tree:
    return rules.scan(REPO)


def test_repo_follows_the_rules(repo_tree):
    found = rules.check(repo_tree)
    if found:
        pytest.fail(f"{len(found)} architecture violation(s):\n" + "\n".join(found), pytrace=False)


def test_repo_scan_sees_the_code(repo_tree):
    """Guard against a scan that silently finds nothing: the known modules are there, tests/bench/scripts are not."""
    tree = repo_tree
    names = {m.name for m in tree.modules.values()}
    assert {"<pack>", "<pack>.nodes", "<pack>.nodes.comfy_compat", "sonic_core", "sonic_core.metering",
            "sonic_core.metering.graph_pricing", "sonic_core.models.unet", "sonic_core.weights"} <= names
    assert not any(m.path.startswith(("tests/", "bench/", "scripts/")) for m in tree.modules.values())
    assert sum(len(imps) for imps in tree.imports.values()) > 200


# --- the engine on synthetic trees -------------------------------------------------------------------------------

def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def cycle(path: str, line: int, what: str) -> Violation:
    return Violation(path, line, "cycle", what, CYCLE_WHY)


CASES: dict[str, tuple[dict[str, str], list[Violation]]] = {
    "two-module cycle": (
        {"sonic_core/__init__.py": "",
         "sonic_core/a.py": "from . import b\n",
         "sonic_core/b.py": "from .a import thing\n"},
        [cycle("sonic_core/a.py", 1, "import cycle sonic_core.a (line 1) → sonic_core.b (line 1) → sonic_core.a")]),

    "cycle through a package __init__ (submodule imports a name of its package)": (
        {"sonic_core/__init__.py": "",
         "sonic_core/pkg/__init__.py": "from .impl import run\nHELPER = 1\n",
         "sonic_core/pkg/impl.py": "from . import HELPER\n\ndef run():\n    return HELPER\n"},
        [cycle("sonic_core/pkg/__init__.py", 1,
               "import cycle sonic_core.pkg (line 1) → sonic_core.pkg.impl (line 1) → sonic_core.pkg")]),

    "cycle through a parent __init__ run by importing a submodule": (
        {"sonic_core/__init__.py": "",
         "sonic_core/pkg/__init__.py": "from ..other import util\n",
         "sonic_core/pkg/leaf.py": "X = 1\n",
         "sonic_core/other.py": "import sonic_core.pkg.leaf\n\ndef util():\n    pass\n"},
        [cycle("sonic_core/other.py", 1,
               "import cycle sonic_core.other (line 1, `import sonic_core.pkg.leaf` runs sonic_core.pkg's __init__)"
               " → sonic_core.pkg (line 1) → sonic_core.other")]),

    "function-level (method) import cycle": (
        {"sonic_core/__init__.py": "",
         "sonic_core/a.py": "from .b import G\n\ndef f():\n    return G\n",
         "sonic_core/b.py": "class G:\n    def m(self):\n        from .a import f\n        return f\n"},
        [cycle("sonic_core/a.py", 1,
               "import cycle sonic_core.a (line 1) → sonic_core.b (line 3, in a function) → sonic_core.a")]),

    "relative `from .. import submodule, name`": (
        {"sonic_core/__init__.py": "from .sub.m import f\nVERSION = 1\n",
         "sonic_core/x.py": "from .sub import m\n",
         "sonic_core/sub/__init__.py": "",
         "sonic_core/sub/m.py": "from .. import x, VERSION\n\ndef f():\n    pass\n"},
        # m -> sonic_core.x (a submodule) and m -> sonic_core (VERSION is a name of the package)
        [cycle("sonic_core/__init__.py", 1,
               "import cycle sonic_core (line 1) → sonic_core.sub.m (line 1) → sonic_core"),
         cycle("sonic_core/sub/m.py", 1,
               "import cycle sonic_core.sub.m (line 1) → sonic_core.x (line 1) → sonic_core.sub.m")]),

    "imports in a def's decorator or default run at definition time, its body's do not": (
        {"sonic_core/__init__.py": "",
         "sonic_core/d.py": """
             import importlib
             def f(x=importlib.import_module("comfy")):
                 return importlib.import_module("comfy_extras")
             """},
        [Violation("sonic_core/d.py", 2, "comfyui-in-core", "sonic_core.d imports ComfyUI module 'comfy' via "
                   "`importlib.import_module('comfy')`", CORE_WHY),
         Violation("sonic_core/d.py", 3, "comfyui-in-core", "sonic_core.d imports ComfyUI module 'comfy_extras' "
                   "via `importlib.import_module('comfy_extras')` (in a function)", CORE_WHY)]),

    "TYPE_CHECKING-only back edge is not a cycle": (
        {"sonic_core/__init__.py": "",
         "sonic_core/a.py": "from .b import g\n",
         "sonic_core/b.py": """
             import typing
             from typing import TYPE_CHECKING
             if TYPE_CHECKING:
                 from .a import A
             if typing.TYPE_CHECKING:
                 from . import a
             def g(x: "A") -> None:
                 if TYPE_CHECKING:
                     from .a import B
             """},
        []),

    "the runtime branch of a TYPE_CHECKING test does count": (
        {"sonic_core/__init__.py": "",
         "sonic_core/a.py": "from .b import g\n",
         "sonic_core/b.py": """
             from typing import TYPE_CHECKING
             if TYPE_CHECKING:
                 pass
             else:
                 from .a import A
             def g():
                 pass
             """},
        [cycle("sonic_core/a.py", 1, "import cycle sonic_core.a (line 1) → sonic_core.b (line 5) → sonic_core.a")]),

    "rule 2: sonic_core imports ComfyUI (any position, any guard)": (
        {"sonic_core/__init__.py": "",
         "sonic_core/bad.py": """
             import comfy.model_management
             from typing import TYPE_CHECKING
             try:
                 import folder_paths
             except ImportError:
                 folder_paths = None
             if TYPE_CHECKING:
                 from comfy_api.latest import io
             def f():
                 from server import PromptServer
                 import importlib
                 return importlib.import_module("nodes")
             import comfyui_frontend_package, nodes_extra
             """},
        [Violation("sonic_core/bad.py", 1, "comfyui-in-core", "sonic_core.bad imports ComfyUI module "
                   "'comfy.model_management' via `import comfy.model_management`", CORE_WHY),
         Violation("sonic_core/bad.py", 4, "comfyui-in-core",
                   "sonic_core.bad imports ComfyUI module 'folder_paths' via `import folder_paths`", CORE_WHY),
         Violation("sonic_core/bad.py", 8, "comfyui-in-core", "sonic_core.bad imports ComfyUI module "
                   "'comfy_api.latest' via `from comfy_api.latest import io` (under TYPE_CHECKING)", CORE_WHY),
         Violation("sonic_core/bad.py", 10, "comfyui-in-core", "sonic_core.bad imports ComfyUI module 'server' "
                   "via `from server import PromptServer` (in a function)", CORE_WHY),
         Violation("sonic_core/bad.py", 12, "comfyui-in-core", "sonic_core.bad imports ComfyUI module 'nodes' "
                   "via `importlib.import_module('nodes')` (in a function)", CORE_WHY)]),

    "rule 3: metering imports torch, the networks or the weights loader": (
        {"sonic_core/__init__.py": "",
         "sonic_core/settings.py": "",
         "sonic_core/pipeline.py": "import torch\nfrom .models import unet\nfrom .weights import loader\n",
         "sonic_core/models/__init__.py": "",
         "sonic_core/models/unet.py": "import torch\n",
         "sonic_core/models_extra.py": "",
         "sonic_core/weights/__init__.py": "",
         "sonic_core/weights/loader.py": "def load():\n    pass\n",
         "sonic_core/metering/__init__.py": "",
         "sonic_core/metering/tiers.py": "",
         "sonic_core/metering/price.py": """
             import torch.nn as nn
             from ..models import unet
             from ..weights.loader import load
             from ..settings import SonicSettings
             from . import tiers
             import torchaudio
             from .. import models_extra
             def f():
                 from sonic_core.weights import WeightFiles
             """,
         "sonic_core/metering/sub/__init__.py": "",
         "sonic_core/metering/sub/deep.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                            "    from ...models.unet import SonicUNet\n"},
        [Violation("sonic_core/metering/price.py", 1, "metering-purity",
                   "sonic_core.metering.price imports 'torch.nn' (torch) via `import torch.nn as nn`", METERING_WHY),
         Violation("sonic_core/metering/price.py", 2, "metering-purity", "sonic_core.metering.price imports "
                   "'sonic_core.models.unet' (the networks) via `from ..models import unet`", METERING_WHY),
         Violation("sonic_core/metering/price.py", 3, "metering-purity", "sonic_core.metering.price imports "
                   "'sonic_core.weights.loader' (the weights loader) via `from ..weights.loader import load`",
                   METERING_WHY),
         Violation("sonic_core/metering/price.py", 9, "metering-purity", "sonic_core.metering.price imports "
                   "'sonic_core.weights' (the weights loader) via `from sonic_core.weights import WeightFiles` "
                   "(in a function)", METERING_WHY),
         Violation("sonic_core/metering/sub/deep.py", 3, "metering-purity", "sonic_core.metering.sub.deep imports "
                   "'sonic_core.models.unet' (the networks) via `from ...models.unet import SonicUNet` "
                   "(under TYPE_CHECKING)", METERING_WHY)]),

    "rule 4: node modules and the pack root import ComfyUI; comfy_compat may": (
        {"__init__.py": "import os\nfrom . import nodes\nimport server\n",
         "sonic_core/__init__.py": "",
         "sonic_core/x.py": "",
         "nodes/__init__.py": "from . import a\nfrom .sub import deep\n",
         "nodes/a.py": """
             import folder_paths
             from comfy.utils import ProgressBar
             import nodes
             from .comfy_compat import folder_paths as fp
             from sonic_core import x
             from . import comfy_compat
             """,
         "nodes/comfy_compat.py": """
             import importlib
             import comfy.utils
             import nodes
             def f():
                 return importlib.import_module("comfy.model_management")
             """,
         "nodes/sub/__init__.py": "",
         "nodes/sub/deep.py": "from .. import comfy_compat\ndef f():\n    import latent_preview\n"},
        [Violation("__init__.py", 3, "comfyui-in-nodes", "<pack> imports ComfyUI module 'server' via "
                   "`import server`", ROOT_WHY),
         Violation("nodes/a.py", 1, "comfyui-in-nodes", "nodes.a imports ComfyUI module 'folder_paths' via "
                   "`import folder_paths`", NODES_WHY),
         Violation("nodes/a.py", 2, "comfyui-in-nodes", "nodes.a imports ComfyUI module 'comfy.utils' via "
                   "`from comfy.utils import ProgressBar`", NODES_WHY),
         Violation("nodes/a.py", 3, "comfyui-in-nodes", "nodes.a imports ComfyUI module 'nodes' via "
                   "`import nodes`", NODES_WHY),
         Violation("nodes/sub/deep.py", 3, "comfyui-in-nodes", "nodes.sub.deep imports ComfyUI module "
                   "'latent_preview' via `import latent_preview` (in a function)", NODES_WHY)]),

    "unresolvable imports are reported, not skipped": (
        {"sonic_core/__init__.py": "",
         "sonic_core/u.py": "from .missing import x\nfrom .. import y\nimport sonic_core.gone\n",
         "nodes/__init__.py": "",
         "nodes/n.py": "from ..nope import z\n"},
        [Violation("nodes/n.py", 1, "unresolved", "`from ..nope import z` cannot be resolved: "
                   "nope is not a module of the repo", UNRESOLVED_WHY),
         Violation("sonic_core/u.py", 1, "unresolved", "`from .missing import x` cannot be resolved: "
                   "sonic_core.missing is not a module of the repo", UNRESOLVED_WHY),
         Violation("sonic_core/u.py", 2, "unresolved", "`from .. import y` cannot be resolved: "
                   "relative import beyond the top-level package", UNRESOLVED_WHY),
         Violation("sonic_core/u.py", 3, "unresolved", "`import sonic_core.gone` cannot be resolved: "
                   "sonic_core.gone is not a module of the repo", UNRESOLVED_WHY)]),

    "clean tree with the patterns the code uses": (
        {"__init__.py": "import sys\nfrom . import nodes as _nodes\nfrom .nodes import MAP\n",
         "nodes/__init__.py": """
             from . import sonic
             from .comfy_compat import fp
             MAP = {}
             def register():
                 from .hooks import r
             """,
         "nodes/comfy_compat.py": """
             import importlib
             from sonic_core.errors import E
             try:
                 fp = importlib.import_module("folder_paths")
             except ImportError:
                 fp = None
             """,
         "nodes/sonic.py": "import torch\nfrom sonic_core import node_ids\nfrom sonic_core.weights import locate\n"
                           "from .comfy_compat import fp\n",
         "nodes/hooks.py": "from .sonic import X\nfrom sonic_core.metering.pricing import f\n",
         "sonic_core/__init__.py": "from .errors import E\nfrom .settings import S\n",
         "sonic_core/errors.py": "from __future__ import annotations\n",
         "sonic_core/settings.py": "from .errors import E\nfrom . import errors\n",
         "sonic_core/node_ids.py": "",
         "sonic_core/weights/__init__.py": "from .layout import locate\n",
         "sonic_core/weights/layout.py": "from ..errors import E\nfrom .. import errors\n",
         "sonic_core/weights/loader.py": "from . import locate\nfrom ..models import unet\n",
         "sonic_core/models/__init__.py": "",
         "sonic_core/models/unet.py": "import torch\nfrom ..errors import E\n",
         "sonic_core/metering/__init__.py": "",
         "sonic_core/metering/pricing.py": """
             from typing import TYPE_CHECKING
             from ..settings import S
             from .. import node_ids
             if TYPE_CHECKING:
                 from .cost import P
             def f():
                 from . import cost
             """,
         "sonic_core/metering/cost.py": "from ..errors import E\nfrom typing import TYPE_CHECKING\n"
                                        "if TYPE_CHECKING:\n    from .pricing import f\n"},
        []),
}


@pytest.mark.parametrize("name", list(CASES))
def test_engine_reports_exactly_the_expected_violations(tmp_path, name):
    files, expected = CASES[name]
    assert rules.violations(write_tree(tmp_path, files)) == sorted(expected)


def test_engine_resolves_relative_imports_by_package(tmp_path):
    """``from . import x`` means the package itself in ``pkg/__init__.py`` and the parent package in ``pkg/mod.py``."""
    root = write_tree(tmp_path, {
        "__init__.py": "from . import nodes\nfrom .nodes import MAP\n",
        "nodes/__init__.py": "from . import a\nMAP = {}\n",
        "nodes/a.py": "from . import MAP\nfrom ..nodes import a\n",
        "sonic_core/__init__.py": "",
        "sonic_core/util.py": "",
        "sonic_core/pkg/__init__.py": "from . import mod\nfrom .. import util\nfrom . import NAME\n",
        "sonic_core/pkg/mod.py": "from . import sibling, NAME\nfrom .. import util\nfrom .sibling import s\n",
        "sonic_core/pkg/sibling.py": "",
    })
    tree = rules.scan(root)
    targets = {m.display: [(i.line, i.target) for i in imps] for m, imps in tree.imports.items()}
    assert targets["<pack>"] == [(1, "<pack>.nodes"), (2, "<pack>.nodes")]
    assert targets["nodes"] == [(1, "<pack>.nodes.a")]
    assert targets["nodes.a"] == [(1, "<pack>.nodes"), (2, "<pack>.nodes.a")]
    assert targets["sonic_core.pkg"] == [(1, "sonic_core.pkg.mod"), (2, "sonic_core.util"), (3, "sonic_core.pkg")]
    assert targets["sonic_core.pkg.mod"] == [(1, "sonic_core.pkg.sibling"), (1, "sonic_core.pkg"),
                                             (2, "sonic_core.util"), (3, "sonic_core.pkg.sibling")]
    graph = rules.import_graph(tree)
    edges = {(a.display, b.display) for a, targets_ in graph.items() for b in targets_}
    # importing a submodule runs its parents' __init__ -- except the importer's own ancestors, already running
    assert ("nodes.a", "nodes") in edges               # `from . import MAP`: a name of the package
    assert ("sonic_core.pkg.mod", "sonic_core") not in edges
    assert ("<pack>", "nodes") in edges and ("nodes", "nodes.a") in edges
    assert rules.violations(root) == [
        cycle("nodes/__init__.py", 1, "import cycle nodes (line 1) → nodes.a (line 1) → nodes"),
        cycle("sonic_core/pkg/__init__.py", 1,
              "import cycle sonic_core.pkg (line 1) → sonic_core.pkg.mod (line 1) → sonic_core.pkg")]


def test_report_line_format(tmp_path):
    root = write_tree(tmp_path, {"sonic_core/__init__.py": "", "sonic_core/a.py": "import comfy\n"})
    assert rules.check(root) == [
        "sonic_core/a.py:1: [comfyui-in-core] sonic_core.a imports ComfyUI module 'comfy' via `import comfy`: "
        "sonic_core must never depend on ComfyUI (adapters belong in nodes/)"]
