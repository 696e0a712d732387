"""Sonic talking-head engine: pure PyTorch, usable without ComfyUI.

Importing this package is cheap (no torch, no model code); import the submodules you need. The layout and the path
of one frame are in docs/DESIGN.md; comments that cite "MODEL.md §N" refer to docs/MODEL.md, the project's own
description of the model.
"""

from .errors import BudgetExceeded, SonicError, SonicInputError, SonicWeightsError
from .settings import SonicSettings
from .tokens import estimate_tokens

__version__ = "0.1.0"
__all__ = ["BudgetExceeded", "SonicError", "SonicInputError", "SonicSettings", "SonicWeightsError",
           "estimate_tokens", "__version__"]
