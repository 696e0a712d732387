#!/usr/bin/env bash
# One ComfyUI server and one Celery worker per GPU of this container (GPU i: ComfyUI on 127.0.0.1:8188+i, a worker
# named sonic-gpuI@HOST whose SONIC_COMFY_URL is that server). Arguments go to every Celery worker (its queues).
# SIGTERM is passed on: each Celery worker finishes (warm shutdown) or hands back (acks_late) its running job.
set -euo pipefail
cd /opt/comfyui-sonic/.cache/comfyui/ComfyUI
SERVER_PYTHON=/opt/comfyui-sonic/.cache/comfyui/venv/bin/python
STUBS=/opt/comfyui-sonic/.cache/comfyui/stubs
GPUS=$(nvidia-smi --list-gpus | wc -l)
if [ "$GPUS" -lt 1 ]; then
    echo "sonic-worker: no GPU visible in this container (run it with --gpus or an nvidia.com/gpu request)" >&2
    exit 1
fi
children=()
trap 'kill -TERM "${children[@]}" 2>/dev/null; wait' TERM INT
for ((gpu = 0; gpu < GPUS; gpu++)); do
    port=$((8188 + gpu))
    PYTHONPATH="$STUBS" "$SERVER_PYTHON" main.py --listen 127.0.0.1 --port "$port" --cuda-device "$gpu" \
        --disable-api-nodes --disable-auto-launch &
    children+=($!)
    until "$SERVER_PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/system_stats')" \
            2>/dev/null; do
        kill -0 "${children[-1]}" || { echo "sonic-worker: ComfyUI on GPU $gpu exited" >&2; exit 1; }
        sleep 2
    done
    SONIC_COMFY_URL="http://127.0.0.1:$port" celery -A sonic_core.fleet.worker worker "$@" \
        --pool=prefork --concurrency=1 --hostname "sonic-gpu$gpu@%h" &
    children+=($!)
done
wait -n
kill -TERM "${children[@]}" 2>/dev/null
wait
exit 1
