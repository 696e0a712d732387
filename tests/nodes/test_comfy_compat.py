import importlib
import os

import pytest
from sonic_testing import load_pack

from sonic_core.errors import SonicInputError, SonicInterrupted


@pytest.fixture()
def compat():
    load_pack()
    return importlib.import_module("sonic_pack.nodes.comfy_compat")


@pytest.fixture()
def comfy_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SONIC_COMFY_ROOT", str(tmp_path))
    return tmp_path


def test_stub_mode_outside_comfyui(compat):
    assert compat.IN_COMFYUI is False
    assert compat.prompt_server() is None
    assert compat.io is compat.standin_io and compat.ComfyExtension is compat.standin_io.ComfyExtension
    assert compat.video_from_file("x.mp4") == "x.mp4"
    compat.throw_if_interrupted()
    assert compat.interrupt_exception_types() == (SonicInterrupted,)
    with pytest.raises(SonicInterrupted, match="cancelled"):
        compat.raise_interrupted()
    assert str(compat.offload_device()) == "cpu"


def test_progress_bar_counts(compat):
    bar = compat.ProgressBar(10)
    bar.update(3)
    bar.update(4)
    assert bar.current == 7
    bar.update_absolute(20)
    assert bar.current == 10
    bar.update_absolute(5, total=50)
    assert (bar.current, bar.total) == (5, 50)


def test_folders_follow_the_environment_variable(compat, comfy_root):
    fp = compat.folder_paths
    assert fp.get_input_directory() == str(comfy_root / "input")
    assert fp.get_output_directory() == str(comfy_root / "output")
    assert fp.get_temp_directory() == str(comfy_root / "temp")
    assert fp.get_folder_paths("sonic") == [str(comfy_root / "models" / "sonic")]
    assert fp.get_filename_list("sonic") == []
    (comfy_root / "models" / "sonic" / "RIFE").mkdir(parents=True)
    (comfy_root / "models" / "sonic" / "unet.pth").write_bytes(b"x")
    (comfy_root / "models" / "sonic" / "RIFE" / "flownet.pkl").write_bytes(b"x")
    (comfy_root / "models" / "sonic" / ".hidden").write_bytes(b"x")
    assert fp.get_filename_list("sonic") == ["RIFE/flownet.pkl", "unet.pth"]
    assert fp.get_full_path("sonic", "RIFE/flownet.pkl") == str(comfy_root / "models/sonic/RIFE/flownet.pkl")
    assert fp.get_full_path("sonic", "missing.pth") is None
    with pytest.raises(SonicInputError, match="unknown"):
        fp.get_folder_paths("loras")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "RIFE/../../x"])
def test_model_file_names_cannot_escape(compat, comfy_root, name):
    with pytest.raises(SonicInputError):
        compat.folder_paths.get_full_path("sonic", name)


def test_root_from_config_file_or_default(compat, tmp_path, monkeypatch):
    monkeypatch.delenv("SONIC_COMFY_ROOT", raising=False)
    config = tmp_path / "comfy.toml"
    config.write_text('root = "here"\n')
    monkeypatch.setenv("SONIC_COMFY_CONFIG", str(config))
    assert compat.folder_paths.get_input_directory() == str(tmp_path / "here" / "input")
    config.write_text("root = [")
    with pytest.raises(SonicInputError, match="TOML"):
        compat.folder_paths.root()
    monkeypatch.setenv("SONIC_COMFY_CONFIG", str(tmp_path / "absent.toml"))
    assert compat.folder_paths.root() == compat.Path("~/.cache/sonic/comfy").expanduser()


def test_annotated_paths(compat, comfy_root):
    fp = compat.folder_paths
    assert fp.get_annotated_filepath("a.wav") == os.path.join(comfy_root / "input", "a.wav")
    assert fp.get_annotated_filepath("a.wav [output]") == os.path.join(comfy_root / "output", "a.wav")
    assert fp.get_annotated_filepath("a.wav [temp]") == os.path.join(comfy_root / "temp", "a.wav")
    assert not fp.exists_annotated_filepath("a.wav")
    (comfy_root / "input").mkdir()
    (comfy_root / "input" / "a.wav").write_bytes(b"x")
    assert fp.exists_annotated_filepath("a.wav")


def test_save_path_counter_subfolder_and_escape(compat, comfy_root):
    fp = compat.folder_paths
    out = str(comfy_root / "output")
    folder, name, counter, sub, prefix = fp.get_save_image_path("Sonic", out, 64, 64)
    assert (folder, name, counter, sub, prefix) == (out, "Sonic", 1, "", "Sonic")
    for n in (1, 7):
        open(os.path.join(folder, f"Sonic_{n:05}_.mp4"), "w").close()
    assert fp.get_save_image_path("Sonic", out)[2] == 8
    folder, name, counter, sub, _ = fp.get_save_image_path("clips/Talk_%width%x%height%", out, 512, 256)
    assert (folder, name, counter, sub) == (os.path.join(out, "clips"), "Talk_512x256", 1, "clips")
    assert os.path.isdir(folder)
    with pytest.raises(SonicInputError, match="outside the output folder"):
        fp.get_save_image_path("../escape", out)


def test_managed_model_outside_comfyui_moves_the_module_to_the_compute_device(compat):
    import torch

    managed = compat.ManagedModel(torch.nn.Linear(2, 2))
    assert managed.load() == compat.torch_device()
    assert managed.is_loaded()
