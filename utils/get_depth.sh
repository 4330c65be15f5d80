#!/usr/bin/env bash
# Whole-video depth, then globally normalised 81-frame depth clips.
#   bash utils/get_depth.sh VIDEO OUT_DIR [extra get_depth.py options, e.g. --vda-checkpoint ckpt/video_depth_anything_vitl.pth]
# Writes OUT_DIR/depth.npy (raw disparity) and OUT_DIR/depth_00.mp4, depth_01.mp4, ...
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: bash utils/get_depth.sh VIDEO OUT_DIR [get_depth.py options]" >&2
  exit 2
fi
video="$1"; out_dir="$2"; shift 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
# OUT_DIR must be new, empty or a condition folder of ours: checked (and marked) before anything is written.
PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" "$python" -m longvie.media.output_dir "$out_dir" \
  --kind controls --what "condition folder" --input "$video" --mark
"$python" "$here/get_depth.py" "$video" "$out_dir/depth.npy" "$@"
"$python" "$here/depth_npy2mp4.py" "$out_dir/depth.npy" "$out_dir"
