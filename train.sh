#!/usr/bin/env bash
# LongVie 2: the three training stages (SPEC §6), one after the other, each starting from the
# previous stage's weights. Usage:
#
#   bash train.sh                       # 8 GPUs, DeepSpeed ZeRO-2 + CPU offload (as upstream)
#   ACCELERATE_CONFIG=configs/accelerate/single_gpu.yaml bash train.sh
#   STAGES="2 3" bash train.sh          # continue from an existing stage-1 output
#   bash train.sh --set train.save_every=200     # extra arguments go to every stage
#
# Tiny CPU smoke run of the same three commands (tiny random model, synthetic data, minutes):
#   ACCELERATE_CONFIG=none PRESET=tiny MAX_STEPS=10 OUT=outputs/train_tiny bash train.sh
#
# Environment: METADATA (default data/train/metadata.json), BASE_MODEL (default
# models/Wan2.1-I2V-14B-480P-Diffusers), OUT (default outputs/train), STAGES (default "1 2 3"),
# ACCELERATE_CONFIG ("none" = plain python), PRESET, MAX_STEPS. Every stage resumes by itself from
# its latest checkpoint if it was interrupted (--resume).
set -euo pipefail
cd "$(dirname "$0")"

ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-configs/accelerate/deepspeed_zero2_8gpu.yaml}
OUT=${OUT:-outputs/train}
STAGES=${STAGES:-1 2 3}
PRESET=${PRESET:-}

if [[ "$ACCELERATE_CONFIG" == "none" ]]; then
    launch=(python -m longvie.train)
else
    launch=(accelerate launch --config_file "$ACCELERATE_CONFIG" -m longvie.train)
fi

common=(--resume)
if [[ -n "$PRESET" ]]; then
    common+=(--preset "$PRESET")
else
    common+=(--metadata "${METADATA:-data/train/metadata.json}" --base-model "${BASE_MODEL:-models/Wan2.1-I2V-14B-480P-Diffusers}")
fi
if [[ -n "${MAX_STEPS:-}" ]]; then
    common+=(--max-steps "$MAX_STEPS")
fi

for stage in $STAGES; do
    init=()
    if [[ "$stage" != 1 ]]; then
        init=(--init-from "$OUT/stage$((stage - 1))")
    fi
    echo "=== stage $stage -> $OUT/stage$stage"
    "${launch[@]}" --stage "$stage" --output "$OUT/stage$stage" "${init[@]}" "${common[@]}" "$@"
done
echo "done: LongViePipeline.from_pretrained(BASE_MODEL, \"$OUT/stage3/final\") loads the trained weights"
