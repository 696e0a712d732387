"""The pipeline nodes: Sonic Loader (SONIC_MODEL), Sonic PreData (SONIC_PREDATA + crop preview), Sonic Sampler.

PreData prepares the inputs with the engine's one preparation step (:func:`sonic_core.inputs.prepare_inputs`) and
the Sampler runs the engine's one pipeline (:class:`sonic_core.pipeline.SonicPipeline`), collecting its frame chunks
because ComfyUI's IMAGE output is a tensor of every frame. The networks live under ComfyUI's model management
(:class:`.comfy_compat.ManagedModel`), so ComfyUI's "free model memory" unloads them and nothing is pinned across
runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from sonic_core import node_ids
from sonic_core.audio import FIT_MODES, Speech, speech_from_waveform
from sonic_core.device import DTYPES, default_dtype, parse_device, parse_dtype
from sonic_core.errors import SonicInputError, SonicWeightsError
from sonic_core.face.crop import Reference
from sonic_core.inputs import PreparedInputs, prepare_inputs
from sonic_core.models.bundle import ModelConfigs, SonicModels
from sonic_core.pipeline import SonicPipeline
from sonic_core.post.chain import DEFAULT_COLOUR_STRENGTH, DEFAULT_DEFLICKER, PostOptions, StreamSteps
from sonic_core.post.paste import DEFAULT_FEATHER, MAX_FEATHER
from sonic_core.sampling import SamplerOptions, calls_per_step
from sonic_core.settings import AUTO, SonicSettings
from sonic_core.weights import WeightFiles, default_weights_dir, locate_weights
from sonic_core.weights.layout import COMPONENTS, RIFE_WEIGHTS, SearchRoot, assets_dir
from sonic_core.weights.loader import load_rife, load_sonic_models
from sonic_core.weights.shared import shared_image_encoder, shared_vae
from sonic_core.weights.tiny import tiny_models

from .audio import audio_value
from .comfy_compat import (ManagedModel, ProgressBar, cancel_check, checkpoint_dirs, clip_vision_tensors,
                           offload_device, sonic_model_dirs, throw_if_interrupted, torch_device, vae_tensors)
from .post import image_to_frames
from .schema import NodeResult, NodeSpec, Param, Result, auto_or_number, build_node

DEMO_WEIGHTS = node_ids.DEMO_WEIGHTS
STANDALONE_PREFIX = "standalone: "
INCOMPLETE_MARK = " (incomplete, missing: "
AUTO_DEVICE = "auto"
YOLOFACE_FILE = "yoloface_v5m.pt"
DEMO_SEED = 0  # the embedded demo weights are drawn from this seed


# --- Sonic Loader -----------------------------------------------------------------------------------------------

def weight_sets() -> dict[str, WeightFiles]:
    """Every place a full weight set may be, by folder: each ``sonic`` folder ComfyUI knows (``models/sonic`` and
    those of ``extra_model_paths.yaml``) with the SVD file from any ``checkpoints`` folder it knows, subfolders
    included; then the standalone weights folder. Complete or not."""
    checkpoints = [Path(folder) for folder in checkpoint_dirs()]
    sets = {folder: locate_weights(comfy_root=SearchRoot.comfy_folders(Path(folder), checkpoints))
            for folder in sonic_model_dirs()}
    sets[STANDALONE_PREFIX + str(default_weights_dir())] = locate_weights(default_weights_dir())
    return sets


def set_label(folder: str, files: WeightFiles) -> str:
    """The weights list entry of a set: its folder, and for an incomplete set the files it lacks and the files found
    for them but not used (why is said when the set is chosen)."""
    missing = files.missing_files()
    if not missing:
        return folder
    passed_over = [r.path.name for r in files.rejected if r.component in files.missing()]
    note = f"; not used: {', '.join(passed_over)}" if passed_over else ""
    return f"{folder}{INCOMPLETE_MARK}{', '.join(missing)}{note})"


def _listed(files: WeightFiles) -> bool:
    """A complete set, or an incomplete one of which something was found (an empty folder is not listed)."""
    return not files.missing() or any(getattr(files, c) is not None for c in COMPONENTS)


def weights_choices() -> list[str]:
    """The demo model, every complete weight set, then every partly present one with what it lacks (choosing one
    fails with the missing files and where each goes)."""
    sets = [(folder, files) for folder, files in weight_sets().items() if _listed(files)]
    ordered = sorted(sets, key=lambda item: bool(item[1].missing()))
    return [DEMO_WEIGHTS, *(set_label(folder, files) for folder, files in ordered)]


def device_choices() -> list[str]:
    names = [AUTO_DEVICE, "cpu"]
    names += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(device: str) -> torch.device:
    if device == AUTO_DEVICE:
        return torch.device(torch_device())
    return parse_device(device)


@dataclass
class SonicModel:
    """The ``SONIC_MODEL`` value: the networks, their dtype, and their placement under ComfyUI's management."""

    models: SonicModels
    dtype: torch.dtype
    managed: ManagedModel
    label: str
    yoloface: Path | None = None

    def load(self) -> torch.device:
        """Put the networks on their compute device (through ComfyUI's model management) and return it."""
        return torch.device(self.managed.load())


def _as_module(models: SonicModels) -> torch.nn.ModuleDict:
    """The networks as one module (what ComfyUI's ModelPatcher manages); the same objects, moved in place."""
    return torch.nn.ModuleDict(models.modules())


def demo_rife_path() -> Path | None:
    """RIFE's ``flownet.pkl`` for the demo model: from a ``models/sonic`` folder, else the fetched test assets."""
    candidates = [Path(folder) / RIFE_WEIGHTS for folder in sonic_model_dirs()] + [assets_dir() / RIFE_WEIGHTS]
    return next((path for path in candidates if path.is_file()), None)


def _demo_models(dtype: torch.dtype, shared: dict[str, torch.nn.Module]) -> SonicModels:
    rife_path = demo_rife_path()
    return tiny_models(DEMO_SEED, dtype, rife=load_rife(rife_path) if rife_path is not None else None,
                       shared=shared)


def _real_models(label: str, dtype: torch.dtype,
                 shared: dict[str, torch.nn.Module]) -> tuple[SonicModels, Path | None]:
    sets = weight_sets()
    files = {set_label(folder, found): found for folder, found in sets.items()}.get(label) or sets.get(label)
    if files is None:
        incomplete = "; ".join(f"{name}: {found.explain()}" for name, found in sets.items() if found.missing())
        raise SonicWeightsError(f"weights {label!r} are not a weight set this ComfyUI knows ({DEMO_WEIGHTS!r} or "
                                f"{', '.join(map(repr, sets))}): pick one from the list"
                                + (f" (not offered, incomplete: {incomplete})" if incomplete else ""))
    models = load_sonic_models(files, offload_device(), dtype, interpolate=files.rife is not None, shared=shared)
    return models, files.yoloface


def shared_svd_parts(vae: Any = None, clip_vision: Any = None) -> dict[str, torch.nn.Module]:
    """Our VAE / CLIP image encoder (SVD's published shapes) on the tensors of a connected ComfyUI VAE /
    CLIP_VISION: one copy in memory. With the demo model, the tiny networks are sized to them."""
    build = ModelConfigs.official().factories()
    shared = {}
    if vae is not None:
        shared["vae"] = shared_vae(build["vae"], vae_tensors(vae), "VAE input")
    if clip_vision is not None:
        shared["image_encoder"] = shared_image_encoder(build["image_encoder"], clip_vision_tensors(clip_vision),
                                                       "CLIP_VISION input")
    return shared


def sonic_loader(weights: str = DEMO_WEIGHTS, dtype: str = AUTO, device: str = AUTO_DEVICE, vae: Any = None,
                 clip_vision: Any = None) -> NodeResult:
    load_device = resolve_device(device)
    torch_dtype = default_dtype(load_device) if dtype == AUTO else parse_dtype(dtype)
    if load_device.type == "cpu" and torch_dtype == torch.float16:
        torch_dtype = torch.float32  # half-precision convolutions on a CPU are slow or missing: fp32 there
    shared = shared_svd_parts(vae, clip_vision)
    if weights == DEMO_WEIGHTS:
        models, yoloface = _demo_models(torch_dtype, shared), None
    else:
        models, yoloface = _real_models(weights, torch_dtype, shared)
    models.to(offload_device(), torch_dtype)
    model = SonicModel(models, torch_dtype, ManagedModel(_as_module(models), load_device), weights, yoloface)
    return NodeResult((model,))


SONIC_LOADER = NodeSpec(
    node_id=node_ids.LOADER, display_name="Sonic Loader", category="Sonic/model",
    description="Loads the Sonic networks (UNet, audio adapters, whisper-tiny, SVD's VAE and CLIP image encoder, "
                "RIFE) from a weight set found in the sonic and checkpoints model folders, or the embedded demo "
                "model (tiny and untrained: noise-like videos, no download). A VAE and CLIP_VISION connected from "
                "the core Image Only Checkpoint Loader are used without a second copy. Memory is managed by "
                "ComfyUI.",
    inputs=(
        Param("weights", "COMBO", default=DEMO_WEIGHTS, options=weights_choices,
              tooltip="a weight set found in a sonic folder ComfyUI knows (models/sonic, or one added by "
                      "extra_model_paths.yaml) with svd_xt.safetensors anywhere in a checkpoints folder, or the "
                      "demo model. An entry marked 'incomplete, missing: ...' names the files to add"),
        Param("dtype", "COMBO", default=AUTO, options=(AUTO, *DTYPES),
              tooltip="UNet, VAE and CLIP precision: auto = fp16 on a GPU, fp32 on a CPU (where fp16 also runs as "
                      "fp32); whisper, adapters and RIFE stay fp32"),
        Param("device", "COMBO", default=AUTO_DEVICE, options=device_choices,
              tooltip="auto = ComfyUI's compute device"),
        Param("vae", "VAE", optional=True,
              tooltip="optional: the VAE of an Image Only Checkpoint Loader (img2vid model) that loaded "
                      "svd_xt.safetensors; used as it is (its weights stay in memory once, in its own precision)"),
        Param("clip_vision", "CLIP_VISION", optional=True,
              tooltip="optional: the CLIP_VISION of the same loader; used as it is. With both connected the "
                      "weight set needs no SVD file of its own"),
    ),
    outputs=(Result("model", "SONIC_MODEL"),),
)


# --- Sonic PreData ----------------------------------------------------------------------------------------------

@dataclass
class PreData:
    """The ``SONIC_PREDATA`` value: the prepared inputs (speech fitted to the duration, portrait, face) and the
    settings chosen here (min_resolution, expand_ratio, duration)."""

    inputs: PreparedInputs
    settings: SonicSettings


def image_to_pil(image: torch.Tensor) -> Image.Image:
    """The first image of a ComfyUI IMAGE batch ``[B, H, W, 3]`` in [0, 1] as an RGB PIL image."""
    pixels = (image_to_frames(image, "image")[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def pil_to_image(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image as a one-image ComfyUI IMAGE ``[1, H, W, 3]`` in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


def crop_preview(reference: Reference) -> Image.Image:
    """The crop the model will see, the face mask tinted red and the face box outlined."""
    crop = reference.image.convert("RGB")
    x1, y1, x2, y2 = reference.crop_box
    scale_x, scale_y = crop.width / (x2 - x1), crop.height / (y2 - y1)
    mask = reference.face_mask[0].numpy()[..., None]
    tinted = np.asarray(crop, dtype=np.float32) * (1 - 0.35 * mask) + np.array([255.0, 0, 0]) * 0.35 * mask
    preview = Image.fromarray(tinted.round().clip(0, 255).astype(np.uint8), "RGB")
    box = reference.mask_box
    ImageDraw.Draw(preview).rectangle((box.x1 * scale_x, box.y1 * scale_y, box.x2 * scale_x, box.y2 * scale_y),
                                      outline=(0, 255, 0), width=max(2, crop.width // 128))
    return preview


def predata_report(predata: PreData) -> str:
    inputs, settings = predata.inputs, predata.settings
    ref, box = inputs.reference, inputs.reference.face_box
    ratio = f"{ref.expand_ratio:.3f}" + (" (auto)" if settings.expand_ratio == AUTO else "")
    return (f"face box x={box.x1:.0f} y={box.y1:.0f} w={box.width:.0f} h={box.height:.0f} (score {box.score:.2f}), "
            f"expand_ratio {ratio}, crop {ref.crop_box} -> {ref.image.width}x{ref.image.height}, "
            f"audio {inputs.speech.seconds:.3f} s -> {inputs.num_frames} generated frames")


def yoloface_path() -> Path | None:
    """yoloface from a ``models/sonic`` folder when it is there (else the engine uses OpenCV's Haar cascade)."""
    return next((Path(folder) / YOLOFACE_FILE for folder in sonic_model_dirs()
                 if (Path(folder) / YOLOFACE_FILE).is_file()), None)


def sonic_predata(image: torch.Tensor, audio: dict[str, Any], duration: float = 0.0, min_resolution: int = 512,
                  expand_ratio: str = AUTO, fit: str = "error") -> NodeResult:
    waveform, rate = audio_value(audio)
    settings = SonicSettings(min_resolution=min_resolution, expand_ratio=auto_or_number(expand_ratio, "expand_ratio"),
                             duration=None if duration == 0 else duration)
    speech = speech_from_waveform(waveform, rate, settings.duration, fit, "AUDIO input")
    inputs = prepare_inputs(image_to_pil(image), speech, settings, yoloface=yoloface_path())
    predata = PreData(inputs, settings)
    report = predata_report(predata)
    return NodeResult((predata, pil_to_image(crop_preview(inputs.reference)), report), ui={"text": [report]})


def _knob_param(name: str, **overrides: Any) -> Param:
    """A widget whose default and range come from :class:`SonicSettings` (one place for every default)."""
    knob = SonicSettings.knob(name)
    kind = "INT" if knob.type is int else "FLOAT"
    values = {"default": knob.default, "min": knob.min, "max": knob.max, "step": knob.step, "tooltip": knob.help,
              **overrides}
    return Param(name, kind, **values)


SONIC_PREDATA = NodeSpec(
    node_id=node_ids.PREDATA, display_name="Sonic PreData", category="Sonic/model",
    description="Prepares a portrait and a speech track: finds the face, crops a square around it (expand_ratio), "
                "builds the face mask, resizes to min_resolution and checks the audio's duration. Shows the crop.",
    inputs=(
        Param("image", "IMAGE", tooltip="the portrait (the first image of the batch is used)"),
        Param("audio", "AUDIO", tooltip="the speech"),
        _knob_param("min_resolution"),
        Param("expand_ratio", "STRING", default=AUTO, tooltip=SonicSettings.knob("expand_ratio").help),
        Param("fit", "COMBO", default="error", options=FIT_MODES,
              tooltip="when duration and audio differ: error, trim longer audio, or pad shorter audio with silence"),
        Param("duration", "FLOAT", optional=True, default=0.0, min=0.0, max=SonicSettings.knob("duration").max,
              step=0.01, tooltip="seconds the video lasts; 0 = the whole audio. Must match the audio within one "
                                 "frame (0.04 s) unless fit is trim or pad"),
    ),
    outputs=(Result("predata", "SONIC_PREDATA"), Result("crop_preview", "IMAGE", "the crop, mask tinted, face boxed"),
             Result("report", "STRING", "face box, expand ratio, crop, frames")),
)


# --- Sonic Sampler ----------------------------------------------------------------------------------------------

def speech_audio(speech: Speech, seconds: float) -> dict[str, Any]:
    """The speech as a ComfyUI AUDIO (its own rate and channels) cut to ``seconds``, the video's length."""
    waveform = torch.from_numpy(speech.waveform[:, :int(round(seconds * speech.sample_rate))].copy())
    return {"waveform": waveform[None], "sample_rate": speech.sample_rate}


@torch.no_grad()
def sonic_sampler(model: SonicModel, predata: PreData, steps: int = 25, dynamic_scale: float = 1.0,
                  motion_scale: float = 1.0, seed: int = 72589, audio_guidance: float = 7.5,
                  appearance_guidance: float = 2.0, fps: float = 25.0, deflicker: bool = DEFAULT_DEFLICKER,
                  colour_strength: float = DEFAULT_COLOUR_STRENGTH, paste_back: bool = False,
                  paste_feather: float = DEFAULT_FEATHER) -> NodeResult:
    if not isinstance(model, SonicModel) or not isinstance(predata, PreData):
        raise SonicInputError("model / predata: connect a Sonic Loader and a Sonic PreData node")
    settings = predata.settings.replace(steps=steps, dynamic_scale=dynamic_scale, motion_scale=motion_scale,
                                        seed=seed, audio_guidance=audio_guidance,
                                        appearance_guidance=appearance_guidance, fps=fps)
    inputs = predata.inputs
    options = PostOptions(deflicker=deflicker, colour_strength=colour_strength, paste_back=paste_back,
                          paste_feather=paste_feather)
    pipeline = SonicPipeline(model.models, model.load(), model.dtype)
    post = StreamSteps(options, pipeline.output_fps(settings), inputs.reference)
    progress = ProgressBar(settings.steps * calls_per_step(inputs.num_frames, SamplerOptions.from_settings(settings)))
    chunks = pipeline(inputs, settings, on_step=lambda done, total: progress.update_absolute(done, total),
                      should_stop=cancel_check)
    frames = torch.cat(list(post.run(chunk.cpu() for chunk in chunks)))
    throw_if_interrupted()
    x1, y1, x2, y2 = inputs.reference.crop_box
    lines = [f"{name}: {json.dumps(step)}" for name, step in post.report.items()]
    return NodeResult((frames.permute(0, 2, 3, 1).contiguous(), settings.fps,
                       speech_audio(inputs.speech, len(frames) / settings.fps), f"{x1},{y1},{x2},{y2}"),
                      ui={"text": lines} if lines else None)


SONIC_SAMPLER = NodeSpec(
    node_id=node_ids.SAMPLER, display_name="Sonic Sampler", category="Sonic/model",
    description="Generates the talking-head frames: audio and image conditioning, sliding-window 3-way guided "
                "sampling (progress: steps x windows), VAE decode, then RIFE to the requested frame rate. Outputs "
                "the frames, their rate and the audio cut to the video's length.",
    inputs=(
        Param("model", "SONIC_MODEL"),
        Param("predata", "SONIC_PREDATA"),
        _knob_param("steps"),
        _knob_param("dynamic_scale"),
        _knob_param("motion_scale"),
        Param("seed", "INT", default=SonicSettings.knob("seed").default, min=0, max=2**64 - 1, step=1,
              tooltip=SonicSettings.knob("seed").help),
        _knob_param("audio_guidance"),
        _knob_param("appearance_guidance"),
        _knob_param("fps"),
        Param("deflicker", "BOOLEAN", optional=True, default=DEFAULT_DEFLICKER,
              tooltip="remove brightness strobing (a temporal filter on per-frame gains; 1.5 s look-ahead)"),
        Param("colour_strength", "FLOAT", optional=True, default=DEFAULT_COLOUR_STRENGTH, min=0.0, max=1.0, step=0.05,
              tooltip="match each frame's colours to the portrait (off the mouth) for clips whose colours drift; "
                      "0 = off (on a moving head without drift it shifts the colours slightly)"),
        Param("paste_back", "BOOLEAN", optional=True, default=False,
              tooltip="paste the generated face back into the whole original image: the frames get its size"),
        Param("paste_feather", "FLOAT", optional=True, default=DEFAULT_FEATHER, min=0.0, max=MAX_FEATHER, step=0.01,
              tooltip="paste-back blend ramp as a share of the crop's side; 0 = hard edge"),
    ),
    outputs=(Result("images", "IMAGE", "the frames [F, H, W, 3] (the original's size with paste_back)"),
             Result("fps", "FLOAT"), Result("audio", "AUDIO", "the input audio cut to the video's length"),
             Result("box", "STRING", "the crop box in the original portrait, x1,y1,x2,y2 (where paste_back puts "
                                     "the frames)")),
)

SonicLoader = build_node(SONIC_LOADER, sonic_loader)
SonicPreData = build_node(SONIC_PREDATA, sonic_predata)
SonicSampler = build_node(SONIC_SAMPLER, sonic_sampler)

NODES = [SonicLoader, SonicPreData, SonicSampler]
