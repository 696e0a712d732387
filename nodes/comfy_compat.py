"""The one module of the pack that touches ComfyUI.

Inside ComfyUI it hands out ComfyUI's own ``folder_paths``, progress bar, interrupt check, prompt server, model
management and V3 node schema (``io`` and ``ComfyExtension`` from ``comfy_api.latest``). Outside ComfyUI (plain
Python, the tests) it provides stand-ins with the same call signatures, so every node class can be imported and
executed without a server:

* ``folder_paths``: a :class:`StandaloneFolderPaths` rooted at ``$SONIC_COMFY_ROOT`` or at the ``root`` key of the
  TOML file ``$SONIC_COMFY_CONFIG`` (default ``~/.config/sonic/comfy.toml``), else ``~/.cache/sonic/comfy``; below
  the root: ``models/<folder>/``, ``input/``, ``output/``, ``temp/``. The root is read on every call, so changing
  the variable takes effect at once.
* ``io`` and ``ComfyExtension``: :mod:`.standin_io`, the part of ComfyUI's V3 schema the pack uses;
* a progress bar that counts but shows nothing, and an interrupt check that never fires;
* ``prompt_server()`` returns ``None``.

Nodes import from here (``from .comfy_compat import ...``), never ComfyUI modules directly.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from sonic_core.errors import SonicInputError, SonicInterrupted
from sonic_core.paths import config_file, inside, read_config, relative_name

from . import standin_io


def _import_comfyui() -> tuple[ModuleType, ModuleType, ModuleType] | None:
    """ComfyUI's folder_paths, comfy.utils and comfy.model_management, or None outside ComfyUI."""
    try:
        real_folder_paths = importlib.import_module("folder_paths")
        comfy_utils = importlib.import_module("comfy.utils")
        model_management = importlib.import_module("comfy.model_management")
    except ImportError:
        return None
    return real_folder_paths, comfy_utils, model_management


_COMFY = _import_comfyui()
IN_COMFYUI: bool = _COMFY is not None

# Model folders the pack uses, relative to the models root (ComfyUI layout, docs/DESIGN.md).
MODEL_FOLDERS: dict[str, str] = {"sonic": "sonic", "checkpoints": "checkpoints"}
_ANNOTATION = re.compile(r"^(?P<name>.*?)\s*\[(?P<kind>input|output|temp)\]$")


class StandaloneFolderPaths:
    """``folder_paths``-compatible folders for use outside ComfyUI (same function names and return shapes)."""

    def root(self) -> Path:
        """Base folder: ``$SONIC_COMFY_ROOT``, else the config file's ``root``, else ``~/.cache/sonic/comfy``."""
        env_root = os.environ.get("SONIC_COMFY_ROOT")
        if env_root:
            return Path(env_root).expanduser()
        config = config_file(None, "SONIC_COMFY_CONFIG", "~/.config/sonic/comfy.toml")
        if config.is_file():
            data = read_config(config, "config file", "toml")
            if "root" in data:
                return (config.parent / str(data["root"])).expanduser()
        return Path("~/.cache/sonic/comfy").expanduser()

    def get_folder_paths(self, folder_name: str) -> list[str]:
        if folder_name not in MODEL_FOLDERS:
            raise SonicInputError(f"model folder {folder_name!r}: unknown; use one of {sorted(MODEL_FOLDERS)}")
        return [str(self.root() / "models" / MODEL_FOLDERS[folder_name])]

    def get_filename_list(self, folder_name: str) -> list[str]:
        """Every file below the folder's paths, relative, '/'-separated, sorted; hidden files skipped."""
        names: set[str] = set()
        for base in map(Path, self.get_folder_paths(folder_name)):
            if base.is_dir():
                names.update(p.relative_to(base).as_posix() for p in base.rglob("*")
                             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts))
        return sorted(names)

    def get_full_path(self, folder_name: str, filename: str) -> str | None:
        relative = relative_name(filename, f"{folder_name} file")
        for base in self.get_folder_paths(folder_name):
            candidate = os.path.join(base, relative)
            if os.path.isfile(candidate):
                return candidate
        return None

    def get_input_directory(self) -> str:
        return str(self.root() / "input")

    def get_output_directory(self) -> str:
        return str(self.root() / "output")

    def get_temp_directory(self) -> str:
        return str(self.root() / "temp")

    def get_directory_by_type(self, kind: str) -> str | None:
        return {"input": self.get_input_directory, "output": self.get_output_directory,
                "temp": self.get_temp_directory}.get(kind, lambda: None)()

    def get_annotated_filepath(self, name: str, default_dir: str | None = None) -> str:
        """``"a.wav [output]"`` → output/a.wav; without an annotation the input folder (or ``default_dir``)."""
        match = _ANNOTATION.match(name)
        if match:
            return os.path.join(self.get_directory_by_type(match["kind"]), match["name"])
        return os.path.join(default_dir or self.get_input_directory(), name)

    def exists_annotated_filepath(self, name: str) -> bool:
        return os.path.exists(self.get_annotated_filepath(name))

    def get_save_image_path(self, filename_prefix: str, output_dir: str, image_width: int = 0,
                            image_height: int = 0) -> tuple[str, str, int, str, str]:
        """``(full_folder, filename, counter, subfolder, filename_prefix)``, ComfyUI's shape.

        ``%width%``/``%height%`` in the prefix are replaced; a prefix ``sub/name`` saves into ``output_dir/sub``;
        the counter is one past the highest ``name_NNNNN`` already there. A prefix that leaves ``output_dir``
        is refused.
        """
        prefix = filename_prefix.replace("%width%", str(image_width)).replace("%height%", str(image_height))
        subfolder, filename = os.path.split(os.path.normpath(prefix))
        full_folder = os.path.normpath(os.path.join(output_dir, subfolder))
        if not inside(full_folder, [output_dir]):
            raise SonicInputError(f"filename_prefix {filename_prefix!r}: saving outside the output folder "
                                  "is not allowed; use a name like 'Sonic' or 'videos/Sonic'")
        pattern = re.compile(re.escape(filename) + r"_(\d+)")
        counters = [int(m.group(1)) for f in (os.listdir(full_folder) if os.path.isdir(full_folder) else [])
                    if (m := pattern.match(f))]
        os.makedirs(full_folder, exist_ok=True)
        return full_folder, filename, max(counters, default=0) + 1, subfolder, prefix


class _CountingProgressBar:
    """Stand-in for ``comfy.utils.ProgressBar``: keeps the count, shows nothing."""

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.current = 0

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = int(total)
        self.current = min(int(value), self.total)


# ComfyUI's V3 node schema where the server has it (0.3.75, the oldest ComfyUI the pack supports, does).
_COMFY_API: ModuleType | None = importlib.import_module("comfy_api.latest") if IN_COMFYUI else None
io: Any = standin_io if _COMFY_API is None else _COMFY_API.io
ComfyExtension: Any = standin_io.ComfyExtension if _COMFY_API is None else _COMFY_API.ComfyExtension

if _COMFY is not None:
    folder_paths: Any = _COMFY[0]
    ProgressBar: Any = _COMFY[1].ProgressBar
    _model_management: ModuleType | None = _COMFY[2]
else:
    folder_paths = StandaloneFolderPaths()
    ProgressBar = _CountingProgressBar
    _model_management = None


def sonic_model_dirs() -> list[str]:
    """Every ``sonic`` model folder ComfyUI knows: ``models/sonic`` and those an ``extra_model_paths.yaml`` adds
    (a ``sonic:`` entry). Inside ComfyUI ``models/sonic`` is registered with its folder_paths on first use (a yaml
    entry registers the name first, with only its own folder, so the default one is added to it)."""
    if IN_COMFYUI:
        default = os.path.join(folder_paths.models_dir, MODEL_FOLDERS["sonic"])
        known = folder_paths.folder_names_and_paths.get(MODEL_FOLDERS["sonic"], ([], set()))[0]
        if default not in known:
            folder_paths.add_model_folder_path(MODEL_FOLDERS["sonic"], default)
    return list(folder_paths.get_folder_paths(MODEL_FOLDERS["sonic"]))


def checkpoint_dirs() -> list[str]:
    """Every ``checkpoints`` folder ComfyUI knows (``models/checkpoints``, ``--base-directory``, and the folders an
    ``extra_model_paths.yaml`` adds), in ComfyUI's order; their subfolders are searched too."""
    return list(folder_paths.get_folder_paths(MODEL_FOLDERS["checkpoints"]))


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel; a no-op outside ComfyUI."""
    if _model_management is not None:
        _model_management.throw_exception_if_processing_interrupted()


def cancel_check() -> bool:
    """The engine's stop check inside a node: raises ComfyUI's interrupt (a cancel, not an error) when Cancel was
    pressed, so the engine's long loops stop between units of work."""
    throw_if_interrupted()
    return False


def interrupt_exception_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the user cancelled": ComfyUI's (when present) and the engine's SonicInterrupted."""
    comfy_type = getattr(_model_management, "InterruptProcessingException", None)
    return (SonicInterrupted,) + ((comfy_type,) if comfy_type is not None else ())


def raise_interrupted(message: str = "cancelled by the user") -> None:
    """Raise the exception ComfyUI treats as a cancel (not an error); SonicInterrupted outside ComfyUI."""
    comfy_type = getattr(_model_management, "InterruptProcessingException", None)
    raise (comfy_type or SonicInterrupted)(message)


def prompt_server() -> Any | None:
    """``server.PromptServer.instance`` inside a running ComfyUI, else None."""
    if not IN_COMFYUI:
        return None
    server_module = sys.modules.get("server")
    prompt_server_type = getattr(server_module, "PromptServer", None)
    return getattr(prompt_server_type, "instance", None)


METER_ATTRIBUTE = "sonic_meter"  # set on the PromptServer by nodes/server_hooks.py once metering is installed


def note_output(path: str) -> None:
    """Tell the server's metering, if installed, that the running prompt wrote ``path`` (see ``Meter.reconcile``)."""
    meter = getattr(prompt_server(), METER_ATTRIBUTE, None)
    if meter is not None:
        meter.output_written(path)


def video_from_file(path: str) -> Any:
    """A core ComfyUI ``VIDEO`` value for a file (``comfy_api.latest.InputImpl.VideoFromFile``); outside ComfyUI
    the path itself."""
    return path if _COMFY_API is None else _COMFY_API.InputImpl.VideoFromFile(path)


def torch_device() -> Any:
    """The device ComfyUI runs models on (its ``--cpu``/GPU choice); outside ComfyUI CUDA when present, else CPU."""
    if _model_management is not None:
        return _model_management.get_torch_device()
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> Any:
    """Where idle models are parked: ComfyUI's offload device for diffusion models; CPU outside ComfyUI."""
    if _model_management is not None:
        return _model_management.unet_offload_device()
    import torch

    return torch.device("cpu")


def free_memory() -> int | None:
    """Free bytes on the device models run on: ComfyUI's own figure (``get_free_memory``, which counts the memory
    its cache can hand back; host memory under ``--cpu``); outside ComfyUI a CUDA device's, ``None`` on a CPU."""
    if _model_management is not None:
        return int(_model_management.get_free_memory(torch_device()))
    from sonic_core.device import free_memory as device_free_memory

    return device_free_memory(torch_device())


def soft_empty_cache() -> None:
    """Return cached accelerator memory to the driver (ComfyUI's soft_empty_cache; torch's outside ComfyUI)."""
    if _model_management is not None:
        _model_management.soft_empty_cache()
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _module_tensors(value: Any, attribute: str, name: str, kind: str, source: str) -> dict[str, Any]:
    module = getattr(value, attribute, None)
    if not callable(getattr(module, "state_dict", None)):
        raise SonicInputError(f"{name}: a {type(value).__name__} is not a ComfyUI {kind}; connect the {kind} "
                              f"output of {source}")
    return dict(module.state_dict(keep_vars=True))


def vae_tensors(vae: Any) -> dict[str, Any]:
    """The parameters of a ComfyUI ``VAE`` (``comfy.sd.VAE``) by name: the very tensors its first stage model holds
    (SVD's: the single file's names without ``first_stage_model.``), not copies."""
    return _module_tensors(vae, "first_stage_model", "vae", "VAE", "Image Only Checkpoint Loader (img2vid model)")


def clip_vision_tensors(clip_vision: Any) -> dict[str, Any]:
    """The parameters of a ComfyUI ``CLIP_VISION`` (``comfy.clip_vision.ClipVisionModel``) by name: the very tensors
    its model holds (transformers ``CLIPVisionModelWithProjection`` names), not copies."""
    return _module_tensors(clip_vision, "model", "clip_vision", "CLIP_VISION",
                           "Image Only Checkpoint Loader (img2vid model)")


class ManagedModel:
    """A model whose placement ComfyUI's model management owns.

    Inside ComfyUI the module is wrapped in ``comfy.model_patcher.ModelPatcher``: :meth:`load` goes through
    ``load_models_gpu`` (which evicts other models when memory is short), and ComfyUI's own "free model memory"
    (``POST /free``, or loading a bigger model) unloads it to the offload device, so nothing leaks across runs.
    Outside ComfyUI, :meth:`load` just moves the module to :func:`torch_device`.
    """

    def __init__(self, module: Any, load_device: Any = None) -> None:
        self.module = module
        self.load_device = load_device if load_device is not None else torch_device()
        self._patcher = None
        if _model_management is not None:
            model_patcher = importlib.import_module("comfy.model_patcher")
            self._patcher = model_patcher.ModelPatcher(module, load_device=self.load_device,
                                                       offload_device=offload_device())

    def load(self) -> Any:
        """Put the model on its compute device (call before each use); returns that device."""
        if self._patcher is None:
            self.module.to(self.load_device)
            return self.load_device
        _model_management.load_models_gpu([self._patcher])
        return self._patcher.load_device

    def is_loaded(self) -> bool:
        """Whether ComfyUI counts the model as loaded (outside ComfyUI: whether it sits on the compute device)."""
        if self._patcher is None:
            return next(self.module.parameters()).device.type == self.load_device.type
        return any(loaded.model is self._patcher for loaded in _model_management.current_loaded_models)
