"""The cost model: exact work counts on the meta device, the pipeline's call structure, the coefficients file and
the estimate CLI's prediction fields. Prediction *error* is measured by ``bench/cost_bench.py`` (recorded in
``bench/results/``), never asserted here: timings depend on the machine."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from sonic_testing import checkpoint_key_list
from torch.utils.flop_counter import FlopCounterMode

from sonic_core.metering import cost
from sonic_core.cli import main
from sonic_core.errors import SonicInputError

UNIT = cost.Profile("unit", True, {s: cost.StageCoefficients(0.0, 1.0) for s in cost.STAGES}, 0, 1.0)


@pytest.fixture(autouse=True)
def counts_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(cost.COUNTS_CACHE_ENV, str(tmp_path / "counts.json"))


def test_flops_of_linear_and_conv_match_a_hand_count() -> None:
    with torch.device("meta"):
        linear, conv = torch.nn.Linear(8, 16), torch.nn.Conv2d(3, 5, 3, padding=1)
    assert cost.count_cost(lambda: linear(torch.empty(4, 8, device="meta"))).flops == 2 * 4 * 8 * 16
    conv_flops = cost.count_cost(lambda: conv(torch.empty(2, 3, 10, 10, device="meta"))).flops
    assert conv_flops == 2 * (2 * 10 * 10) * 5 * (3 * 3 * 3)


def test_attention_stand_in_counts_like_the_real_kernel_without_the_score_matrix() -> None:
    shapes = [(2, 3, 50, 4), (2, 3, 70, 4), (2, 3, 70, 6)]
    with FlopCounterMode(display=False) as real:
        F.scaled_dot_product_attention(*(torch.randn(s) for s in shapes))
    counted = cost.count_cost(lambda: F.scaled_dot_product_attention(*(torch.empty(s, device="meta")
                                                                        for s in shapes)))
    assert counted.flops == real.get_total_flops() == 2 * 6 * 50 * 70 * (4 + 6)
    inputs = 4 * sum(math.prod(s) for s in shapes)
    assert counted.activation_bytes == inputs + 4 * 2 * 3 * 50 * 6  # the output; never the 50×70 scores
    assert F.scaled_dot_product_attention.__name__ == "scaled_dot_product_attention"  # restored


def test_live_bytes_follow_views_and_frees() -> None:
    def run() -> torch.Tensor:
        a = torch.empty(1000, device="meta")  # 4000 bytes
        b = (a + 1).view(10, 100)  # +4000: the temporary dies, its view keeps the storage alive
        del a  # -4000
        c = b * 2  # +4000
        return c + b  # +4000

    assert cost.count_cost(run).activation_bytes == 12000


def test_weights_bytes_are_the_published_checkpoints() -> None:
    lists = ["unet", "vae_temporal", "clip_vision", "whisper_tiny_encoder", "audio2token", "audio2bucket",
             "rife_flownet"]
    numel = {name: sum(math.prod(shape) for _, shape, _ in checkpoint_key_list(name)) for name in lists}
    low = numel["unet"] + numel["vae_temporal"] + numel["clip_vision"]
    assert cost.weights_bytes("sonic", "fp32") == 4 * sum(numel.values())
    assert cost.weights_bytes("sonic", "fp16") == 2 * low + 4 * (sum(numel.values()) - low)


def test_unet_calls_are_steps_times_windows() -> None:
    load = cost.workload(50, 256, 3, model="tiny", dtype="fp32")
    assert load.unet_calls == 3 * 2 and load.stages["sampling"].calls == 6
    assert cost.workload(51, 256, 3, model="tiny").unet_calls == 9
    assert cost.workload(10, 256, 4, model="tiny", overlap=5).unet_calls == 4
    load = cost.workload(20, 256, 1, model="tiny", interpolate=False)
    assert load.stages["interpolate"].work == 0 and load.stages["decode"].calls == 3


def test_predictions_scale_linearly_in_steps_and_windows() -> None:
    def sampling(frames: int, steps: int) -> float:
        return cost.predict_workload(cost.workload(frames, 256, steps, model="tiny"), UNIT).stages["sampling"]

    assert sampling(25, 4) == pytest.approx(2 * sampling(25, 2), rel=1e-12)
    assert sampling(50, 2) == pytest.approx(2 * sampling(25, 2), rel=1e-12)
    assert sampling(26, 2) == sampling(50, 2)  # a partial window costs a whole UNet call
    decode = [cost.predict_workload(cost.workload(n, 256, 1, model="tiny"), UNIT).stages["decode"] for n in (8, 16)]
    assert decode[1] == pytest.approx(2 * decode[0], rel=1e-12)


def test_shipped_predictions_grow_with_frames_resolution_and_steps() -> None:
    base = cost.predict(25, 256, 2, "cpu", "fp32", model="tiny")
    assert base.seconds > 0 and base.peak_bytes > cost.weights_bytes("tiny", "fp32")
    for more in (cost.predict(50, 256, 2, "cpu", "fp32", model="tiny"),
                 cost.predict(25, 320, 2, "cpu", "fp32", model="tiny"),
                 cost.predict(25, 256, 4, "cpu", "fp32", model="tiny")):
        assert more.seconds > base.seconds and more.peak_bytes >= base.peak_bytes
    assert base.seconds == pytest.approx(sum(base.stages.values()))


def test_the_metering_call_signature_works() -> None:
    # sonic_core.metering.graph_pricing calls predict(frames, resolution, steps, device, dtype) positionally
    result = cost.predict(25, 256, 2, "cpu", "fp32", model="tiny")
    assert isinstance(result.seconds, float) and isinstance(result.peak_bytes, int)


def test_bad_inputs_have_one_line_errors() -> None:
    for kwargs, words in (({"device": "tpu"}, "no cost profile"), ({"dtype": "int8"}, "dtype"),
                          ({"model": "huge"}, "model")):
        with pytest.raises(SonicInputError, match=words):
            cost.predict(25, 256, 2, **{"device": "cpu", "dtype": "fp32", "model": "tiny", **kwargs})
    for args in ((0, 256, 2), (25, 250, 2), (25, 256, 0)):
        with pytest.raises(SonicInputError):
            cost.workload(*args, model="tiny")
    with pytest.raises(SonicInputError, match="both width and height"):
        cost.workload(25, 256, 2, width=320, model="tiny")


def test_shipped_coefficients_load_and_validate() -> None:
    coefficients = cost.load_coefficients()
    cpu = coefficients.profile("cpu", "fp32", "tiny")
    assert cpu.calibrated and cpu.info["torch"] and cpu.info["date"] and "residuals" in cpu.info
    gpu = coefficients.profile("cuda", "fp16", "sonic")
    assert gpu.key == "a10g/fp16/sonic" and not gpu.calibrated and "efficiency" in gpu.info["source"]
    for profile in coefficients.profiles.values():
        assert set(profile.stages) == set(cost.STAGES)


def _valid_data() -> dict:
    return json.loads(cost.COEFFICIENTS_FILE.read_text())


@pytest.mark.parametrize("break_it, words", [
    (lambda d: d["profiles"]["cpu/fp32/tiny"]["stages"].pop("decode"), "lacks stages"),
    (lambda d: d["profiles"]["cpu/fp32/tiny"]["stages"]["decode"].update(throughput=-1), "throughput"),
    (lambda d: d["profiles"].update({"cpu/int8/tiny": d["profiles"]["cpu/fp32/tiny"]}), "DEVICE/DTYPE/MODEL"),
    (lambda d: d["profiles"]["cpu/fp32/tiny"].pop("calibrated"), "calibrated"),
    (lambda d: d.update(aliases={"cuda": "tpu"}), "alias"),
])
def test_broken_coefficients_are_refused(break_it, words, tmp_path) -> None:
    data = _valid_data()
    break_it(data)
    path = tmp_path / "coefficients.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SonicInputError, match=words):
        cost.load_coefficients(path)


def test_estimate_cli_prints_the_prediction(capsys) -> None:
    args = ["estimate", "--duration", "2", "--resolution", "256", "--steps", "2", "--device", "cpu", "--dtype",
            "fp32", "--model", "tiny"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = cost.predict(25, 256, 2, "cpu", "fp32", model="tiny")
    assert report["predicted_seconds"] == pytest.approx(expected.seconds)
    assert report["predicted_peak_bytes"] == expected.peak_bytes
    assert report["prediction"]["profile"] == "cpu/fp32/tiny" and report["prediction"]["calibrated"] is True
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "predicted time" in table and "on cpu fp32, tiny model" in table and "predicted peak" in table


def test_estimate_cli_says_when_it_cannot_predict(capsys) -> None:
    assert main(["estimate", "--duration", "2", "--device", "tpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["predicted_seconds"] is None and "no cost profile" in report["prediction"]["unavailable"]


@pytest.mark.slow
def test_default_estimate_is_the_full_model_on_an_a10g_class_gpu(capsys) -> None:
    assert main(["estimate", "--duration", "10", "--resolution", "512", "--steps", "25", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prediction"]["profile"] == "a10g/fp16/sonic" and report["prediction"]["calibrated"] is False
    assert report["predicted_peak_bytes"] > cost.weights_bytes("sonic", "fp16")
    load = cost.workload(125, 512, 25)
    assert load.unet_calls == 125  # SPEC §7.6: 5 windows × 25 steps
    assert report["predicted_seconds"] > load.stages["sampling"].work / 125e12  # never above the GPU's peak
