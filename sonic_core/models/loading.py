"""Strict state-dict loading with one-line :class:`SonicWeightsError` messages instead of torch's key dumps."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import SonicWeightsError


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, fix: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` after checking keys and shapes.

    ``source`` names the file in the message and ``fix`` tells the user what to do. Floating-point tensors of any
    dtype are accepted (they are copied into the model's parameters).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected "
                  f"(e.g. {unexpected[:1]}), {len(wrong)} of the wrong shape (e.g. {wrong[:1]})")
        raise SonicWeightsError(f"{source} does not match {type(model).__name__}: {detail}; {fix}")
    model.load_state_dict(state_dict, strict=True)
