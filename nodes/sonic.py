"""The pipeline nodes: Sonic Loader (SONIC_MODEL), Sonic PreData (SONIC_PREDATA + crop preview), the Samplers.

PreData prepares the inputs with the engine's one preparation step (:func:`sonic_core.inputs.prepare_inputs`) and
both Samplers run the engine's one pipeline (:class:`sonic_core.pipeline.SonicPipeline`): Sonic Sampler collects its
frame chunks, because ComfyUI's IMAGE output is a tensor of every frame; Sonic Sampler (to video) hands them to the
engine's one encoder (:func:`sonic_core.render.render_video`) as they come, so host memory stays flat in the clip's
length, and outputs a core VIDEO. The networks live under ComfyUI's model management
(:class:`.comfy_compat.ManagedModel`), so ComfyUI's "free model memory" unloads them and nothing is pinned across
runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

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
from sonic_core.memory import MemoryPlan, plan_memory
from sonic_core.pipeline import SonicPipeline, memory_job
from sonic_core.post.chain import DEFAULT_COLOUR_STRENGTH, DEFAULT_DEFLICKER, PostOptions, StreamSteps
from sonic_core.post.paste import DEFAULT_FEATHER, MAX_FEATHER
from sonic_core.render import render_video
from sonic_core.sampling import SamplerOptions, calls_per_step
from sonic_core.settings import AUTO, SonicSettings
from sonic_core.weights import WeightFiles, default_weights_dir, locate_weights
from sonic_core.weights.layout import COMPONENTS, RIFE_WEIGHTS, SearchRoot, assets_dir
from sonic_core.weights.loader import load_rife, load_sonic_models
from sonic_core.weights.shared import shared_image_encoder, shared_vae
from sonic_core.weights.tiny import tiny_models

from .audio import audio_value
from .comfy_compat import (ManagedModel, ProgressBar, cancel_check, checkpoint_dirs, clip_vision_tensors,
                           free_memory, io, note_output, offload_device, sonic_model_dirs, throw_if_interrupted,
                           torch_device, vae_tensors, video_from_file)
from .post import image_to_frames
from .schema import auto_or_number, knob_input, refusal
from .video import output_path, video_preview

DEMO_WEIGHTS = node_ids.DEMO_WEIGHTS
STANDALONE_PREFIX = "standalone: "
INCOMPLETE_MARK = " (incomplete, missing: "
AUTO_DEVICE = "auto"
YOLOFACE_FILE = "yoloface_v5m.pt"
DEMO_SEED = 0  # the embedded demo weights are drawn from this seed
STREAMED_PREFIX = "sonic/SonicSampler"  # file names of Sonic Sampler (to video) in ComfyUI's temp folder


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

    @property
    def cost_model(self) -> str:
        """The counts the memory planner uses: the tiny model's for the demo weights alone, else the official."""
        return "tiny" if self.label == DEMO_WEIGHTS and not self.models.shared else "sonic"

    def bytes_on(self, device: torch.device) -> int:
        """Bytes of the networks' tensors on ``device`` (ComfyUI's free-memory figure excludes them)."""
        return sum(t.numel() * t.element_size() for module in self.models.modules().values()
                   for t in (*module.parameters(), *module.buffers()) if t.device == device)


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


def weight_fingerprint(weights: str) -> tuple:
    """Modification time and size of every file of the chosen weight set (the demo model: of its RIFE file)."""
    if weights == DEMO_WEIGHTS:
        paths = [demo_rife_path()]
    else:
        sets = weight_sets()
        files = {set_label(folder, found): found for folder, found in sets.items()}.get(weights) or sets.get(weights)
        paths = [getattr(files, name) for name in COMPONENTS] if files is not None else []
    stats = []
    for path in (p for p in paths if p is not None):
        for file in sorted([path] if path.is_file() else path.rglob("*") if path.is_dir() else []):
            if file.is_file():
                stat = file.stat()
                stats.append((str(file), stat.st_mtime_ns, stat.st_size))
    return weights, tuple(stats)


class SonicLoader(io.ComfyNode):
    """Sonic Loader: the networks of a weight set (or the demo model) under ComfyUI's model management."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_ids.LOADER, display_name="Sonic Loader", category="Sonic/model",
            description="Loads the Sonic networks (UNet, audio adapters, whisper-tiny, SVD's VAE and CLIP image "
                        "encoder, RIFE) from a weight set found in the sonic and checkpoints model folders, or the "
                        "embedded demo model (tiny and untrained: noise-like videos, no download, for trying "
                        "graphs). A VAE and CLIP_VISION connected from the core Image Only Checkpoint Loader are "
                        "used without a second copy. Memory is managed by ComfyUI: 'free model memory' unloads it. "
                        "A weight file replaced on disk is loaded again on the next run.",
            inputs=[
                io.Combo.Input("weights", options=weights_choices(), default=DEMO_WEIGHTS,
                               tooltip="a weight set found in a sonic folder ComfyUI knows (models/sonic, or one "
                                       "added by extra_model_paths.yaml) with svd_xt.safetensors anywhere in a "
                                       "checkpoints folder, or the demo model. An entry marked 'incomplete, "
                                       "missing: ...' names the files to add"),
                io.Combo.Input("dtype", options=[AUTO, *DTYPES], default=AUTO,
                               tooltip="UNet, VAE and CLIP precision: auto = fp16 on a GPU, fp32 on a CPU (where "
                                       "fp16 also runs as fp32); whisper, adapters and RIFE stay fp32"),
                io.Combo.Input("device", options=device_choices(), default=AUTO_DEVICE,
                               tooltip="where the networks run: auto = ComfyUI's compute device"),
                io.Vae.Input("vae", optional=True,
                             tooltip="optional: the VAE of an Image Only Checkpoint Loader (img2vid model) that "
                                     "loaded svd_xt.safetensors; used as it is (its weights stay in memory once, "
                                     "in its own precision)"),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="optional: the CLIP_VISION of the same loader; used as it is. With both "
                                            "connected the weight set needs no SVD file of its own"),
            ],
            outputs=[io.Custom("SONIC_MODEL").Output(display_name="model",
                                                     tooltip="the loaded networks, for the Sonic Samplers")],
        )

    @classmethod
    def fingerprint_inputs(cls, weights: str = DEMO_WEIGHTS, dtype: str = AUTO, device: str = AUTO_DEVICE,
                           vae: Any = None, clip_vision: Any = None) -> Any:
        return weight_fingerprint(weights), dtype, device

    @classmethod
    def execute(cls, weights: str = DEMO_WEIGHTS, dtype: str = AUTO, device: str = AUTO_DEVICE, vae: Any = None,
                clip_vision: Any = None) -> io.NodeOutput:
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
        return io.NodeOutput(model)


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


class SonicPreData(io.ComfyNode):
    """Sonic PreData: the portrait's face crop and the speech, prepared once for the Sampler."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_ids.PREDATA, display_name="Sonic PreData", category="Sonic/model",
            description="Prepares a portrait and a speech track: finds the face, crops a square around it "
                        "(expand_ratio: the margin around the face, 0.15-0.2 for close-ups, 'auto' from the face's "
                        "share of the picture), builds the face mask, resizes the crop so its short side is "
                        "min_resolution pixels (256-1280, a multiple of 64) and checks the audio's duration "
                        "(seconds). Shows the crop with the mask tinted and the face boxed.",
            inputs=[
                io.Image.Input("image", tooltip="the portrait, one face (the first image of the batch is used)"),
                io.Audio.Input("audio", tooltip="the speech (any rate and channels; used as 16 kHz mono)"),
                knob_input("min_resolution", "short side of the generated frames in pixels (256-1280, multiple of "
                                             "64); time and memory grow with its square"),
                io.String.Input("expand_ratio", default=AUTO, tooltip=SonicSettings.knob("expand_ratio").help),
                io.Combo.Input("fit", options=list(FIT_MODES), default="error",
                               tooltip="when duration and audio differ: error, trim longer audio, or pad shorter "
                                       "audio with silence"),
                io.Float.Input("duration", default=0.0, min=0.0, max=SonicSettings.knob("duration").max, step=0.01,
                               optional=True,
                               tooltip="seconds the video lasts; 0 = the whole audio. Must match the audio within "
                                       "one frame (0.04 s) unless fit is trim or pad; at least 0.08 s"),
            ],
            outputs=[
                io.Custom("SONIC_PREDATA").Output(display_name="predata",
                                                  tooltip="the prepared face crop, mask and speech, for the Sonic "
                                                          "Samplers"),
                io.Image.Output(display_name="crop_preview", tooltip="the crop, mask tinted red, face boxed green"),
                io.String.Output(display_name="report", tooltip="face box, expand ratio, crop and frame count"),
            ],
        )

    @classmethod
    def validate_inputs(cls, duration: float = 0.0) -> bool | str:
        """A duration of 0 (the whole audio) or one the model can make, 0.08 s (one frame) to an hour. ComfyUI
        leaves the range check of an input named here to this method."""
        return refusal(lambda: SonicSettings(duration=None if duration == 0 else duration))

    @classmethod
    def execute(cls, image: torch.Tensor, audio: dict[str, Any], duration: float = 0.0, min_resolution: int = 512,
                expand_ratio: str = AUTO, fit: str = "error") -> io.NodeOutput:
        waveform, rate = audio_value(audio)
        settings = SonicSettings(min_resolution=min_resolution,
                                 expand_ratio=auto_or_number(expand_ratio, "expand_ratio"),
                                 duration=None if duration == 0 else duration)
        speech = speech_from_waveform(waveform, rate, settings.duration, fit, "AUDIO input")
        inputs = prepare_inputs(image_to_pil(image), speech, settings, yoloface=yoloface_path())
        predata = PreData(inputs, settings)
        report = predata_report(predata)
        return io.NodeOutput(predata, pil_to_image(crop_preview(inputs.reference)), report, ui={"text": [report]})


# --- Sonic Sampler ----------------------------------------------------------------------------------------------

def speech_audio(speech: Speech, seconds: float) -> dict[str, Any]:
    """The speech as a ComfyUI AUDIO (its own rate and channels) cut to ``seconds``, the video's length."""
    waveform = torch.from_numpy(speech.waveform[:, :int(round(seconds * speech.sample_rate))].copy())
    return {"waveform": waveform[None], "sample_rate": speech.sample_rate}


def sampler_inputs() -> list[Any]:
    """The inputs both Samplers share (graph pricing reads these names)."""
    seed = SonicSettings.knob("seed")
    return [
        io.Custom("SONIC_MODEL").Input("model", tooltip="from Sonic Loader"),
        io.Custom("SONIC_PREDATA").Input("predata", tooltip="from Sonic PreData"),
        knob_input("steps", "sampler steps: below 10 blurry, above 30 little gain; time grows linearly with them"),
        knob_input("dynamic_scale"),
        knob_input("motion_scale"),
        io.Int.Input("seed", default=seed.default, min=0, max=2**64 - 1, step=1, control_after_generate=True,
                     tooltip="noise seed: the same seed and inputs give the same video"),
        knob_input("audio_guidance", "how strongly the mouth follows the speech (classifier-free guidance, 1-20; "
                                     "7.5 by default)"),
        knob_input("appearance_guidance", "how strongly the face keeps the portrait's look (classifier-free "
                                          "guidance, 1-20; 2.0 by default)"),
        knob_input("fps", "frames per second: 12.5 as generated, 25 with RIFE (a Loader whose weights have it); "
                          "other rates are interpolated from the whole clip"),
        io.Boolean.Input("device_noise", default=False, optional=True,
                         tooltip=SonicSettings.knob("device_noise").help),
    ]


def post_inputs() -> list[Any]:
    """The studio steps both Samplers run on the generated frames as they stream; each default is on only where
    the quality measurements showed it safe (README, "Post-processing")."""
    return [
        io.Boolean.Input("deflicker", default=DEFAULT_DEFLICKER, optional=True,
                         tooltip="remove brightness strobing (a temporal filter on per-frame gains; 1.5 s "
                                 "look-ahead)"),
        io.Float.Input("colour_strength", default=DEFAULT_COLOUR_STRENGTH, min=0.0, max=1.0, step=0.05,
                       optional=True,
                       tooltip="undo a colour drift: match each frame's colours to the portrait registered to it "
                               "(off the mouth); 0 = off"),
        io.Boolean.Input("paste_back", default=False, optional=True,
                         tooltip="paste the generated face back into the whole original image: the frames get its "
                                 "size"),
        io.Float.Input("paste_feather", default=DEFAULT_FEATHER, min=0.0, max=MAX_FEATHER, step=0.01, optional=True,
                       tooltip="paste-back blend ramp as a share of the crop's side; 0 = hard edge"),
    ]


def box_output() -> Any:
    return io.String.Output(display_name="box", tooltip="the crop box in the original portrait, x1,y1,x2,y2 (where "
                                                        "paste_back puts the frames)")


def crop_box_text(predata: PreData) -> str:
    x1, y1, x2, y2 = predata.inputs.reference.crop_box
    return f"{x1},{y1},{x2},{y2}"


@dataclass
class Generation:
    """What a Sampler runs: the pipeline on the model's device, the settings, the studio steps, the memory plan under
    ComfyUI's free memory and the progress callbacks of ComfyUI's one progress bar (steps x windows UNet calls, then
    the decoded chunks)."""

    pipeline: SonicPipeline
    settings: SonicSettings
    post: PostOptions
    memory: MemoryPlan
    on_step: Callable[[int, int], None]
    on_decode: Callable[[int, int], None]


def start_generation(model: SonicModel, predata: PreData, inputs: dict[str, Any]) -> Generation:
    """A Sampler's widgets (:func:`sampler_inputs` and :func:`post_inputs`) as a :class:`Generation`: PreData's
    settings with the Sampler's knobs (one left out keeps PreData's value) and the studio steps' options."""
    if not isinstance(model, SonicModel) or not isinstance(predata, PreData):
        raise SonicInputError("model / predata: connect a Sonic Loader and a Sonic PreData node")
    post_names = [item.id for item in post_inputs()]
    known = [item.id for item in sampler_inputs() if item.id not in ("model", "predata")] + post_names
    unknown = sorted(set(inputs) - set(known))
    if unknown:
        raise SonicInputError(f"unknown Sampler input(s) {unknown}: the Samplers take {known}")
    post = PostOptions(**{name: value for name, value in inputs.items() if name in post_names})
    settings = predata.settings.replace(**{name: value for name, value in inputs.items() if name not in post_names})
    device = model.load()
    free = free_memory()
    budget = None if free is None else free + model.bytes_on(device)  # ComfyUI's figure, plus what we hold
    plan = plan_memory(memory_job(predata.inputs, settings, model.dtype, model.cost_model), budget)
    pipeline = SonicPipeline(model.models, device, model.dtype)
    calls = settings.steps * calls_per_step(predata.inputs.num_frames, SamplerOptions.from_settings(settings))
    chunks = -(-predata.inputs.num_frames // settings.decode_chunk_size)
    progress = ProgressBar(calls + chunks)
    return Generation(pipeline, settings, post, plan, lambda done, _: progress.update_absolute(done, calls + chunks),
                      lambda done, _: progress.update_absolute(calls + done, calls + chunks))


class SonicSampler(io.ComfyNode):
    """Sonic Sampler: the talking-head frames as one IMAGE batch, for graphs that edit frames."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_ids.SAMPLER, display_name="Sonic Sampler", category="Sonic/model",
            description="Generates the talking-head frames: audio and image conditioning, sliding-window 3-way "
                        "guided sampling (progress: steps x windows), VAE decode, then RIFE to the requested frame "
                        "rate. Outputs every frame as one IMAGE batch, their rate, and the audio cut to the "
                        "video's length. The batch holds 12 bytes per pixel (60 s at 512 px and 25 fps is about "
                        "4.7 GB of memory): for a video whose frames are not edited use Sonic Sampler (to video), "
                        "which never holds them.",
            inputs=sampler_inputs() + post_inputs(),
            outputs=[
                io.Image.Output(display_name="images", tooltip="the frames [frames, height, width, 3], values 0-1 "
                                                               "(the original's size with paste_back)"),
                io.Float.Output(display_name="fps", tooltip="frames per second of the images"),
                io.Audio.Output(display_name="audio", tooltip="the input audio cut to the video's length"),
                box_output(),
            ],
        )

    @classmethod
    @torch.no_grad()
    def execute(cls, model: SonicModel, predata: PreData, **widgets: Any) -> io.NodeOutput:
        run = start_generation(model, predata, widgets)
        inputs, fps = predata.inputs, run.settings.fps
        post = StreamSteps(run.post, run.pipeline.output_fps(run.settings), inputs.reference)
        chunks = run.pipeline(inputs, run.settings, memory=run.memory, on_step=run.on_step, should_stop=cancel_check,
                              on_decode=run.on_decode)
        frames = torch.cat(list(post.run(chunk.cpu() for chunk in chunks)))
        throw_if_interrupted()
        lines = [f"{name}: {json.dumps(step)}" for name, step in post.report.items()]
        return io.NodeOutput(frames.permute(0, 2, 3, 1).contiguous(), fps,
                             speech_audio(inputs.speech, len(frames) / fps), crop_box_text(predata),
                             ui={"text": lines} if lines else None)


class SonicSamplerToVideo(io.ComfyNode):
    """Sonic Sampler (to video): the same generation streamed into an MP4, its frames never held together."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_ids.SAMPLER_TO_VIDEO, display_name="Sonic Sampler (to video)", category="Sonic/model",
            description="The Sonic Sampler's generation written straight into an MP4 (h264 + AAC, with the "
                        "speech) chunk by chunk as frames leave the decoder, so memory does not grow with the "
                        "clip's length (at 12.5 fps, or 25 fps with RIFE; other rates retime the whole clip). "
                        "Outputs a core VIDEO: connect Save Video to keep it (the file is copied, not encoded "
                        "again). Use Sonic Sampler instead when frames are edited (Lip-Sync Align, Motion Smooth).",
            inputs=sampler_inputs() + post_inputs(),
            outputs=[io.Video.Output(display_name="video",
                                     tooltip="the talking-head video with its speech (a file in ComfyUI's temp "
                                             "folder until saved)"),
                     box_output()],
        )

    @classmethod
    @torch.no_grad()
    def execute(cls, model: SonicModel, predata: PreData, **widgets: Any) -> io.NodeOutput:
        run = start_generation(model, predata, widgets)
        height, width = predata.inputs.reference.ref_image.shape[-2:]
        path, name, subfolder = output_path(STREAMED_PREFIX, int(width), int(height), "mp4", kind="temp")
        report = render_video(run.pipeline, predata.inputs, path, run.settings, post=run.post, memory=run.memory,
                              on_step=run.on_step, should_stop=cancel_check, on_decode=run.on_decode)
        note_output(path)
        throw_if_interrupted()
        lines = [f"{step}: {json.dumps(value)}" for step, value in report.post.items()]
        preview = video_preview(name, subfolder, "temp", "mp4")
        return io.NodeOutput(video_from_file(path), crop_box_text(predata),
                             ui={**preview, "text": lines} if lines else preview)


NODES = [SonicLoader, SonicPreData, SonicSampler, SonicSamplerToVideo]
