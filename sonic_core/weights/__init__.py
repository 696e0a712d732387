"""Locating, verifying, reading and loading the official Sonic / SVD / whisper / RIFE weight files; hub download.

Every read of a checkpoint and every strict load into a network goes through this package (the networks in
:mod:`sonic_core.models` hold architecture only).

* :mod:`.layout` — :func:`locate_weights` -> :class:`WeightFiles` (ComfyUI ``models/`` and standalone trees; the
  SVD file chosen by its keys; rejected candidates with their reason).
* :mod:`.reading` — :func:`read_state_dict` (safetensors / ``weights_only`` pickles with numpy data globals,
  training-checkpoint dicts, one-line errors naming a refused global),
  :func:`check_state_dict` and :func:`load_strict` (strict loading with one-line errors), :func:`build_and_load`
  (meta-device build + strict assign, no second copy).
* :mod:`.svd_single_file` — Stability ``svd_xt*.safetensors`` names -> ours (data-driven rename rules).
* :mod:`.components` — each published checkpoint -> our module's state dict: the UNet check, :func:`load_svd_parts`,
  the whisper encoder and RIFE key mappings; ``read_*`` from files, ``load_*`` into built modules.
* :mod:`.loader` — :func:`~.loader.load_sonic_models`, :func:`~.loader.load_rife`.
* :mod:`.convert` — pickles -> ``.safetensors`` beside them (``weights convert``).
* :mod:`.check` — :func:`~.check.check_weights` (``weights check``: format, dtypes, sha256, loads or why not).
* :mod:`.tiny` — the embedded tiny model (random weights from a seed, no files).
* :mod:`.hub` — :func:`fetch_weights` (``python -m sonic_core fetch-weights``).
"""

from .components import (clip_vision_state_dict, load_clip_vision, load_rife_state_dict, load_svd_parts,
                         load_unet_state_dict, load_whisper_encoder, read_rife, read_unet, read_whisper_encoder,
                         rife_state_dict, unet_state_dict, whisper_encoder_state_dict)
from .hub import HUB_FILES, fetch_weights
from .layout import COMPONENTS, OPTIONAL, WeightFiles, default_weights_dir, locate_weights
from .reading import build_and_load, check_state_dict, load_strict, read_state_dict, safetensors_keys

__all__ = [
    "COMPONENTS", "HUB_FILES", "OPTIONAL", "WeightFiles", "build_and_load", "check_state_dict",
    "clip_vision_state_dict", "default_weights_dir", "fetch_weights", "load_clip_vision", "load_rife_state_dict",
    "load_strict", "load_svd_parts", "load_unet_state_dict", "load_whisper_encoder", "locate_weights", "read_rife",
    "read_state_dict", "read_unet", "read_whisper_encoder", "rife_state_dict", "safetensors_keys", "unet_state_dict",
    "whisper_encoder_state_dict",
]
