"""The pipeline nodes inside a real ComfyUI: model memory freed by POST /free and reloaded, cancel mid-sampling, and
the core Image Only Checkpoint Loader's SVD VAE and CLIP_VISION fed to the Sonic Loader from an
extra_model_paths.yaml folder."""

import json

import pytest
from comfyui_harness import ComfyServer, copy_demo_inputs, ensure_comfyui, write_synthetic_svd_xt
from sonic_testing import REPO, svd_header_file, write_findable_weight_set

from sonic_core import timing
from sonic_core.audio import audio_duration
from sonic_core.models.vae import VAEConfig
from sonic_core.settings import SonicSettings
from sonic_core.video import probe
from sonic_core.weights.tiny import TINY_CONFIGS

pytestmark = pytest.mark.comfyui


def short_basic_prompt(prefix: str, steps: int = 1, duration: float = 0.48) -> dict:
    """workflows/api/sonic_basic.json cut to ``duration`` seconds and ``steps`` steps, saving under ``prefix``."""
    prompt = json.loads((REPO / "workflows" / "api" / "sonic_basic.json").read_text())
    node = {n["class_type"]: n for n in prompt.values()}
    node["SonicPreData"]["inputs"].update(duration=duration, fit="trim")
    node["SonicSampler"]["inputs"]["steps"] = steps
    node["SonicVideoCombine"]["inputs"]["filename_prefix"] = prefix
    return prompt


def video_frames(server, prompt_id: str) -> int:
    outputs = server.history(prompt_id)["outputs"]
    preview = next(out for out in outputs.values() if "animated" in out)["images"][0]
    return probe(server.output_dir / preview["subfolder"] / preview["filename"])["video"]["frames"]


def test_model_memory_is_freed_by_comfyui_and_the_graph_runs_again(comfyui_server):
    prompt = short_basic_prompt("free/Sonic")
    first_id, messages = comfyui_server.run_prompt(prompt)
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    # unload_models only: "free_memory" also resets ComfyUI's node cache, and whether that happens before or after
    # the next prompt depends on when the worker next wakes up (a race), so the cached Loader could re-run or not
    assert comfyui_server.post("/free", {"unload_models": True})[0] == 200
    second_id, messages = comfyui_server.run_prompt(short_basic_prompt("free/Sonic", steps=2))
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    ran = [m["data"]["node"] for m in messages if m["type"] == "executing" and m["data"].get("node")]
    assert "4" not in ran and "6" in ran  # the cached Loader's model was reloaded, not rebuilt
    assert video_frames(comfyui_server, first_id) == video_frames(comfyui_server, second_id) == 6


def test_cancel_during_sampling_is_an_interrupt_and_writes_nothing(comfyui_server):
    prompt = short_basic_prompt("cancelled_sampling/Sonic", steps=20)
    pressed = []

    def cancel_on_first_step(message):
        if message["type"] == "progress" and message["data"].get("node") == "6" and not pressed:
            pressed.append(message["data"]["value"])
            assert comfyui_server.post("/interrupt", {})[0] == 200

    _, messages = comfyui_server.run_prompt(prompt, on_message=cancel_on_first_step)
    assert messages[-1]["type"] == "execution_interrupted", json.dumps(messages[-1])[:2000]
    assert pressed and pressed[0] < 20
    assert not any((comfyui_server.output_dir / "cancelled_sampling").glob("*"))


# --- Cancel while the streamed Sampler samples or decodes: nothing written, nothing held, the server serves on ----

SPEECH_FRAMES = timing.generated_frames(audio_duration(REPO / "sonic_core" / "assets" / "speech.wav"))  # 82
DECODE_CHUNKS = -(-SPEECH_FRAMES // SonicSettings().decode_chunk_size)  # 11


def streamed_prompt(seed: int, duration: float = 0.0, probe: str | None = None) -> dict:
    """Portrait + the bundled speech -> PreData (256 px) -> Sonic Sampler (to video, 2 steps) -> Save Video; with
    ``probe``, the live-tensor probe after the Loader and PreData in place of the Sampler."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "portrait.jpg"}},
        "2": {"class_type": "SonicLoadAudioDuration", "inputs": {"audio_file": "speech.wav",
                                                                  "requested_duration": 0.0}},
        "3": {"class_type": "SonicLoader", "inputs": {"weights": "demo (tiny, untrained)", "dtype": "fp32",
                                                      "device": "cpu"}},
        "4": {"class_type": "SonicPreData", "inputs": {"image": ["1", 0], "audio": ["2", 0], "duration": duration,
                                                       "min_resolution": 256, "expand_ratio": "auto",
                                                       "fit": "trim" if duration else "error"}},
    }
    if probe is not None:
        return {**prompt, "9": {"class_type": "SonicProbeLiveTensors", "inputs": {"model": ["3", 0],
                                                                                 "predata": ["4", 0], "tag": probe}}}
    return {**prompt,
            "5": {"class_type": "SonicSamplerToVideo", "inputs": {"model": ["3", 0], "predata": ["4", 0], "steps": 2,
                                                                  "seed": seed, "fps": 12.5, "dynamic_scale": 1.0,
                                                                  "motion_scale": 1.0, "audio_guidance": 7.5,
                                                                  "appearance_guidance": 2.0}},
            "6": {"class_type": "SaveVideo", "inputs": {"video": ["5", 0], "filename_prefix": f"streamed_{seed}/Sonic",
                                                        "format": "auto", "codec": "auto"}}}


def live_tensor_bytes(server, tag: str) -> dict:
    prompt_id, messages = server.run_prompt(streamed_prompt(0, probe=tag))
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    return json.loads(server.history(prompt_id)["outputs"]["9"]["text"][0])


def cancel_in_stage(server, stage: str, seed: int) -> None:
    """Queue the streamed graph and POST /interrupt once the Sampler's progress bar (UNet calls, then decoded
    chunks) reports the stage's first unit; the prompt ends interrupted inside that stage, writing nothing."""
    temp_before = {path for path in server.temp_dir.rglob("*") if path.is_file()}
    seen: list[tuple[int, int]] = []
    pressed: list[int] = []

    def press(message):
        data = message["data"]
        if message["type"] != "progress" or data.get("node") != "5":
            return
        calls = data["max"] - DECODE_CHUNKS
        in_stage = data["value"] <= calls if stage == "sampling" else data["value"] > calls
        if in_stage and not pressed:
            pressed.append(data["value"])
            assert server.post("/interrupt", {})[0] == 200
        seen.append((data["value"], calls))

    _, messages = server.run_prompt(streamed_prompt(seed), on_message=press)
    assert messages[-1]["type"] == "execution_interrupted", json.dumps(messages[-1])[:2000]
    last, calls = seen[-1]
    assert last < calls if stage == "sampling" else calls < last < calls + DECODE_CHUNKS  # stopped inside the stage
    assert not (server.output_dir / f"streamed_{seed}").exists()
    assert {path for path in server.temp_dir.rglob("*") if path.is_file()} == temp_before  # not even a partial


def test_cancel_while_sampling_and_decoding_frees_everything_and_the_server_serves_on(comfyui_server):
    """Sonic Sampler (to video) cancelled while sampling, then while decoding: each prompt ends interrupted with no
    video in the output or temp folders; the tensors the server's Python still reaches afterwards are those it
    held before (within less than the run's own latents: a held traceback, pipeline or chunk would hold at least
    those); and the next prompt runs to a video."""
    server = comfyui_server
    before = live_tensor_bytes(server, "before")  # the Loader's model and PreData's inputs, now cached
    vae = VAEConfig.from_dict(TINY_CONFIGS.vae)  # the demo model's: 32 pixels a latent pixel
    latent_bytes = SPEECH_FRAMES * vae.latent_channels * (256 // vae.downscale) ** 2 * 4
    for seed, stage in enumerate(("sampling", "decoding"), 11):
        cancel_in_stage(server, stage, seed)
        after = live_tensor_bytes(server, f"after {stage}")
        print(f"{stage}: live tensors {before['bytes']} B before, {after['bytes']} B after; latents {latent_bytes} B")
        assert after["bytes"] - before["bytes"] < latent_bytes, (before, after)
    prompt_id, messages = server.run_prompt(streamed_prompt(13, duration=0.48))
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    (saved,) = server.history(prompt_id)["outputs"]["6"]["images"]
    assert probe(server.output_dir / saved["subfolder"] / saved["filename"])["video"]["frames"] == 6


# --- SVD loaded by ComfyUI's core loader, shared with the Sonic Loader --------------------------------------------

SVD_CKPT = "video/svd_xt.safetensors"  # in a subfolder of a checkpoints folder only extra_model_paths.yaml names


@pytest.fixture(scope="module")
def svd_server(tmp_path_factory):
    """A server whose extra_model_paths.yaml adds a checkpoints folder (a synthetic svd_xt in a subfolder, an
    svd_xt_image_decoder look-alike beside it) and a sonic folder (a weight set without audio2bucket.pth)."""
    install = ensure_comfyui()
    base = tmp_path_factory.mktemp("comfyui-svd")
    extra = base / "extra_models"
    counts = write_synthetic_svd_xt(extra / "ckpts" / SVD_CKPT, install)
    svd_header_file(extra / "ckpts" / "video" / "svd_xt_image_decoder.safetensors", temporal=False)
    write_findable_weight_set(extra / "sonic_weights", None, skip=("Sonic/audio2bucket.pth",))
    config = base / "extra_model_paths.yaml"
    config.write_text(f"sonic_test:\n    base_path: {extra}\n    checkpoints: ckpts\n    sonic: sonic_weights\n")
    server = ComfyServer(install, base)
    try:
        server.start(extra_args=("--extra-model-paths-config", str(config)))
        copy_demo_inputs(server)
        server.svd_parameters = counts
        server.extra_models = extra
        yield server
    finally:
        server.stop()
        (extra / "ckpts" / SVD_CKPT).unlink(missing_ok=True)  # 1.9 GB


@pytest.mark.slow  # writes a 1.9 GB checkpoint (SVD's full VAE and ViT-H image encoder) and runs them on the CPU
def test_weights_list_sees_the_folders_of_extra_model_paths(svd_server):
    info = svd_server.get("/object_info")
    assert SVD_CKPT in info["ImageOnlyCheckpointLoader"]["input"]["required"]["ckpt_name"][0]
    weights = info["SonicLoader"]["input"]["required"]["weights"]
    options = weights[1]["options"] if weights[0] == "COMBO" else weights[0]
    sonic = svd_server.extra_models / "sonic_weights"
    assert f"{sonic} (incomplete, missing: audio2bucket.pth)" in options  # the svd_xt in ckpts/video/ was found


@pytest.mark.slow
def test_core_svd_loader_feeds_the_sonic_loader_with_one_copy_in_memory(svd_server):
    prompt = short_basic_prompt("shared_svd/Sonic")
    prompt["10"] = {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": SVD_CKPT}}
    prompt["4"]["inputs"].update(vae=["10", 2], clip_vision=["10", 1])
    prompt["11"] = {"class_type": "SonicProbeShared", "inputs": {"model": ["4", 0], "vae": ["10", 2],
                                                                 "clip_vision": ["10", 1]}}
    prompt_id, messages = svd_server.run_prompt(prompt, timeout=1800)
    assert messages[-1]["type"] == "execution_success", json.dumps(messages[-1])[:2000]
    assert video_frames(svd_server, prompt_id) == 6
    report = json.loads(svd_server.history(prompt_id)["outputs"]["11"]["text"][0])
    print("shared SVD weights:", json.dumps(report))
    for part, parameters in (("vae", svd_server.svd_parameters["vae"]), ("clip", svd_server.svd_parameters["clip"])):
        used = report[part]
        assert used["shared_bytes"] == used["comfy_bytes"] >= 2 * parameters  # all of ComfyUI's tensors, in use
    assert report["clip"]["extra_bytes"] == 0
    assert report["vae"]["extra_bytes"] == 4 * (8 * 8 + 8)  # only the identity quant_conv the single file implies
