#!/usr/bin/env bash
# Ultra-long video generation with LongVie 2 (clip by clip, resumable).
#
#   bash sample_longvideo.sh                    # released weights (configs/longvie2_i2v_14b.yaml)
#                                               # on the synthetic example
#   bash sample_longvideo.sh --cond path/cond.json --image path/first.png --out outputs/my_run
#   bash sample_longvideo.sh --preset tiny      # no weights needed: tiny random model on the CPU
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
exec "$PYTHON" -m longvie.sample --config "$ROOT/configs/longvie2_i2v_14b.yaml" "$@"
