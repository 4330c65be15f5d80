#!/usr/bin/env bash
# Ultra-long video generation with LongVie 2 (clip by clip, resumable).
#
#   bash sample_longvideo.sh                    # released weights (configs/longvie2_i2v_14b.yaml)
#                                               # on the synthetic example
#   bash sample_longvideo.sh --cond path/cond.json --image path/first.png --out outputs/my_run
#   bash sample_longvideo.sh --preset tiny      # no weights needed: tiny random model on the CPU
#   bash sample_longvideo.sh --gpus 8 ...       # one video on 8 GPUs (torchrun): CFG-parallel x
#                                               # sequence parallel 4 (odd N: sequence parallel N)
#   bash sample_longvideo.sh --camera --image photo.jpg --path orbit_left --prompt "..." --out outputs/orbit
#                                               # one photo + a camera path (python -m longvie.camera), sampled
#
# Extra arguments go to `python -m longvie.sample` (see --help); a later --preset/--config replaces
# the default config. Relative paths are relative to the current directory. Re-running the same
# command resumes an interrupted run. Set PYTHON to choose the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-$(command -v python || command -v python3 || true)}"
if [[ -z "$PYTHON" ]]; then
    echo "sample_longvideo.sh: error: no python found; activate the virtual environment you ran \`pip install -e .\` in (see README, Set-up)" >&2
    exit 2
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
GPUS=1
CAMERA=0
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpus) GPUS="$2"; shift 2 ;;
    --gpus=*) GPUS="${1#--gpus=}"; shift ;;
    --camera) CAMERA=1; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [[ "$CAMERA" == 1 ]]; then  # controls rendered from the photo along the path, then the sampler (OUT/run)
  exec "$PYTHON" -m longvie.camera --config "$ROOT/configs/longvie2_i2v_14b.yaml" --sample "${ARGS[@]+"${ARGS[@]}"}"
fi
if [[ "$GPUS" -le 1 ]]; then
  exec "$PYTHON" -m longvie.sample --config "$ROOT/configs/longvie2_i2v_14b.yaml" "${ARGS[@]+"${ARGS[@]}"}"
fi
if (( GPUS % 2 == 0 )); then PARALLEL=(--cfg-parallel --sp $((GPUS / 2))); else PARALLEL=(--sp "$GPUS"); fi
exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$GPUS" -m longvie.sample \
  --config "$ROOT/configs/longvie2_i2v_14b.yaml" "${PARALLEL[@]}" "${ARGS[@]+"${ARGS[@]}"}"
