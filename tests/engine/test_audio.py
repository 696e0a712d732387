"""Audio front end: file formats, the duration check, ComfyUI waveforms, and whisper log-mel parity with
transformers' WhisperFeatureExtractor (test-only reference)."""

from __future__ import annotations

import subprocess

import librosa
import numpy as np
import pytest
import soundfile
import torch
from sonic_testing import REPO

from sonic_core import audio
from sonic_core.audio import audio_duration, load_audio, load_speech, log_mel_pieces, waveform_to_16k_mono
from sonic_core.errors import SonicAudioError

SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"
SPEECH_SAMPLES = soundfile.info(SPEECH).frames  # a 16 kHz mono file: 6.594 s
ENCODED_FORMATS = {"mp3": ["-c:a", "libmp3lame", "-b:a", "128k"], "flac": ["-c:a", "flac"],
                   "ogg": ["-c:a", "libvorbis", "-q:a", "5"], "m4a": ["-c:a", "aac", "-b:a", "128k"]}


@pytest.fixture(scope="module")
def stereo_44k(tmp_path_factory) -> tuple[np.ndarray, "object"]:
    """The bundled speech as a 44.1 kHz stereo wav whose channels differ (right = -0.5 · left, delayed)."""
    mono, _ = librosa.load(SPEECH, sr=44100)
    stereo = np.stack([mono, -0.5 * np.roll(mono, 300)], axis=1)
    path = tmp_path_factory.mktemp("audio") / "speech_44k_stereo.wav"
    soundfile.write(path, stereo, 44100, subtype="FLOAT")
    return stereo, path


@pytest.fixture(scope="module")
def encoded(stereo_44k) -> dict:
    import imageio_ffmpeg
    _, wav = stereo_44k
    files = {}
    for suffix, codec in ENCODED_FORMATS.items():
        out = wav.with_suffix(f".{suffix}")
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(wav), *codec,
                        str(out)], check=True)
        files[suffix] = out
    return files


def test_wav_loads_like_librosa() -> None:
    samples = load_audio(SPEECH)
    assert samples.dtype == np.float32 and samples.shape == (SPEECH_SAMPLES,)
    assert np.array_equal(samples, librosa.load(SPEECH, sr=16000)[0])


def test_stereo_44k_is_mixed_down_then_resampled(stereo_44k) -> None:
    stereo, wav = stereo_44k
    samples = load_audio(wav)
    want = librosa.resample(stereo.mean(axis=1), orig_sr=44100, target_sr=16000, res_type="soxr_hq")
    assert samples.dtype == np.float32 and samples.shape == want.shape
    assert np.abs(samples - want).max() <= 1e-6


@pytest.mark.parametrize("suffix", list(ENCODED_FORMATS))
def test_compressed_formats_load_and_pass_the_duration_check(encoded, stereo_44k, suffix: str) -> None:
    stereo, _ = stereo_44k
    reference = librosa.resample(stereo.mean(axis=1), orig_sr=44100, target_sr=16000, res_type="soxr_hq")
    samples = load_audio(encoded[suffix], duration=SPEECH_SAMPLES / 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size - reference.size) <= 0.04 * 16000
    assert abs(audio_duration(encoded[suffix]) - samples.size / 16000) <= 0.04
    n = min(samples.size, reference.size)
    lags = range(-2000, 2001, 1)  # encoder delay: align before comparing the waveform shapes
    best = max(np.corrcoef(samples[max(0, k):n + min(0, k)], reference[max(0, -k):n - max(0, k)])[0, 1]
               for k in lags[::50])
    assert best > 0.9, f"{suffix}: correlation {best:.3f} with the source"
    if suffix == "flac":  # lossless: the same samples as the wav
        assert np.abs(samples - reference).max() <= 1e-4


def test_duration_within_one_frame_is_accepted_unchanged() -> None:
    samples = load_audio(SPEECH, duration=6.56)
    assert samples.size == SPEECH_SAMPLES


@pytest.mark.parametrize(("duration", "fix"), [(6.5, "trim"), (7.0, "pad")])
def test_duration_mismatch_is_a_one_line_error(duration: float, fix: str) -> None:
    with pytest.raises(SonicAudioError, match=rf"lasts 6\.594 s but the requested duration is {duration:.3f} s "
                                              rf".*fit='{fix}'") as err:
        load_audio(SPEECH, duration=duration)
    assert "\n" not in str(err.value)


def test_fit_trims_longer_and_pads_shorter_audio() -> None:
    full = load_audio(SPEECH)
    trimmed = load_audio(SPEECH, duration=5.0, fit="trim")
    assert np.array_equal(trimmed, full[:80_000])
    padded = load_audio(SPEECH, duration=8.0, fit="pad")
    assert padded.size == 128_000 and padded.dtype == np.float32
    assert np.array_equal(padded[:SPEECH_SAMPLES], full) and not padded[SPEECH_SAMPLES:].any()


@pytest.mark.parametrize(("duration", "fit"), [(8.0, "trim"), (5.0, "pad")])
def test_fit_does_not_stretch_the_other_way(duration: float, fit: str) -> None:
    with pytest.raises(SonicAudioError, match="requested duration"):
        load_audio(SPEECH, duration=duration, fit=fit)


def test_bad_fit_and_duration_values() -> None:
    with pytest.raises(SonicAudioError, match="fit='stretch' is not a duration mode"):
        load_audio(SPEECH, fit="stretch")
    with pytest.raises(SonicAudioError, match="not positive"):
        load_audio(SPEECH, duration=0)


def test_missing_and_corrupt_files(tmp_path) -> None:
    with pytest.raises(SonicAudioError, match="does not exist"):
        load_audio(tmp_path / "nothing.wav")
    for name in ("noise.wav", "noise.m4a", "noise.mp3"):
        corrupt = tmp_path / name
        corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
        with pytest.raises(SonicAudioError, match=f"cannot read audio file '{name}'") as err:
            load_audio(corrupt)
        assert "\n" not in str(err.value)


def test_empty_and_too_short_audio(tmp_path) -> None:
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(SonicAudioError, match="is empty"):
        load_audio(empty)
    short = tmp_path / "short.wav"
    soundfile.write(short, np.full(1279, 0.1, dtype=np.float32), 16000)
    with pytest.raises(SonicAudioError, match="lasts 80 ms, too short for one video frame"):
        load_audio(short)
    enough = tmp_path / "enough.wav"
    soundfile.write(enough, np.full(1280, 0.1, dtype=np.float32), 16000)
    assert load_audio(enough).size == 1280
    with pytest.raises(SonicAudioError, match="too short"):
        load_audio(SPEECH, duration=0.05, fit="trim")


def test_comfyui_waveform_matches_librosa_load(stereo_44k) -> None:
    stereo, wav = stereo_44k
    waveform = torch.from_numpy(stereo.T.copy())
    want = librosa.load(wav, sr=16000)[0]
    for shaped in (waveform, waveform[None]):
        got = waveform_to_16k_mono(shaped, 44100)
        assert got.dtype == np.float32 and np.array_equal(got, want)
    with pytest.raises(SonicAudioError, match="batch of 2 clips"):
        waveform_to_16k_mono(torch.stack([waveform, waveform]), 44100)
    with pytest.raises(SonicAudioError, match="too short"):
        waveform_to_16k_mono(waveform[:, :1000], 44100)


def _reference_features(samples: np.ndarray, n_mels: int) -> torch.Tensor:
    import transformers
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    pieces = [samples[i:i + 480_000] for i in range(0, samples.size, 480_000)]
    return torch.cat([extractor(p, sampling_rate=16000, return_tensors="pt").input_features for p in pieces])


@pytest.mark.parametrize(("repeats", "n_mels"), [(1, 80), (5, 80), (1, 128)])
def test_log_mel_matches_whisper_feature_extractor(repeats: int, n_mels: int, record_property) -> None:
    """Real speech (one piece) and a 33 s clip (two pieces, each normalised by its own maximum)."""
    samples = np.tile(load_audio(SPEECH), repeats)
    got = log_mel_pieces(samples, n_mels=n_mels)
    want = _reference_features(samples, n_mels)
    assert got.dtype == torch.float32 and got.shape == (-(-samples.size // 480_000), n_mels, 3000)
    err = (got - want).abs().max().item()
    record_property("max_abs", err)
    print(f"log-mel {samples.size / 16000:.2f} s, {n_mels} mels: max_abs={err:.3e}")
    assert err <= 1e-4


def test_log_mel_rejects_empty_or_multichannel_input() -> None:
    with pytest.raises(SonicAudioError, match="non-empty mono"):
        log_mel_pieces(np.zeros(0, dtype=np.float32))
    with pytest.raises(SonicAudioError, match="non-empty mono"):
        log_mel_pieces(np.zeros((2, 16000), dtype=np.float32))


def test_the_original_track_is_kept_at_its_rate_and_channels_and_fitted_like_the_model_audio(stereo_44k) -> None:
    stereo, wav = stereo_44k
    whole = load_speech(wav)
    assert whole.sample_rate == 44100 and whole.waveform.shape == (2, stereo.shape[0])
    np.testing.assert_array_equal(whole.waveform, stereo.T.astype(np.float32))
    trimmed, padded = load_speech(wav, 3.0, "trim"), load_speech(wav, 8.0, "pad")
    assert trimmed.waveform.shape == (2, 3 * 44100) and trimmed.samples.size == 3 * 16000
    np.testing.assert_array_equal(trimmed.waveform, whole.waveform[:, :3 * 44100])
    assert padded.waveform.shape == (2, 8 * 44100) and padded.samples.size == 8 * 16000
    assert not padded.waveform[:, stereo.shape[0]:].any()
    delayed = trimmed.delayed(0.5)
    np.testing.assert_array_equal(delayed.waveform[:, 22050:], trimmed.waveform[:, :-22050])
    np.testing.assert_array_equal(delayed.samples[8000:], trimmed.samples[:-8000])


@pytest.mark.parametrize("suffix", ["wav", "m4a"])
def test_a_file_is_decoded_once(stereo_44k, encoded, suffix, monkeypatch) -> None:
    _, wav = stereo_44k
    path = wav if suffix == "wav" else encoded[suffix]
    opened: list[str] = []
    real_open = audio.soundfile.SoundFile

    def counting_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(audio.soundfile, "SoundFile", counting_open)
    load_speech(path, 3.0, "trim")
    assert len(opened) == (1 if suffix == "wav" else 2)  # m4a: one failed attempt, then the decoded wav once
