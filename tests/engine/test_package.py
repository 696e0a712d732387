import subprocess
import sys

from sonic_testing import REPO, load_pack, pack_nodes


def test_engine_imports_without_comfyui():
    code = ("import sys, sonic_core; "
            "bad = [m for m in ('comfy', 'folder_paths', 'server', 'nodes', 'torch') if m in sys.modules]; "
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_pack_imports_like_comfyui_does():
    pack = load_pack()
    assert callable(pack.comfy_entrypoint) and not hasattr(pack, "NODE_CLASS_MAPPINGS")  # the V3 registration
    assert len(pack_nodes(pack)) == 9
    assert (REPO / pack.WEB_DIRECTORY).is_dir()
    assert "nodes" not in sys.modules or getattr(sys.modules["nodes"], "__file__", "").find(str(REPO)) < 0


def test_runtime_requirements_leave_the_users_stack_alone():
    names = [line.split(";")[0].strip().lower() for line in (REPO / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    for forbidden in ("torch", "torchvision", "torchaudio", "diffusers", "transformers"):
        assert not any(n == forbidden or n.startswith(forbidden + "=") or n.startswith(forbidden + ">")
                       for n in names), forbidden
