#!/usr/bin/env bash
# Point-track clips for a driving video, coloured by depth when OUT_DIR/depth.npy exists
# (run utils/get_depth.sh VIDEO OUT_DIR first, with the same size/frame-step options).
#   bash utils/get_track.sh VIDEO OUT_DIR [extra get_track.py options, e.g. --grid 50 --track-backend cotracker]
# Writes OUT_DIR/track_00.mp4, track_01.mp4, ...
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: bash utils/get_track.sh VIDEO OUT_DIR [get_track.py options]" >&2
  exit 2
fi
video="$1"; out_dir="$2"; shift 2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
# OUT_DIR must be new, empty or a condition folder of ours: checked (and marked) before anything is written.
PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" "$python" -m longvie.media.output_dir "$out_dir" \
  --kind controls --what "condition folder" --input "$video" --input "$out_dir/depth.npy" --mark
depth_args=()
if [ -f "$out_dir/depth.npy" ]; then
  depth_args=(--depth "$out_dir/depth.npy")
fi
"$python" "$here/get_track.py" "$video" "$out_dir" "${depth_args[@]}" "$@"
