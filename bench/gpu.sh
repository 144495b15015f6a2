#!/usr/bin/env bash
# The whole GPU comparison in one prepared script: bcos_jax's throughput and MFU
# in float32 and bfloat16, bcos_jax against the official v2 code (eager float32,
# and with its best settings: bf16 AMP, channels_last, torch.compile), DenseNet-121's
# memory with and without remat, and the v1 input pipeline (whole, and with its
# photometric ops on the device) against the accelerator. One call, one JSON per
# measurement.
#
#   bench/gpu.sh OUT_DIR            # on the GPU: batch 256, 224², 4 models
#   bench/gpu.sh OUT_DIR --tiny     # anywhere (this CPU): batch 2, 1 step, to test it
#
# Needs bcos_jax (pip install -e .); for the official side also torch, torchvision
# and the official package (pip install bcos; without network, the wheel:
# pip install --no-deps bcos-0.1.3-py3-none-any.whl). Without `bcos` the official
# side is skipped, and the script says so. Environment overrides:
#   BENCH_MODELS="resnet50:224 densenet121:224"   model:image_size, space separated
#   PYTHON                                        the interpreter (default: python)
#   PEAK_TFLOPS_BF16, PEAK_TFLOPS_FP32            the chip's dense peaks, for MFU
#                                                 (default: H100/H200 SXM, 989 and
#                                                 495 TF32)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:?usage: bench/gpu.sh OUT_DIR [--tiny]}
TINY=${2:-}
mkdir -p "$OUT"
MODELS=${BENCH_MODELS:-"resnet50:224 densenet121:224 convnext_tiny:224 vitc_s_patch1_14:224"}
if [[ "$TINY" == "--tiny" ]]; then
  BATCH=2 STEPS=1 ROUNDS=1 SECONDS_PER=0.3 WORKERS=1 OFFICIAL_DEVICE=cpu
else
  BATCH=256 STEPS=5 ROUNDS=2 SECONDS_PER=10 WORKERS=8 OFFICIAL_DEVICE=cuda
fi
PEAK_BF16=${PEAK_TFLOPS_BF16:-989}
PYTHON=${PYTHON:-python}
PEAK_FP32=${PEAK_TFLOPS_FP32:-495}

"$PYTHON" - <<'EOF'
import jax
print("devices:", jax.devices(), "jax", jax.__version__)
EOF

SPECS=()
for entry in $MODELS; do
  name=${entry%%:*} size=${entry##*:}
  SPECS+=("$name:$size:$BATCH")
  for dtype in float32 bfloat16; do
    peak=$PEAK_FP32; [[ $dtype == bfloat16 ]] && peak=$PEAK_BF16
    echo "== throughput $name $size² batch $BATCH $dtype"
    "$PYTHON" bench/throughput.py --model "$name" --batch_size "$BATCH" --image_size "$size" \
      --steps "$STEPS" --compute_dtype "$dtype" --peak_tflops "$peak" \
      --json "$OUT/throughput_${name}_${dtype}.json"
  done
done

JOINED=$(IFS=,; echo "${SPECS[*]}")
if "$PYTHON" -c "import bcos, torch" 2>/dev/null; then
  echo "== vs official, both float32 (official eager)"
  "$PYTHON" bench/vs_official.py --models "$JOINED" --rounds "$ROUNDS" --steps "$STEPS" \
    --official_device "$OFFICIAL_DEVICE" --json "$OUT/vs_official_float32.json"
  echo "== vs official, best settings (ours bfloat16; official bf16 AMP, channels_last, compile)"
  "$PYTHON" bench/vs_official.py --models "$JOINED" --rounds "$ROUNDS" --steps "$STEPS" \
    --official_device "$OFFICIAL_DEVICE" --compute_dtype bfloat16 --official_amp \
    --official_channels_last --official_compile --json "$OUT/vs_official_best.json"
else
  echo "== vs official: skipped (the official package is not installed: pip install bcos torch torchvision)"
fi

echo "== memory: DenseNet-121's train step with and without rematerialisation"
# Per-device bytes of the compiled step (bench/memory.py); --tiny: a small ResNet-18.
MEMORY_MODEL=densenet121:224 REMATS=false,true
[[ "$TINY" == "--tiny" ]] && MEMORY_MODEL=resnet18:32 REMATS=true  # one compile: the wiring
"$PYTHON" bench/memory.py --models "${MEMORY_MODEL%%:*}" --image_size "${MEMORY_MODEL##*:}" \
  --batch_size "$BATCH" --devices 1 --remat "$REMATS" --json "$OUT/memory.json"

echo "== input pipeline (host images/s per worker against the accelerator's step)"
# The first model's bfloat16 training rate: what one accelerator consumes.
FIRST=${MODELS%% *}
RATE=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['images_per_s'])" \
  "$OUT/throughput_${FIRST%%:*}_bfloat16.json")
"$PYTHON" bench/input_pipeline.py --workers "$WORKERS" --seconds "$SECONDS_PER" \
  --recipes imagenet_v1,imagenet_v1_device --accelerator_images_per_s "$RATE" \
  --json "$OUT/input_pipeline.json"
echo "wrote $OUT"
