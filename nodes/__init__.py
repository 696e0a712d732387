"""ComfyUI node classes of the pack, registered by the pack's top-level ``__init__``.

Nodes are added here as their engine parts land (see the node-pack issue); none is registered before it works.
"""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
