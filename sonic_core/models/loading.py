"""Strict state-dict loading with one-line :class:`SonicWeightsError` messages instead of torch's key dumps."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import SonicWeightsError


def check_state_dict(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], what: str,
                     source: str, fix: str) -> None:
    """One-line :class:`SonicWeightsError` when keys or shapes of ``state_dict`` differ from ``expected``.

    ``what`` names the model, ``source`` the file and ``fix`` tells the user what to do.
    """
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected "
                  f"(e.g. {unexpected[:1]}), {len(wrong)} of the wrong shape (e.g. {wrong[:1]})")
        raise SonicWeightsError(f"{source} does not match {what}: {detail}; {fix}")


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, fix: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` after :func:`check_state_dict`.

    Floating-point tensors of any dtype are accepted (they are copied into the model's parameters).
    """
    check_state_dict(model.state_dict(), state_dict, type(model).__name__, source, fix)
    model.load_state_dict(state_dict, strict=True)
