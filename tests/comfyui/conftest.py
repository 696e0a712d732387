"""Fixtures of the real-ComfyUI tests: a ComfyUI server (V3 and V1 node schema) and a headless browser on its UI."""

from comfyui_harness import comfyui_browser, comfyui_server, comfyui_server_v1  # noqa: F401  (fixtures)
