"""The ComfyUI node ids of the pack (contract: saved workflows and API prompts name them). One set, used by the
node specs in ``nodes/`` and by graph pricing, which finds the jobs of a prompt by these ids."""

LOAD_AUDIO_DURATION = "SonicLoadAudioDuration"
LOADER = "SonicLoader"
PREDATA = "SonicPreData"
SAMPLER = "SonicSampler"
SAMPLER_TO_VIDEO = "SonicSamplerToVideo"  # the same generation streamed to a VIDEO
SAMPLERS = (SAMPLER, SAMPLER_TO_VIDEO)  # every node that generates (graph pricing prices each)
LIPSYNC_ALIGN = "SonicLipSyncAlign"
MOTION_SMOOTH = "SonicMotionSmooth"
TOKEN_METER = "SonicTokenMeter"
VIDEO_COMBINE = "SonicVideoCombine"
CORE_LOAD_AUDIO = "LoadAudio"  # ComfyUI's own audio loader, which graph pricing also reads
DEMO_WEIGHTS = "demo (tiny, untrained)"  # the Sonic Loader's choice of the embedded tiny model (saved in graphs)
