"""Whisper encoder: parity with transformers (test-only reference) on tiny configs, full-size keys, checkpoint
formats and input checks."""

from __future__ import annotations

import pytest
import torch
from sonic_testing import checkpoint_key_list, max_rel, perturb_, state_dict_rows

from sonic_core.errors import SonicAudioError, SonicWeightsError
from sonic_core.models.whisper import WhisperEncoder, WhisperEncoderConfig
from sonic_core.weights.components import load_whisper_encoder, read_whisper_encoder

TOLERANCE = 1e-4
DECODER = dict(vocab_size=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=16, max_target_positions=16,
               pad_token_id=1, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2)
TINY_CONFIGS = {
    "golden-like": dict(num_mel_bins=8, d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32),
    "short-window": dict(num_mel_bins=12, d_model=24, encoder_layers=3, encoder_attention_heads=4,
                         encoder_ffn_dim=40, max_source_positions=100),
    "one-layer-many-heads": dict(num_mel_bins=6, d_model=32, encoder_layers=1, encoder_attention_heads=8,
                                 encoder_ffn_dim=48, max_source_positions=60),
}


def reference(config: dict, seed: int, kind: str = "WhisperModel"):
    import transformers
    torch.manual_seed(seed)
    ref = getattr(transformers, kind)(transformers.WhisperConfig(**DECODER, **config)).eval()
    perturb_(ref, seed)
    return ref


def reference_states(encoder, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = encoder(mel, output_hidden_states=True)
    return torch.stack(out.hidden_states, dim=2), out.last_hidden_state


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_hidden_states_match_transformers(name: str, record_property) -> None:
    config = TINY_CONFIGS[name]
    ref = reference(config, seed=len(name))
    ours = WhisperEncoder(WhisperEncoderConfig.from_dict(ref.config.to_dict())).eval()
    load_whisper_encoder(ours, ref.state_dict())
    frames = 2 * ours.config.max_source_positions
    mel = torch.randn(2, config["num_mel_bins"], frames, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = ours(mel)
    want, want_last = reference_states(ref.encoder, mel)
    assert got.shape == (2, frames // 2, config["encoder_layers"] + 1, config["d_model"])
    rel, rel_last = max_rel(got, want), max_rel(got[:, :, -1], want_last)
    record_property("max_rel", rel)
    print(f"whisper {name}: max_rel={rel:.3e} (last hidden state {rel_last:.3e})")
    assert rel <= TOLERANCE and rel_last <= TOLERANCE


def test_full_size_keys_on_meta() -> None:
    with torch.device("meta"):
        model = WhisperEncoder()
    got = state_dict_rows(model)
    assert got == checkpoint_key_list("whisper_tiny_encoder")
    assert len(got) == 67
    assert sum(p.numel() for p in model.parameters()) == 8_208_384
    assert model.config == WhisperEncoderConfig.tiny()


def test_reads_only_the_encoder_of_a_conditional_generation_safetensors(tmp_path) -> None:
    """openai/whisper-tiny ships WhisperForConditionalGeneration weights: ``model.encoder.*``, decoder, proj_out."""
    from safetensors.torch import save_file

    config = TINY_CONFIGS["short-window"]
    ref = reference(config, seed=5, kind="WhisperForConditionalGeneration")
    file = tmp_path / "model.safetensors"
    save_file({k: v.clone().contiguous() for k, v in ref.state_dict().items()}, str(file))
    weights = read_whisper_encoder(file)
    assert set(weights) == set(WhisperEncoder(WhisperEncoderConfig.from_dict(config)).state_dict())
    ours = WhisperEncoder(WhisperEncoderConfig.from_dict(config)).eval()
    load_whisper_encoder(ours, weights, str(file))
    mel = torch.randn(1, config["num_mel_bins"], 200, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = ours(mel)
    want, _ = reference_states(ref.model.encoder, mel)
    assert max_rel(got, want) <= TOLERANCE


def test_loader_accepts_prefixed_dicts_and_rejects_wrong_ones(tmp_path) -> None:
    config = WhisperEncoderConfig.from_dict(TINY_CONFIGS["golden-like"])
    source = WhisperEncoder(config).state_dict()
    full = {f"model.{k}": v for k, v in source.items()} | {"model.decoder.layer_norm.weight": torch.ones(16)}
    target = WhisperEncoder(config)
    load_whisper_encoder(target, full)
    assert torch.equal(target.encoder.conv1.weight, source["encoder.conv1.weight"])
    with pytest.raises(SonicWeightsError, match="1 of the wrong shape .*embed_positions"):
        load_whisper_encoder(target, {**source, "encoder.embed_positions.weight": torch.zeros(1500, 8)}, "w.pt")
    with pytest.raises(SonicWeightsError, match="missing.safetensors not found; use model.safetensors of openai/"):
        read_whisper_encoder(tmp_path / "missing.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(SonicWeightsError, match="broken.safetensors is not a complete safetensors file"):
        read_whisper_encoder(broken)


@pytest.mark.parametrize("shape", [(1, 8, 2999), (1, 8, 6000), (1, 7, 3000), (8, 3000)])
def test_other_input_shapes_are_audio_errors(shape: tuple[int, ...]) -> None:
    model = WhisperEncoder(WhisperEncoderConfig.from_dict(TINY_CONFIGS["golden-like"]))
    with pytest.raises(SonicAudioError, match=r"expected \[B, 8, 3000\]"):
        model(torch.zeros(shape))


def test_config_defaults_are_transformers_defaults() -> None:
    """A config dict that omits a field must build the same network as transformers would."""
    import transformers
    assert WhisperEncoderConfig() == WhisperEncoderConfig.from_dict(transformers.WhisperConfig().to_dict())


def test_unsupported_shapes_of_config_are_named() -> None:
    with pytest.raises(ValueError, match="activation 'relu' is not supported"):
        WhisperEncoder(WhisperEncoderConfig.from_dict({**TINY_CONFIGS["golden-like"], "activation_function": "relu"}))
    with pytest.raises(ValueError, match="hidden size 16 is not divisible by 3 attention heads"):
        WhisperEncoder(WhisperEncoderConfig.from_dict({**TINY_CONFIGS["golden-like"], "encoder_attention_heads": 3}))
