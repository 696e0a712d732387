"""Session set-up for every test folder. Shared helpers live in ``sonic_testing`` (import them from there: several
conftest.py files exist, so ``from conftest import`` would be ambiguous); the real-ComfyUI fixtures are in
``comfyui/conftest.py``."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the suite may reach the Hugging Face hub
