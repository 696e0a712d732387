"""price_graph on API-format prompts: links, primitives, whole-audio durations, several samplers, tiers."""

from __future__ import annotations

import copy

import pytest
from sonic_testing import basic_prompt, seconds_of

from sonic_core.metering.graph_pricing import GraphCostError, price_graph
from sonic_core.metering.tiers import Tier, load_tiers
from sonic_core.tokens import estimate_tokens


def price(prompt: dict, tier="api", **kwargs):
    return price_graph(prompt, tier=tier, audio_duration=seconds_of, **kwargs)


def test_whole_audio_duration_comes_from_the_loaded_file():
    cost = price(basic_prompt(steps=25, dynamic=1.1, motion=1.05))
    (job,) = cost.jobs
    assert job.node_id == "5" and job.duration == 6.6
    assert job.tokens == cost.total_tokens == estimate_tokens(6.6, 512, 25, 1.1, 1.05)
    assert (job.resolution, job.steps, job.dynamic_scale, job.motion_scale) == (512, 25, 1.1, 1.05)
    assert job.frames == 82  # 6.6 s -> 165 audio frames at 25 fps -> 82 generated at 12.5 fps
    assert cost.allowed and cost.metered


def test_explicit_duration_wins_over_the_audio_length():
    cost = price(basic_prompt(duration=3.0, resolution=768))
    assert cost.jobs[0].duration == 3.0 and cost.total_tokens == estimate_tokens(3.0, 768, 20)


def test_literals_may_be_links_to_primitive_nodes():
    prompt = basic_prompt()
    prompt["10"] = {"class_type": "PrimitiveInt", "inputs": {"value": 30}}
    prompt["11"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 1.4}}
    prompt["12"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 2.5}}
    prompt["13"] = {"class_type": "PrimitiveString", "inputs": {"value": "long.wav"}}
    prompt["5"]["inputs"].update(steps=["10", 0], dynamic_scale=["11", 0])
    prompt["4"]["inputs"]["duration"] = ["12", 0]
    assert price(prompt).total_tokens == estimate_tokens(2.5, 512, 30, 1.4, 1.0)
    prompt["4"]["inputs"]["duration"] = 0
    prompt["3"]["inputs"]["audio"] = ["13", 0]
    assert price(prompt).jobs[0].duration == 61.0


def test_duration_linked_to_load_audio_duration_output():
    prompt = basic_prompt()
    prompt["6"] = {"class_type": "SonicLoadAudioDuration",
                   "inputs": {"audio_file": "long.wav", "requested_duration": 0.0}}
    prompt["4"]["inputs"].update(audio=["6", 0], duration=["6", 1])
    assert price(prompt).jobs[0].duration == 61.0
    # the AUDIO may itself come from core LoadAudio through SonicLoadAudioDuration
    prompt["6"]["inputs"] = {"audio": ["3", 0], "requested_duration": 2.0}
    assert price(prompt).jobs[0].duration == 6.6
    prompt["4"]["inputs"]["duration"] = ["6", 0]
    with pytest.raises(GraphCostError, match="duration output"):
        price(prompt)


def test_unknowable_duration_names_the_node():
    prompt = basic_prompt()
    prompt["3"] = {"class_type": "SomeTextToSpeech", "inputs": {"text": "hello"}}
    with pytest.raises(GraphCostError, match=r"node 4 \(SonicPreData\) input 'audio' comes from node 3 "
                                             r"\(SomeTextToSpeech\).*set the SonicPreData duration"):
        price(prompt)
    prompt["4"]["inputs"]["duration"] = 4.0  # a fixed duration needs no audio length
    assert price(prompt).jobs[0].duration == 4.0


def test_value_from_a_non_primitive_node_is_an_error():
    prompt = basic_prompt()
    prompt["9"] = {"class_type": "SomeMathNode", "inputs": {"a": 1}}
    prompt["5"]["inputs"]["steps"] = ["9", 0]
    with pytest.raises(GraphCostError, match=r"node 5 input 'steps' comes from node 9 \(SomeMathNode\)"):
        price(prompt)


@pytest.mark.parametrize("change,pattern", [
    (lambda p: p["5"]["inputs"].pop("predata"), r"node 5 \(SonicSampler\) input 'predata' is not connected"),
    (lambda p: p["5"]["inputs"].update(predata=["42", 0]), r"links to node '42', which is not in the prompt"),
    (lambda p: p["5"]["inputs"].update(steps="many"), r"input 'steps' must be a number"),
    (lambda p: p["4"]["inputs"].update(min_resolution=500), r"SonicSampler node 5: min_resolution"),
    (lambda p: p["3"]["inputs"].update(audio=""), r"node 3 \(LoadAudio\) has no audio file"),
    (lambda p: p["4"]["inputs"].update(duration=-1.0), r"SonicSampler node 5: duration"),
])
def test_broken_graphs_raise_one_line_errors(change, pattern):
    prompt = basic_prompt()
    change(prompt)
    with pytest.raises(GraphCostError, match=pattern):
        price(prompt)


def test_primitive_cycle_is_an_error_not_a_hang():
    prompt = basic_prompt()
    prompt["7"] = {"class_type": "PrimitiveInt", "inputs": {"value": ["8", 0]}}
    prompt["8"] = {"class_type": "PrimitiveInt", "inputs": {"value": ["7", 0]}}
    prompt["5"]["inputs"]["steps"] = ["7", 0]
    with pytest.raises(GraphCostError):
        price(prompt)


def test_several_samplers_are_summed_in_node_order():
    prompt = basic_prompt(duration=2.0)
    second = copy.deepcopy(prompt)
    prompt["14"] = second["4"] | {"inputs": {**second["4"]["inputs"], "duration": 5.0, "min_resolution": 768}}
    prompt["15"] = second["5"] | {"inputs": {**second["5"]["inputs"], "predata": ["14", 0], "steps": 10}}
    cost = price(prompt)
    assert [job.node_id for job in cost.jobs] == ["5", "15"]
    assert cost.total_tokens == estimate_tokens(2.0, 512, 20) + estimate_tokens(5.0, 768, 10)


def test_the_streaming_sampler_is_priced_as_the_image_sampler():
    image_prompt = basic_prompt(duration=2.0)
    streamed = copy.deepcopy(image_prompt)
    streamed["5"]["class_type"] = "SonicSamplerToVideo"
    image_cost, streamed_cost = price(image_prompt), price(streamed)
    assert [job.node_id for job in streamed_cost.jobs] == ["5"]
    assert streamed_cost.to_dict() == image_cost.to_dict() and streamed_cost.total_tokens > 0
    streamed["5"]["inputs"]["steps"] = 0
    with pytest.raises(GraphCostError, match="SonicSamplerToVideo node 5: steps"):
        price(streamed)


def test_graph_without_sampler_costs_nothing():
    cost = price({"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}}, tier="standard")
    assert (cost.jobs, cost.total_tokens, cost.allowed, cost.predicted_seconds) == ((), 0, True, None)


def test_tier_verdicts_per_sampler_and_on_the_total():
    tiers = load_tiers()
    ok = price(basic_prompt(duration=10.0), tier="standard")
    assert ok.allowed and ok.total_tokens == 100 and not ok.metered
    hi = price(basic_prompt(duration=10.0, resolution=1024, steps=25), tier="standard")
    assert not hi.allowed and "node 5" in hi.reason and "1024 px" in hi.reason and "25 steps" in hi.reason
    assert price(basic_prompt(duration=10.0, resolution=1024, steps=25), tier=tiers["pro"]).allowed
    # two samplers of 300 tokens each: each fits the 500 cap, the prompt (one charge) does not
    prompt = basic_prompt(duration=30.0)
    prompt["15"] = copy.deepcopy(prompt["5"])
    cost = price(prompt, tier="standard")
    assert [job.allowed for job in cost.jobs] == [True, True]
    assert not cost.allowed and "the prompt's 600 tokens exceed the tier's cap of 500" in cost.reason
    custom = {"tiny": Tier("tiny", max_tokens_per_job=50)}
    assert not price(basic_prompt(duration=10.0), tier="tiny", tiers=custom).allowed
    with pytest.raises(ValueError, match="unknown tier 'gold'"):
        price(basic_prompt(), tier="gold")


def test_summary_and_dict_are_consistent():
    cost = price(basic_prompt(duration=10.0), tier="standard")
    data = cost.to_dict()
    assert data["total_tokens"] == 100 and data["jobs"][0]["node_id"] == "5" and data["allowed"]
    assert cost.summary().startswith("100 tokens (1 Sonic Sampler), tier standard: allowed")


def test_not_a_graph():
    with pytest.raises(GraphCostError, match="API-format graph"):
        price(["not", "a", "graph"])


def with_loader(weights: str, dtype: str, device: str, fps: float = 25.0, shared: tuple[str, ...] = ()) -> dict:
    prompt = basic_prompt(steps=10)
    prompt["1"]["inputs"].update(weights=weights, dtype=dtype, device=device)
    prompt["5"]["inputs"]["fps"] = fps
    if shared:  # the core loader's VAE (output 2) / CLIP_VISION (output 1) connected to the Sonic Loader
        prompt["9"] = {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": "svd_xt.safetensors"}}
        prompt["1"]["inputs"].update({name: ["9", {"vae": 2, "clip_vision": 1}[name]] for name in shared})
    return prompt


@pytest.mark.parametrize("weights, dtype, device, server, fps, shared, expected", [
    ("demo (tiny, untrained)", "fp32", "cpu", "cpu", 25.0, (), ("cpu", "fp32", "tiny", True)),
    ("demo (tiny, untrained)", "fp16", "auto", "cpu", 12.5, (), ("cpu", "fp32", "tiny", False)),  # fp16 runs as fp32
    ("demo (tiny, untrained)", "fp32", "cpu", "cpu", 25.0, ("vae",), ("cpu", "fp32", "sonic", True)),  # SVD's VAE
    ("demo (tiny, untrained)", "fp32", "cpu", "cpu", 25.0, ("clip_vision",), ("cpu", "fp32", "sonic", True)),
    ("/models/sonic", "fp16", "cuda:0", "h100", 25.0, (), ("h100", "fp16", "sonic", True)),
    ("/models/sonic", "bf16", "auto", "a100", 25.0, ("vae", "clip_vision"), ("a100", "bf16", "sonic", True)),
    ("/models/sonic", "fp16", "cpu", "h100", 25.0, (), ("cpu", "fp32", "sonic", True)),
])
def test_predictions_follow_the_loaders_model_dtype_and_device(weights, dtype, device, server, fps, shared, expected):
    from sonic_core.metering.cost import predict

    prediction_device, prediction_dtype, model, interpolate = expected
    (job,) = price(with_loader(weights, dtype, device, fps, shared), device=server, dtype="fp16").jobs
    want = predict(job.frames, job.resolution, job.steps, prediction_device, prediction_dtype, model=model,
                   interpolate=interpolate)
    assert (job.predicted_seconds, job.predicted_peak_bytes) == (want.seconds, want.peak_bytes)
    assert job.predicted_profile == f"{prediction_device}/{prediction_dtype}/{model}"


@pytest.mark.parametrize("name, profile", [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h100"),
                                           ("NVIDIA A100-SXM4-40GB", "a100"), ("NVIDIA L4", "l4"),
                                           ("NVIDIA A10G", "a10g"), ("NVIDIA GeForce RTX 4090", "cuda")])
def test_a_gpu_is_priced_by_its_own_profile_when_one_exists(name, profile):
    from sonic_core.metering.cost import gpu_profile

    assert gpu_profile(name) == profile


GIB = 1024 ** 3


@pytest.mark.parametrize("name, memory, sms, compute, profile, says", [
    ("NVIDIA H100 80GB HBM3", 80, 132, (9, 0), "h100", "NVIDIA H100 80GB HBM3 (compute 9.0, 132 SMs, 80 GiB): "
                                                       "its own h100 profile"),
    ("NVIDIA GeForce RTX 4090", 24, 128, (8, 9), "a100", "NVIDIA GeForce RTX 4090 is not in the cost model: priced "
                                                         "as A100-class from its properties (compute 8.9, 128 SMs, "
                                                         "24 GiB)"),
    ("NVIDIA GeForce RTX 4060", 8, 24, (8, 9), "l4", "priced as L4-class"),
    ("NVIDIA A40", 48, 84, (8, 6), "a10g", "priced as A10G-class"),
    ("Tesla T4", 15, 40, (7, 5), "a10g", "priced as A10G-class"),  # older than every profile: the default class
    ("NVIDIA B200", 180, 148, (10, 0), "h100", "priced as H100-class"),  # newer than Hopper
])
def test_an_unknown_gpu_is_priced_from_its_properties_and_says_so(name, memory, sms, compute, profile, says):
    from sonic_core.metering.cost import GpuProperties, gpu_pricing

    pricing = gpu_pricing(GpuProperties(name, memory * GIB, sms, *compute))
    assert pricing.profile == profile and says in pricing.note
