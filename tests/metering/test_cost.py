"""The cost model: the shipped network counts (against live counts on the meta device and the network code they
were counted from), pricing without torch, the pipeline's call structure, the coefficients file and the estimate
CLI's prediction fields. Prediction *error* is measured by ``bench/cost_bench.py`` (recorded in
``bench/results/``), never asserted here: timings depend on the machine."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sonic_testing import REPO, basic_prompt, checkpoint_key_list
from torch.utils.flop_counter import FlopCounterMode

from bench import network_counts
from sonic_core.cli import main
from sonic_core.errors import SonicInputError
from sonic_core.metering import cost

UNIT = cost.Profile("unit", True, {s: cost.StageCoefficients(0.0, 1.0) for s in cost.STAGES}, 0, 1.0)


def test_flops_of_linear_and_conv_match_a_hand_count() -> None:
    with torch.device("meta"):
        linear, conv = torch.nn.Linear(8, 16), torch.nn.Conv2d(3, 5, 3, padding=1)
    assert network_counts.count_cost(lambda: linear(torch.empty(4, 8, device="meta"))).flops == 2 * 4 * 8 * 16
    conv_flops = network_counts.count_cost(lambda: conv(torch.empty(2, 3, 10, 10, device="meta"))).flops
    assert conv_flops == 2 * (2 * 10 * 10) * 5 * (3 * 3 * 3)


def test_attention_stand_in_counts_like_the_real_kernel_without_the_score_matrix() -> None:
    shapes = [(2, 3, 50, 4), (2, 3, 70, 4), (2, 3, 70, 6)]
    with FlopCounterMode(display=False) as real:
        F.scaled_dot_product_attention(*(torch.randn(s) for s in shapes))
    counted = network_counts.count_cost(lambda: F.scaled_dot_product_attention(*(torch.empty(s, device="meta")
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

    counted = network_counts.count_cost(run)
    assert counted.activation_bytes == 12000
    assert counted.live_after_allocations == (4000, 8000, 8000, 12000)


def test_fit_recovers_integer_polynomials_and_refuses_others() -> None:
    axes = ((4, 6, 9), (4, 5, 8), (2, 8, 25))
    grid = [[[7 + 3 * m * n * f + 2 * m * m * n * n * f + m * n * f * f for f in axes[2]] for n in axes[1]]
            for m in axes[0]]
    samples = np.array(grid, dtype=object)
    coefficients = network_counts.fit(samples, axes)
    terms = sorted(network_counts.polynomial_terms(coefficients))
    assert terms == [[1, 1, 1, 2], [2, 2, 2, 1], [3, 1, 1, 1], [7, 0, 0, 0]]
    samples[0, 0, 0] += 1  # no longer a polynomial of degree <= 2 with integer coefficients
    with pytest.raises(network_counts.NotPolynomial):
        network_counts.fit(samples, axes)


def test_undominated_keeps_every_polynomial_that_can_be_the_largest() -> None:
    rows = np.array([[5, 1], [4, 2], [3, 1], [5, 1], [0, 3]], dtype=object)
    assert sorted(network_counts.undominated(rows)) == [0, 1, 4]  # [3, 1] is below [5, 1]; one of the equal rows


@pytest.mark.parametrize("model", cost.MODELS)
def test_shipped_counts_are_the_live_counts(model) -> None:
    """Count every network on the meta device and compare with the shipped polynomials: at 256² (a fit point) and
    at 704 × 384 (fitted at neither 11 tiles high nor a 25-frame window with a 6-tile width: held out), with the
    pipeline's 25-frame windows and 8-frame decode chunks."""
    nets = network_counts.meta_networks(model)
    shipped = cost.load_network_counts()[model]
    assert network_counts.weights_elements(nets) == shipped.weights_elements
    for height, width in ((256, 256), (704, 384)):
        expected = cost.network_costs(model, height, width)
        for name in cost.NETWORK_CALLS:
            live = network_counts.count_call(nets, name, height, width, {"unet": 25, "unet_ff_streamed": 25, "vae_decode": 8}.get(name, 1))
            assert (live.flops, live.activation_bytes) == (expected[name].flops, expected[name].activation_bytes), \
                f"{model} {name} at {height}x{width}: live counts differ from the shipped ones: run " \
                f"{network_counts.COMMAND}"


def test_shipped_counts_were_counted_from_this_network_code() -> None:
    shipped = json.loads(cost.NETWORK_COUNTS_FILE.read_text())
    assert shipped["fingerprint"] == network_counts.code_fingerprint(), \
        f"the network code or configs changed since sonic_core/metering/network_counts.json was counted: run " \
        f"{network_counts.COMMAND} and commit the file"


NO_TORCH_CHECK = """
import json, pkgutil, sys
import sonic_core.metering
from sonic_core.metering import cost
from sonic_core.metering.graph_pricing import price_graph
for module in pkgutil.walk_packages(sonic_core.metering.__path__, "sonic_core.metering."):
    __import__(module.name)
priced = price_graph(json.loads(sys.stdin.read()), tier="api", audio_duration=lambda name: 6.6, device="cpu",
                     dtype="fp32")
predicted = cost.predict(125, 512, 25, "cuda", "fp16", model="sonic")
heavy = sorted(name for name in sys.modules if name.split(".")[0] == "torch" or name.startswith("sonic_core.models"))
print(json.dumps({"seconds": priced.predicted_seconds, "peak": predicted.peak_bytes, "heavy": heavy}))
"""


def test_pricing_a_graph_imports_no_torch_and_builds_no_network() -> None:
    done = subprocess.run([sys.executable, "-c", NO_TORCH_CHECK], input=json.dumps(basic_prompt()), cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(done.stdout)
    assert report["seconds"] > 0 and report["peak"] > 0
    assert report["heavy"] == [], f"pricing imported {report['heavy'][:5]}: sonic_core/metering must not import " \
                                  "torch or the networks (the counts are data: bench/network_counts.py)"


def _valid_counts() -> dict:
    return json.loads(cost.NETWORK_COUNTS_FILE.read_text())


@pytest.mark.parametrize("break_it, words", [
    (lambda d: d["models"].pop("tiny"), "'models' must hold sonic, tiny"),
    (lambda d: d["models"]["sonic"]["calls"].pop("rife"), "sonic.calls must hold"),
    (lambda d: d["models"]["sonic"]["calls"]["unet"]["flops"].append([1.5, 0, 0, 0]), "sonic.calls.unet.flops"),
    (lambda d: d["models"]["tiny"]["calls"]["vae_decode"].update(activation_bytes=[]), "must be a non-empty list"),
    (lambda d: d["models"]["tiny"]["weights_elements"].pop("vae"), "weights_elements must hold exactly"),
    (lambda d: d["models"]["tiny"].update(latent_downscale=0), "latent_downscale = 0"),
])
def test_broken_network_counts_are_refused_in_one_line(break_it, words, tmp_path) -> None:
    data = copy.deepcopy(_valid_counts())
    break_it(data)
    path = tmp_path / "network_counts.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SonicInputError, match=words) as refused:
        cost.load_network_counts(path)
    assert str(path) in str(refused.value) and network_counts.COMMAND in str(refused.value)
    assert "\n" not in str(refused.value)


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
    for kwargs, words in (({"overlap": 25}, r"overlap=25 must be .* \(24\)"),
                          ({"frames_per_window": 0}, "frames_per_window=0"),
                          ({"decode_chunk_size": 2.5}, "decode_chunk_size=2.5")):
        with pytest.raises(SonicInputError, match=words):
            cost.workload(25, 256, 2, model="tiny", **kwargs)
    with pytest.raises(SonicInputError, match="width=100 must be a positive multiple of 64"):
        cost.network_costs("tiny", 256, 100)


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


def test_default_estimate_is_the_full_model_on_an_a10g_class_gpu(capsys) -> None:
    assert main(["estimate", "--duration", "10", "--resolution", "512", "--steps", "25", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prediction"]["profile"] == "a10g/fp16/sonic" and report["prediction"]["calibrated"] is False
    assert report["predicted_peak_bytes"] > cost.weights_bytes("sonic", "fp16")
    load = cost.workload(125, 512, 25)
    assert load.unet_calls == 125  # MODEL.md §7.6: 5 windows × 25 steps
    assert report["predicted_seconds"] > load.stages["sampling"].work / 125e12  # never above the GPU's peak
