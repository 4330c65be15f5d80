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
USAGE="usage: bash sample_longvideo.sh [--gpus N | --camera] [python -m longvie.sample options ...]"
usage() {
  cat <<EOF
$USAGE

Ultra-long video generation with LongVie 2, clip by clip; re-running the same command resumes.
Options of this script:
  --gpus N      one video on N GPUs with torchrun: CFG-parallel x sequence parallel N/2
                (odd N, or guidance off as with --fast: sequence parallel N) [1]
  --camera      one photo + a camera path: the other options go to python -m longvie.camera --sample
                (controls rendered along the path, then sampled into OUT/run; see docs/camera.md)
  -h, --help    this help, then the options of python -m longvie.sample
Every other option goes to python -m longvie.sample (below), which checks it.
EOF
}
fail() {  # a usage line and one sentence, exit 2, before any Python starts
  echo "$USAGE" >&2
  echo "sample_longvideo.sh: error: $*" >&2
  exit 2
}

# This script's own options (one case; everything else is passed through to Python).
GPUS=1
HELP=0
CAMERA=0
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) HELP=1; shift ;;
    --gpus)
      [[ $# -ge 2 ]] || fail "--gpus needs a number of GPUs, e.g. --gpus 8"
      GPUS="$2"; shift 2 ;;
    --gpus=*) GPUS="${1#--gpus=}"; shift ;;
    --camera) CAMERA=1; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

if [[ "$HELP" == 1 ]]; then
  usage
  if [[ -n "$PYTHON" ]]; then
    echo
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m longvie.sample --help
  fi
  exit 0
fi
if ! [[ "$GPUS" =~ ^[0-9]{1,4}$ ]] || (( 10#$GPUS < 1 )); then
  fail "--gpus '$GPUS': must be a whole number of GPUs, 1 or more (e.g. --gpus 8)"
fi
GPUS=$((10#$GPUS))
if [[ -z "$PYTHON" ]]; then
  echo "sample_longvideo.sh: error: no python found; activate the virtual environment you ran \`pip install -e .\` in (see README, Set-up)" >&2
  exit 2
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$CAMERA" == 1 ]]; then  # controls rendered from the photo along the path, then the sampler (OUT/run)
  if [[ "$GPUS" -gt 1 ]]; then
    fail "--camera runs on one GPU; for several, render the controls first (python -m longvie.camera ... --out DIR), then bash sample_longvideo.sh --gpus $GPUS --cond DIR/cond.json"
  fi
  exec "$PYTHON" -m longvie.camera --config "$ROOT/configs/longvie2_i2v_14b.yaml" --sample "${ARGS[@]+"${ARGS[@]}"}"
fi
if [[ "$GPUS" -eq 1 ]]; then
  exec "$PYTHON" -m longvie.sample --config "$ROOT/configs/longvie2_i2v_14b.yaml" "${ARGS[@]+"${ARGS[@]}"}"
fi
# --split-gpus: Python picks CFG-parallel x sequence parallel N/2 (guidance on, N even) or sequence
# parallel N (odd N, or guidance off as in --fast), once the config is read.
exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$GPUS" -m longvie.sample \
  --config "$ROOT/configs/longvie2_i2v_14b.yaml" --split-gpus "${ARGS[@]+"${ARGS[@]}"}"
