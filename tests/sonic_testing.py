"""Helpers shared by the tests (import them as ``from sonic_testing import ...``; conftest.py files only hold
fixtures, since several of them exist). The repo root is on sys.path (pytest.ini's pythonpath), so
``import sonic_core`` works."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KEYS = REPO / "tests" / "data" / "keys"  # the published checkpoints' key lists
# Templates in the template browser: ComfyUI 0.3.75's frontend (1.32.9) shows a custom node pack's template by its
# file name, as the title and (with "-" and "_" as spaces) as the description, and loads the thumbnail from the
# ``<file name>.jpg`` beside it: so each UI file is named by its title, its API twin by a short name.
TEMPLATE_TITLES = {
    "sonic_basic": "Sonic basic, one portrait and one voice to a talking head video",
    "sonic_full": "Sonic full, lip sync check, 25 fps smoothing and the Token Meter",
    "sonic_audio_to_video": "Sonic audio to video, a voice track over a plain frame (no model)",
}


def template_ui_path(api_file: Path) -> Path:
    """The UI twin of ``workflows/api/NAME.json``: ``workflows/<its title>.json``."""
    return REPO / "workflows" / f"{TEMPLATE_TITLES[api_file.stem]}.json"


def golden_dir() -> Path:
    """Fixture set of the golden parity tests: $SONIC_GOLDEN_DIR, default ../shared/sonic/golden."""
    return Path(os.environ.get("SONIC_GOLDEN_DIR", REPO.parent / "shared" / "sonic" / "golden"))


def golden_manifest() -> list[dict]:
    """The fixtures listed in the golden manifest (empty when the set is absent)."""
    manifest = golden_dir() / "manifest.json"
    if not manifest.is_file():
        return []
    return json.loads(manifest.read_text())["fixtures"]


def load_pack(name: str = "sonic_pack") -> ModuleType:
    """Import the repo root as a package the way ComfyUI imports a custom node folder."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pack_nodes(pack: ModuleType) -> dict[str, type]:
    """The pack's node classes by node id, as ComfyUI registers them: from ``comfy_entrypoint``'s extension."""
    async def node_list() -> list[type]:
        return await (await pack.comfy_entrypoint()).get_node_list()

    return {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(node_list())}


def run_node(cls: type, hidden: dict | None = None, **inputs: Any) -> Any:
    """Execute a node as ComfyUI's executor does: a clone of the class carrying the hidden inputs (keys are
    ``io.Hidden`` members), ``execute`` normalised to an ``io.NodeOutput`` (``.args``, ``.ui``)."""
    return cls.PREPARE_CLASS_CLONE(hidden or {}).EXECUTE_NORMALIZED(**inputs)


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m sonic_core ARGS`` in a fresh interpreter, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sonic_core", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


@contextmanager
def started_cli(*args: str) -> Iterator[subprocess.Popen]:
    """``python -m sonic_core ARGS`` started in the background (text pipes for its output), as a user starts it;
    killed and reaped if the test ends before it does."""
    proc = subprocess.Popen([sys.executable, "-m", "sonic_core", *args], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def checkpoint_key_list(name: str) -> list[tuple[str, tuple[int, ...], str]]:
    """``(key, shape, dtype)`` rows of ``tests/data/keys/NAME.tsv``, the published checkpoint's key list in order."""
    rows = (KEYS / f"{name}.tsv").read_text().splitlines()[1:]
    out = []
    for row in rows:
        key, shape, _numel, dtype = row.split("\t")
        out.append((key, tuple(int(s) for s in shape.split(",") if s), dtype))
    return out


def state_dict_rows(module) -> list[tuple[str, tuple[int, ...], str]]:
    """``(key, shape, dtype)`` rows of ``module.state_dict()``, comparable with :func:`checkpoint_key_list`."""
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]


def max_rel(got, want) -> float:
    """The parity metric of the goldens: ``max|got − want| / max|want|`` in float64."""
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    scale = want.abs().max().item()
    err = (got.double() - want.double()).abs().max().item()
    return err / scale if scale else err


def perturb_(module, seed: int, std: float = 0.05) -> None:
    """Add N(0, std²) noise to every floating tensor of ``module``'s state dict, as the golden fixtures do, so that
    no weight keeps a structured initial value (zero biases, unit LayerNorm gains) that could hide a wiring error."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) * std)


def write_official_layout(root: Path, models) -> None:
    """``models`` (:class:`sonic_core.models.bundle.SonicModels`) saved the way the published files are: Sonic
    .pth pickles under Sonic/, whisper-tiny as a WhisperForConditionalGeneration safetensors, SVD as a diffusers
    folder with fp16 variants, RIFE with the DataParallel ``module.`` prefix."""
    import torch
    from safetensors.torch import save_file

    (root / "Sonic").mkdir(parents=True)
    for name in ("unet", "audio2token", "audio2bucket"):
        torch.save(getattr(models, name).state_dict(), root / "Sonic" / f"{name}.pth")
    (root / "whisper-tiny").mkdir()
    whisper = {"model." + k: v.contiguous() for k, v in models.whisper.state_dict().items()}
    whisper["model.decoder.embed_tokens.weight"] = torch.zeros(4, 2)
    save_file(whisper, root / "whisper-tiny" / "model.safetensors")
    svd = root / "stable-video-diffusion-img2vid-xt"
    (svd / "vae").mkdir(parents=True)
    (svd / "image_encoder").mkdir()
    save_file({k: v.half().contiguous() for k, v in models.vae.state_dict().items()},
              svd / "vae" / "diffusion_pytorch_model.fp16.safetensors")
    clip = {k: v.half().contiguous() for k, v in models.image_encoder.state_dict().items()}
    clip["vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    save_file(clip, svd / "image_encoder" / "model.fp16.safetensors")
    (root / "RIFE").mkdir()
    torch.save({"module." + k: v for k, v in models.rife.state_dict().items()}, root / "RIFE" / "flownet.pkl")


def svd_header_file(path: Path, temporal: bool = True, clip: bool = True) -> Path:
    """A safetensors file with the key names that tell an SVD checkpoint (one tiny tensor each): enough to be found
    as one (``temporal=False``: an svd_xt_image_decoder look-alike), not to be loaded."""
    import torch
    from safetensors.torch import save_file

    from sonic_core.weights.svd_single_file import CLIP_PREFIX, VAE_PREFIX

    decoder = "decoder.up.0.block.0." + ("time_stack.in_layers.0.weight" if temporal else "norm1.weight")
    names = [VAE_PREFIX + "encoder.conv_in.weight", VAE_PREFIX + decoder, "model.diffusion_model.out.2.weight"]
    names += [CLIP_PREFIX + "proj"] if clip else []
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: torch.zeros(1) for name in names}, path)
    return path


SONIC_SET_FILES = ("Sonic/unet.pth", "Sonic/audio2token.pth", "Sonic/audio2bucket.pth",
                   "whisper-tiny/model.safetensors")


def write_findable_weight_set(sonic_dir: Path, checkpoint: Path | None, skip: tuple[str, ...] = ()) -> None:
    """Files where a ComfyUI weight set is looked for (the Sonic files under ``sonic_dir``, an SVD header file at
    ``checkpoint``), minus ``skip``: enough to be listed, not to be loaded."""
    for name in SONIC_SET_FILES:
        if name not in skip:
            (sonic_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (sonic_dir / name).write_bytes(b"x")
    if checkpoint is not None:
        svd_header_file(checkpoint)


# -- graph pricing: a stand-in audio folder and the basic template as an API prompt ------------------------------

AUDIO_SECONDS = {"speech.wav": 6.6, "long.wav": 61.0}


def seconds_of(name: str) -> float:
    if name not in AUDIO_SECONDS:
        raise FileNotFoundError(name)
    return AUDIO_SECONDS[name]


def basic_prompt(duration=0.0, resolution=512, steps=20, dynamic=1.0, motion=1.0, audio="speech.wav") -> dict:
    """Load Image + LoadAudio -> SonicPreData -> SonicSampler, as the UI's graphToPrompt exports it."""
    return {
        "1": {"class_type": "SonicLoader", "inputs": {"weights": "demo (tiny, untrained)", "dtype": "fp32",
                                                       "device": "cpu"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "portrait.png"}},
        "3": {"class_type": "LoadAudio", "inputs": {"audio": audio}},
        "4": {"class_type": "SonicPreData", "inputs": {"image": ["2", 0], "audio": ["3", 0], "duration": duration,
                                                        "min_resolution": resolution, "expand_ratio": "auto"}},
        "5": {"class_type": "SonicSampler", "inputs": {"model": ["1", 0], "predata": ["4", 0], "steps": steps,
                                                        "dynamic_scale": dynamic, "motion_scale": motion,
                                                        "seed": 1, "audio_guidance": 7.5,
                                                        "appearance_guidance": 2.0, "fps": 25.0}},
    }


# -- bad inputs: files a user might feed the engine, and the one-line-error check --------------------------------

PORTRAIT = REPO / "sonic_core" / "assets" / "portrait.jpg"
SPEECH = REPO / "sonic_core" / "assets" / "speech.wav"


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in its header (and holds no pixel data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) \
        + chunk(b"IEND", b"")


def bad_image(kind: str, folder: Path) -> Path:
    """A portrait file of the given ``kind`` written into ``folder`` (or only named there: missing, too long)."""
    import numpy as np
    from PIL import Image

    portrait = Image.open(PORTRAIT)
    path = folder / f"{kind}.png"
    if kind == "i16":
        Image.fromarray(np.asarray(portrait.convert("L")).astype(np.uint16) * 257).save(path)
    elif kind in ("P", "RGBA", "LA", "L"):
        portrait.convert(kind).save(path)
    elif kind == "CMYK":
        path = folder / "cmyk.jpg"
        portrait.convert("CMYK").save(path)
    elif kind == "gif":
        path = folder / "animated.gif"
        frames = [portrait.convert("P"), portrait.rotate(10).convert("P")]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif kind == "truncated":
        path = folder / "truncated.jpg"
        path.write_bytes(PORTRAIT.read_bytes()[:len(PORTRAIT.read_bytes()) // 3])
    elif kind == "no_face":
        Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(path)
    elif kind == "tiny":
        portrait.resize((8, 8)).save(path)
    elif kind == "bomb":  # past PIL's own DecompressionBombError limit
        path.write_bytes(png_header(20_000, 20_000))
    elif kind == "huge":  # 110 MP: under PIL's error limit, over ours
        path.write_bytes(png_header(11_000, 10_000))
    elif kind == "text":
        path.write_text("not an image\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "long_name":
        path = folder / ("p" * 300 + ".png")
    elif kind == "newline_name":
        path = folder / "por\ntrait.png"
    elif kind != "missing":
        raise ValueError(kind)
    return path


def bad_audio(kind: str, folder: Path) -> Path:
    """An audio file of the given ``kind`` written into ``folder`` (or only named there: missing, too long)."""
    import numpy as np
    import soundfile

    path = folder / f"{kind}.wav"
    if kind == "empty":
        soundfile.write(path, np.zeros(0, np.float32), 16000)
    elif kind == "10ms":
        soundfile.write(path, np.full(160, 0.1, np.float32), 16000)
    elif kind == "silent":
        soundfile.write(path, np.zeros(16000, np.float32), 16000)
    elif kind == "nan":
        samples = np.full(16000, 0.1, np.float32)
        samples[100:200] = np.nan
        soundfile.write(path, samples, 16000, subtype="FLOAT")
    elif kind == "wrong_extension":
        path = folder / "speech.mp3"
        path.write_text("this is text, not audio\n")
    elif kind == "corrupt_header":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    elif kind == "directory":
        path.mkdir()
    elif kind == "long_name":
        path = folder / ("a" * 300 + ".wav")
    elif kind == "newline_name":
        path = folder / "spe\nech.wav"
    elif kind != "missing":
        raise ValueError(kind)
    return path


def unwritable_folder(folder: Path) -> Path:
    """A folder in which no file can be created, also for root (who ignores permission bits): a read-only
    folder when that holds, else sysfs."""
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()
    return Path("/sys/kernel")


def assert_one_line(message: str, *needles: str) -> None:
    """An error message a user sees: one line, no traceback, naming every needle."""
    assert message.strip() and "\n" not in message.strip(), message
    assert "Traceback" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def files_in(folder: Path) -> set[Path]:
    """Every file and folder under ``folder`` (to check that a refused input left nothing behind)."""
    return set(folder.rglob("*"))


def speech_clips(folder: Path, count: int) -> list[Path]:
    """``count`` short clips (0.8 s, 0.85 s, ...) cut 0.4 s apart from the bundled speech: small jobs for the real
    servers of the fleet tests."""
    import soundfile

    speech, rate = soundfile.read(SPEECH, dtype="float32")
    paths = []
    for index in range(count):
        start, seconds = int(index * 0.4 * rate), 0.8 + 0.05 * index
        paths.append(folder / f"clip{index:02d}.wav")
        soundfile.write(paths[-1], speech[start:start + int(seconds * rate)], rate)
    return paths


# -- host memory of a run, measured in a child process ---------------------------------------------------------------

def heap_in_use() -> int:
    """Bytes of this process's C heap in use (glibc ``mallinfo2``: arena blocks + mmapped blocks in use), every live
    malloc'd byte, torch's CPU tensors included. Live heap bytes, not RSS: on this shared machine two identical
    runs' VmHWM differed by up to 160 MB (freed memory returned to the system or not, library pages), their live
    heaps by 2 kB."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                          "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


def square_reference(size: int):
    """A prepared ``size`` × ``size`` portrait (a gray image, random reference pixels, the face in the middle
    half), so that a run needs no face detection; draws from torch's global generator."""
    import numpy as np
    import torch
    from PIL import Image

    from sonic_core.face.box import FaceBox
    from sonic_core.face.crop import Reference

    image = Image.fromarray(np.full((size, size, 3), 128, np.uint8))
    box = FaceBox(size / 4, size / 4, size / 2, size / 2)
    return Reference(image=image, ref_image=torch.rand(3, size, size) * 2 - 1, face_mask=torch.ones(1, size, size),
                     face_box=box, crop_box=(0, 0, size, size), mask_box=box, expand_ratio=0.5, clip_source=image)


def tone(seconds: float):
    """``seconds`` of a quiet 16 kHz sine (float32), synthesised speech for long runs."""
    import numpy as np

    return np.float32(0.1) * np.sin(np.arange(int(seconds * 16000), dtype=np.float32) * np.float32(0.05))


def run_measured(script: str, *args: str, timeout: float = 900) -> list[dict]:
    """Run a measuring ``script`` (Python source; ``sonic_testing`` importable) in a fresh interpreter with one
    OpenMP thread, from the repo root, and return the JSON list it prints on its last line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.splitlines()[-1])
