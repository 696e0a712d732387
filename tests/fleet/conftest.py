"""The fleet's tests drive real ComfyUI servers with the harness of the real-ComfyUI tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "comfyui"))  # comfyui_harness
