"""The CLIP and whisper encoders against the official pipeline's intermediates (``sonic_pipeline`` goldens): the
image embedding from ``inputs.clip_image`` and the whisper hidden states from ``inputs.audio_feature``."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from sonic_testing import golden_dir, golden_manifest, max_rel

from sonic_core.models.clip_vision import CLIPVisionConfig, CLIPVisionModelWithProjection
from sonic_core.models.whisper import WhisperEncoder, WhisperEncoderConfig
from sonic_core.weights.components import load_clip_vision, load_whisper_encoder

PIPELINES = [fx for fx in golden_manifest() if fx["kind"] == "sonic_pipeline"]


@pytest.mark.parametrize("fx", PIPELINES, ids=lambda fx: fx["name"])
def test_encoders_reproduce_pipeline_goldens(fx: dict, record_property) -> None:
    path = golden_dir() / fx["pt"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fx["sha256"]
    meta = json.loads((golden_dir() / fx["json"]).read_text())
    data = torch.load(path, map_location="cpu", weights_only=True)
    inputs, inter, weights = data["inputs"], data["intermediates"], data["state_dicts"]

    clip = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(meta["configs"]["image_encoder"])).eval()
    load_clip_vision(clip, weights["image_encoder"], f"{fx['pt']}:image_encoder")
    whisper = WhisperEncoder(WhisperEncoderConfig.from_dict(meta["configs"]["whisper"])).eval()
    load_whisper_encoder(whisper, weights["whisper_encoder"], f"{fx['pt']}:whisper_encoder")
    rows = inter["whisper_hidden_states"].shape[1]
    assert rows == 2 * meta["audio_len"]  # the fixture keeps the first 2·audio_len whisper frames
    with torch.no_grad():
        image_embeds = clip(inputs["clip_image"][None])
        hidden = whisper(inputs["audio_feature"][None])[:, :rows]

    errors = {"image_embeds": max_rel(image_embeds, inter["image_embeds"]),
              "whisper_hidden_states": max_rel(hidden, inter["whisper_hidden_states"]),
              "whisper_last_hidden_state": max_rel(hidden[:, :, -1], inter["whisper_last_hidden_state"])}
    tolerance = json.loads((golden_dir() / "manifest.json").read_text())["tolerance"]["fp32_max_rel"]
    for name, rel in errors.items():
        record_property(f"max_rel[{name}]", rel)
        print(f"golden {fx['name']} {name}: max_rel={rel:.3e}")
    assert max(errors.values()) <= tolerance, errors
