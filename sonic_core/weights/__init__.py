"""Locating, verifying and loading the official Sonic / SVD / whisper / RIFE weight files; hub download.

* :mod:`.layout` — :func:`locate_weights` -> :class:`WeightFiles` (ComfyUI ``models/`` and standalone trees).
* :mod:`.reading` — :func:`read_state_dict` (safetensors / ``weights_only`` pickles, one-line errors),
  :func:`build_and_load` (meta-device build + strict assign, no second copy), :func:`dtype_from_name`.
* :mod:`.svd_single_file` — Stability ``svd_xt*.safetensors`` names -> ours (data-driven rename rules).
* :mod:`.components` — :func:`load_svd_parts`, whisper encoder and RIFE key handling.
* :mod:`.hub` — :func:`fetch_weights` (``python -m sonic_core fetch-weights``).
"""

from .components import load_svd_parts, read_rife, read_whisper_encoder, rife_state_dict, whisper_encoder_state_dict
from .hub import HUB_FILES, fetch_weights
from .layout import COMPONENTS, OPTIONAL, WeightFiles, default_weights_dir, locate_weights
from .reading import build_and_load, check_state_dict, dtype_from_name, read_state_dict, safetensors_keys

__all__ = [
    "COMPONENTS", "HUB_FILES", "OPTIONAL", "WeightFiles", "build_and_load", "check_state_dict", "default_weights_dir",
    "dtype_from_name", "fetch_weights", "load_svd_parts", "locate_weights", "read_rife", "read_state_dict",
    "read_whisper_encoder", "rife_state_dict", "safetensors_keys", "whisper_encoder_state_dict",
]
