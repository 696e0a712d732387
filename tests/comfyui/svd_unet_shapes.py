"""Print, as JSON, the tensor names and shapes of an SVD img2vid UNet that ComfyUI detects as ``SVD_img2vid``.

Run by the ComfyUI server's interpreter in its source tree (``python svd_unet_shapes.py``). The UNet is SVD's own
layout (320 channels, ViT-H's 1024-wide context, temporal blocks) with every level at 320 channels
(``channel_mult`` 1, 1, 1, 1) instead of 1, 2, 4, 4: what ComfyUI's model detection matches, at a seventh of the size.
Built on the meta device by ComfyUI's own classes; nothing is allocated.
"""

import json
import sys

sys.argv = sys.argv[:1] + ["--cpu"]  # ComfyUI reads its command line when comfy.cli_args is first imported

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()

import comfy.supported_models  # noqa: E402
import torch  # noqa: E402

UNET_PREFIX = "model.diffusion_model."
CONFIG = {  # what comfy.model_detection.detect_unet_config reads from such a file
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 768, "in_channels": 8, "out_channels": 4,
    "model_channels": 320, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 1, 1, 1],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "transformer_depth_middle": 1, "use_linear_in_transformer": True, "context_dim": 1024,
    "extra_ff_mix_layer": True, "use_spatial_context": True, "merge_strategy": "learned_with_images",
    "merge_factor": 0.0, "video_kernel_size": [3, 1, 1], "use_temporal_resblock": True,
    "use_temporal_attention": True, "disable_temporal_crossattention": False,
}

with torch.device("meta"):
    model = comfy.supported_models.SVD_img2vid(CONFIG).get_model({}, "")
json.dump({UNET_PREFIX + k: list(v.shape) for k, v in model.diffusion_model.state_dict().items()}, sys.stdout)
