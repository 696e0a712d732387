"""Golden parity: every fixture of ``$SONIC_GOLDEN_DIR/manifest.json`` against our modules, dispatched on ``kind``.

Sizes, constructor arguments and settings are read from each fixture; nothing here names a fixture. Metric per
output tensor: ``max|got − want| / max|want|`` ≤ the manifest's fp32 tolerance. Each output's figure is recorded as
a junit property ``max_rel[OUTPUT]`` and printed (``pytest -s`` or ``-rA`` shows it).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from sonic_testing import golden_dir, golden_manifest

from sonic_core import sampling
from sonic_core.models.attention import downsample_mask, mask_grid
from sonic_core.models.audio_adapters import Audio2BucketModel, AudioProjModel, to_motion_buckets
from sonic_core.models.bundle import SonicModels
from sonic_core.models.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection
from sonic_core.models.unet import SonicUNet
from sonic_core.models.vae import TemporalVAE
from sonic_core.models.whisper import WhisperEncoder, WhisperEncoderConfig
from sonic_core.pipeline import SonicPipeline
from sonic_core.sampling import SamplerOptions
from sonic_core.weights.components import load_unet_state_dict

Outputs = dict[str, tuple[torch.Tensor, torch.Tensor]]  # output name -> (got, want)


def _tolerance() -> float:
    return float(json.loads((golden_dir() / "manifest.json").read_text())["tolerance"]["fp32_max_rel"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()  # fixtures are a few MB


def _pairs(calls: list[dict], run: Callable[[dict], dict[str, torch.Tensor]], outputs: dict) -> Outputs:
    result: Outputs = {}
    for call in calls:
        for name, got in run(call).items():
            result[name] = (got, outputs[name])
    return result


def _audio2token(meta: dict, data: dict) -> Outputs:
    model = AudioProjModel(**meta["constructor"]).eval()
    model.load_state_dict(data["state_dict"], strict=True)
    inputs = data["inputs"]
    return _pairs(meta["calls"], lambda c: {c["output"]: model(*(inputs[a] for a in c["args"]))}, data["outputs"])


def _audio2bucket(meta: dict, data: dict) -> Outputs:
    model = Audio2BucketModel(**meta["constructor"]).eval()
    model.load_state_dict(data["state_dict"], strict=True)
    inputs = data["inputs"]
    computed: dict[str, torch.Tensor] = {}

    def run(call: dict) -> dict[str, torch.Tensor]:
        if "args" in call:
            computed[call["output"]] = model(*(inputs[a] for a in call["args"]))
        else:
            match = re.fullmatch(r"\s*(\w+)\s*\*\s*16\s*\+\s*16\s*", call["expr"])
            assert match, f"unknown expression {call['expr']!r}"
            computed[call["output"]] = to_motion_buckets(computed[match.group(1)])
        return {call["output"]: computed[call["output"]]}

    return _pairs(meta["calls"], run, data["outputs"])


def _unet(meta: dict, data: dict) -> Outputs:
    adapter = meta["ip_adapter"]
    assert len(adapter["num_adapter_embeds"]) == 1, "a Sonic UNet has exactly one audio adapter"
    model = SonicUNet(**meta["constructor"], ip_scale=adapter["scale"][0]).eval()
    load_unet_state_dict(model, data["state_dict"])
    i = data["inputs"]

    def run(call: dict) -> dict[str, torch.Tensor]:
        masked = "ip_adapter_masks" in call["kwargs"].get("cross_attention_kwargs", "")
        out = model(i["sample"], i["timestep"], i["clip_embeds"], i["audio_tokens"], i["added_time_ids"],
                    face_mask=i["face_mask"] if masked else None)
        return {call["output"]: out}

    return _pairs(meta["calls"], run, data["outputs"])


def _mask_downsample(meta: dict, data: dict) -> Outputs:
    def run(call: dict) -> dict[str, torch.Tensor]:
        mask_name, batch, queries, value_dim = call["args"]
        mask = data["inputs"][mask_name]
        rows, cols = mask_grid(mask.shape[-2], mask.shape[-1], queries)
        assert (rows * cols != queries) == call["warned"], f"{call['output']}: grid {rows}x{cols} for {queries}"
        return {call["output"]: downsample_mask(mask, queries).expand(batch, queries, value_dim)}

    return _pairs(meta["calls"], run, data["outputs"])


def _scheduler(meta: dict, data: dict) -> Outputs:
    schedule = sampling.Schedule.from_config(meta["config"])
    inputs, outputs = data["inputs"], data["outputs"]
    result: Outputs = {}
    for name in outputs:
        match = re.fullmatch(r"sigmas_(\d+)", name)
        if match:
            sigmas = sampling.karras_sigmas(int(match.group(1)), schedule)
            result[name] = (sigmas, outputs[name])
            result[f"timesteps_{match.group(1)}"] = (sampling.sigmas_to_timesteps(sigmas),
                                                     outputs[f"timesteps_{match.group(1)}"])
    for call in meta["calls"]:
        expr = call["expr"]
        sigmas = sampling.karras_sigmas(int(re.search(r"set_timesteps\((\d+)\)", expr).group(1)), schedule)
        noise = re.search(r"add_noise\((\w+),\s*(\w+),\s*timesteps\[(\d*):?\d*\]\)", expr)
        if noise:
            clean, eps, index = noise.group(1), noise.group(2), int(noise.group(3) or 0)
            result[call["output"]] = (sampling.add_noise(inputs[clean], inputs[eps], sigmas[index]),
                                      outputs[call["output"]])
            continue
        scaled_in = re.search(r"scale_model_input\((\w+),\s*timesteps\[(\d+)\]\)", expr)
        step = re.search(r"step\((\w+),\s*timesteps\[(\d+)\],\s*(\w+)\)", expr)
        assert scaled_in and step, f"unknown scheduler call {expr!r}"
        scaled_name, prev_name = call["output"]
        k = int(scaled_in.group(2))
        result[scaled_name] = (sampling.scale_model_input(inputs[scaled_in.group(1)], sigmas[k]),
                               outputs[scaled_name])
        k = int(step.group(2))
        prev = sampling.euler_step(inputs[step.group(3)], inputs[step.group(1)], sigmas[k], sigmas[k + 1])
        result[prev_name] = (prev, outputs[prev_name])
    return result


def _pipeline_models(meta: dict, data: dict) -> SonicModels:
    cfg, weights = meta["configs"], data["state_dicts"]
    adapter = cfg["ip_adapter"]
    assert len(adapter["num_adapter_embeds"]) == 1, "a Sonic UNet has exactly one audio adapter"
    unet = SonicUNet(**cfg["unet"], ip_scale=adapter["scale"][0])
    load_unet_state_dict(unet, weights["unet"])
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(cfg["image_encoder"]))
    models = SonicModels(unet=unet, vae=TemporalVAE(cfg["vae"]), image_encoder=clip,
                         whisper=WhisperEncoder(WhisperEncoderConfig.from_dict(cfg["whisper"])),
                         audio2token=AudioProjModel(**cfg["audio2token"]),
                         audio2bucket=Audio2BucketModel(**cfg["audio2bucket"]))
    for part, module in [("vae", models.vae), ("image_encoder", models.image_encoder),
                         ("whisper_encoder", models.whisper), ("audio2token", models.audio2token),
                         ("audio2bucket", models.audio2bucket)]:
        module.load_state_dict(weights[part], strict=True)
    return models


def _sonic_pipeline(meta: dict, data: dict) -> Outputs:
    """The README flow: CLIP, whisper, adapters, VAE encode, windowed sampling, chunked decode; injected noise."""
    kw, inputs = meta["pipeline_call_kwargs"], data["inputs"]
    schedule = sampling.Schedule.from_config(meta["configs"]["scheduler"])
    pipe = SonicPipeline(_pipeline_models(meta, data), schedule=schedule)
    embeds = pipe.encode_clip(inputs["clip_image"])
    audio = pipe.encode_audio(inputs["audio_feature"].reshape(-1, *inputs["audio_feature"].shape[-2:]),
                              meta["audio_len"], embeds, step=meta["settings"]["step"])
    assert audio.num_frames == kw["num_frames"] == meta["num_frames"]
    image = pipe.encode_image(embeds, inputs["ref_img"], inputs["face_mask"], kw["noise_aug_strength"],
                              inputs["noise_aug"])
    options = SamplerOptions(
        steps=kw["num_inference_steps"], frames_per_window=kw["frames_per_batch"], overlap=kw["overlap"],
        shift_offset=kw["shift_offset"], fps=kw["fps"],
        appearance_guidance=(kw["min_guidance_scale1"], kw["max_guidance_scale1"]),
        audio_guidance=(kw["min_guidance_scale2"], kw["max_guidance_scale2"]),
        i2i_strength=kw["i2i_noise_strength"], dynamic_scale=kw["motion_bucket_scale"])
    latents = pipe.sample(audio, image, inputs["latent_noise"], options)
    frames = torch.cat(list(pipe.decode_raw(latents, kw["decode_chunk_size"])))  # [F, 3, H, W]
    assert frames.shape[-2:] == (kw["height"], kw["width"])
    outputs = data["outputs"]
    return {"latents": (latents[None], outputs["latents"]),
            "frames": (frames.permute(1, 0, 2, 3)[None], outputs["frames"])}


HANDLERS: dict[str, Callable[[dict, dict], Outputs]] = {
    "audio2token": _audio2token,
    "audio2bucket": _audio2bucket,
    "unet": _unet,
    "mask_downsample": _mask_downsample,
    "scheduler": _scheduler,
    "sonic_pipeline": _sonic_pipeline,
}


def _max_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    scale = want.abs().max().item()
    err = (got.double() - want.double()).abs().max().item()
    return err / scale if scale else err


def test_golden_set_covers_every_handler() -> None:
    """An absent or partial golden set fails here instead of leaving the parity tests below uncollected."""
    manifest = golden_dir() / "manifest.json"
    assert manifest.is_file(), f"golden manifest {manifest} is missing: set $SONIC_GOLDEN_DIR to the golden set"
    kinds = {fixture["kind"] for fixture in golden_manifest()}
    assert kinds >= set(HANDLERS), f"no golden fixture of kind {sorted(set(HANDLERS) - kinds)}"


@pytest.mark.parametrize("fixture", golden_manifest(), ids=lambda fx: fx["name"])
def test_golden(fixture: dict, record_property) -> None:
    name, kind = fixture["name"], fixture["kind"]
    assert kind in HANDLERS, f"golden fixture {name} has kind {kind!r}, which no handler checks: add one to HANDLERS"
    pt = golden_dir() / fixture["pt"]
    assert _sha256(pt) == fixture["sha256"], f"{pt} does not match the manifest's sha256"
    meta = json.loads((golden_dir() / fixture["json"]).read_text())
    data = torch.load(pt, map_location="cpu", weights_only=True)
    with torch.no_grad():
        pairs = HANDLERS[kind](meta, data)
    assert set(pairs) == set(data["outputs"]), f"outputs not checked: {set(data['outputs']) - set(pairs)}"
    tolerance = _tolerance()
    errors = {out: _max_rel(got, want) for out, (got, want) in pairs.items()}
    for out, rel in errors.items():
        record_property(f"max_rel[{out}]", rel)
        print(f"golden {name} {out}: max_rel={rel:.3e}")
    report = ", ".join(f"{out}={rel:.2e}" for out, rel in errors.items())
    assert max(errors.values()) <= tolerance, f"{name}: max relative errors {report} (tolerance {tolerance})"
