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
# ACCELERATE_CONFIG ("none" = plain python), PRESET, MAX_STEPS, PYTHON. Every stage resumes by itself from
# its latest checkpoint if it was interrupted (--resume).
set -euo pipefail
cd "$(dirname "$0")"

ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-configs/accelerate/deepspeed_zero2_8gpu.yaml}
OUT=${OUT:-outputs/train}
STAGES=${STAGES:-1 2 3}
PRESET=${PRESET:-}

PYTHON=${PYTHON:-$(command -v python || command -v python3 || true)}
USAGE="usage: [STAGES=\"1 2 3\"] [OUT=DIR] [PRESET=tiny] [MAX_STEPS=N] [ACCELERATE_CONFIG=FILE|none] bash train.sh [python -m longvie.train options ...]"
fail() { echo "$USAGE" >&2; echo "train.sh: error: $*" >&2; exit 2; }

# This script's own options (one case; every other argument goes to each stage's python -m longvie.train).
for arg in "$@"; do
    case "$arg" in
        -h|--help)
            echo "$USAGE"
            sed -n '2,/^set -euo/p' train.sh | sed '$d' | sed 's/^# \{0,1\}//'
            if [[ -n "$PYTHON" ]]; then
                echo
                PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m longvie.train --help
            fi
            exit 0 ;;
    esac
done
# The settings it takes from the environment, checked before any stage starts.
[[ -n "${STAGES// /}" ]] || fail "STAGES is empty; give the stages to run, e.g. STAGES=\"1 2 3\" or STAGES=\"2 3\""
for stage in $STAGES; do
    [[ "$stage" =~ ^[123]$ ]] || fail "STAGES=\"$STAGES\": '$stage' is not a stage; use 1, 2 and/or 3, e.g. STAGES=\"2 3\""
done
[[ -z "$PRESET" || "$PRESET" == tiny ]] || fail "PRESET=$PRESET: the only training preset is tiny (or leave PRESET unset)"
if [[ -n "${MAX_STEPS:-}" ]] && ! [[ "$MAX_STEPS" =~ ^[0-9]+$ && "$((10#$MAX_STEPS))" -ge 1 ]]; then
    fail "MAX_STEPS=$MAX_STEPS: must be a whole number of steps, 1 or more"
fi
[[ -n "$OUT" ]] || fail "OUT is empty; give the output folder, e.g. OUT=outputs/train"
[[ ! -e "$OUT" || -d "$OUT" ]] || fail "OUT=$OUT is a file, not a folder; name a new folder for the training outputs"
[[ -n "$PYTHON" ]] || fail "no python found; activate the virtual environment of \`pip install -e .\` (see README)"

if [[ "$ACCELERATE_CONFIG" == "none" ]]; then
    launch=("$PYTHON" -m longvie.train)
else
    [[ -f "$ACCELERATE_CONFIG" ]] || fail "accelerate config $ACCELERATE_CONFIG not found; use one of \
configs/accelerate/*.yaml, or ACCELERATE_CONFIG=none for a plain single-process run"
    "$PYTHON" -c "import accelerate" 2>/dev/null || fail "accelerate is not installed in $PYTHON; \
run \`pip install -e .\` in the project's virtual environment"
    if grep -qiE "deepspeed" "$ACCELERATE_CONFIG" && ! "$PYTHON" -c "import deepspeed" 2>/dev/null; then
        fail "$ACCELERATE_CONFIG uses DeepSpeed, which is not installed: \`pip install deepspeed\` (needs a CUDA \
toolkit), or train on one GPU without it: ACCELERATE_CONFIG=configs/accelerate/single_gpu.yaml bash train.sh"
    fi
    launch=("$PYTHON" -m accelerate.commands.launch --config_file "$ACCELERATE_CONFIG" -m longvie.train)
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
    rc=0
    "${launch[@]}" --stage "$stage" --output "$OUT/stage$stage" "${init[@]}" "${common[@]}" "$@" || rc=$?
    if [[ $rc -ne 0 ]]; then
        if [[ $rc -eq 130 ]]; then
            echo "train.sh: interrupted in stage $stage; run the same command to continue (it resumes)" >&2
        else
            echo "train.sh: stage $stage failed (exit code $rc; the message above says why). Fix the cause and run \
the same command: finished stages are skipped by resuming, stage $stage resumes from its newest intact \
checkpoint." >&2
        fi
        exit $rc
    fi
done
echo "done: LongViePipeline.from_pretrained(BASE_MODEL, \"$OUT/stage3/final\") loads the trained weights"
