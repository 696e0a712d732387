"""Post-processing after decode: Lip-Sync Align, Motion Smooth, retiming; frames [F, 3, H, W] in [0, 1]."""

from sonic_core.post.facebox import FaceBox, detect_face_box
from sonic_core.post.interpolate import Midpoint, linear_midpoint, retime
from sonic_core.post.lipsync import LipSyncReport, align, measure_offset
from sonic_core.post.smooth import SmoothReport, Trajectory, estimate_trajectory, smooth_motion

__all__ = ["FaceBox", "LipSyncReport", "Midpoint", "SmoothReport", "Trajectory", "align", "detect_face_box",
           "estimate_trajectory", "linear_midpoint", "measure_offset", "retime", "smooth_motion"]
