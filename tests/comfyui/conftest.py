"""Fixtures of the real-ComfyUI tests: ComfyUI servers (one shared, one per module that needs its own) and a
headless browser on the shared one's UI."""

from comfyui_harness import comfyui_browser, comfyui_server, fresh_comfyui_server  # noqa: F401  (fixtures)
