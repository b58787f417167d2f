#!/usr/bin/env bash
# Train and evaluate the noise-aware default on one GPU in under 15 minutes (issue 26 item 6).
#
# Prepared for the `device` machine (an H100/H200 lent to some sessions); it has only been
# run here on the CPU with GPU_TRAIN_DEVICE=cpu and a few steps (see the README's
# "Training" section): no GPU was lent to the session that wrote it.
#
#   What travels: the repo, plus a folder of wheels (.whl, see ../.library/device/README.md)
#   for what the device machine lacks (astropy, photutils, safetensors, onnx, onnxruntime,
#   platformdirs, tqdm, scikit-image), plus the real training images in data/ (ignored by
#   git; copy ../shared/data there first: the device machine cannot see ../shared).
#
#   device run, carry [".whl", "data"], timeout_s 600:
#     bash bench/gpu_train.sh
#
# Environment: GPU_TRAIN_DEVICE (cuda), GPU_TRAIN_MINUTES (8: the trainer's wall-time cap,
# after which it checkpoints and exports), GPU_TRAIN_STEPS (40000), OUT (where the weights,
# logs and the generalisation table go; the device tool sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_out}
DEVICE=${GPU_TRAIN_DEVICE:-cuda}
MINUTES=${GPU_TRAIN_MINUTES:-8}
STEPS=${GPU_TRAIN_STEPS:-40000}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
export ASTROSLEUTH_DATA=${ASTROSLEUTH_DATA:-$PWD/data}
cfg=$OUT/noise_aware_gpu.toml
# The CPU config with a GPU-sized batch and schedule; the data and the model are the same.
sed -e "s/^batch_size = .*/batch_size = 48/" \
    -e "s/^steps = .*/steps = $STEPS/" \
    -e "s/^threads = .*/threads = 8\ndevice = \"$DEVICE\"/" \
    -e "s/^max_minutes = .*/max_minutes = $MINUTES/" \
    -e "s/^bank_size = .*/bank_size = 256/" \
    -e "s#^out_dir = .*#out_dir = \"$OUT/run\"#" \
    astrosleuth_astro/train/configs/noise_aware.toml > "$cfg"
python3 -m astrosleuth_astro.train "$cfg" 2>&1 | tee "$OUT/train.log"
model=$OUT/run/export/noise_aware.safetensors
cp "$model" "$OUT/run/export/noise_aware.onnx" "$OUT/run/export/noise_aware.registry.toml" "$OUT/"
python3 bench/generalisation.py --model "$model" --data "$ASTROSLEUTH_DATA" --markdown \
  --json "$OUT/generalisation.json" 2>&1 | tee "$OUT/generalisation.md"
