"""Post-processing of generated clips: Lip-Sync Align (:mod:`.lipsync`), Motion Smooth (:mod:`.smooth`) and the
chain the CLI runs (:mod:`.chain`); frames are [F, 3, H, W] in [0, 1]."""
