#!/usr/bin/env bash
# The GPU check (issue 21, 7; issue 20): speed of the exact path, FP8, each step cache, the fast mode and each
# attention backend; the mode matrix (offload x FP8 x compile x step cache); the memory estimator's peaks beside
# the measured ones. One process, random weights at the real 14B shapes built on the GPU, nothing downloaded,
# inside a time budget (about 7-8 minutes on one H100 with the defaults); the table goes into this device's
# section of docs/performance.md. Without CUDA it runs its tiny CPU twin (a few minutes at most on 2 cores) and
# leaves docs/performance.md alone unless --write-docs; CI runs the twin (tests/scripts/test_gpu_check.py).
#
#   bash scripts/gpu_check.sh --out outputs/gpu_check          # this machine (GPU, else the CPU twin)
#   bash scripts/gpu_check.sh --out DIR --budget-s 540         # more rows on a slow GPU
#   bash scripts/gpu_check.sh --out DIR --render-only --write-docs   # the table of a finished (or stopped) run
#   bash scripts/gpu_check.sh --prepare-wheels                 # here, before a run on a machine without pip access
#
# What it assumes on the GPU machine (a bare one, as the workplace's device tool lends): a python3 with a CUDA
# torch (2.11 or newer was read there; setup.py's tested lower bound is 2.13), transformers, accelerate,
# safetensors, psutil, pyyaml, numpy, peft - the machine's image has these. This checkout is imported through
# PYTHONPATH (no `pip install -e .`, which would ask the index for setup.py's pins). Packages the image lacks
# (diffusers, ftfy and wcwidth) travel as wheels: `bash scripts/gpu_check.sh --prepare-wheels` downloads them into
# .whl/ here (Python 3.12, manylinux x86-64, the versions of this environment); on the GPU machine the script
# installs .whl/*.whl into a temporary folder (pip --no-index) when the folder is there. With the device tool:
#   run(command="bash scripts/gpu_check.sh --out $OUT/gpu_check", carry=[".whl"], timeout_s=600)
# then here, from the folder that came back:
#   bash scripts/gpu_check.sh --out <files_at>/gpu_check --render-only --write-docs
#
# Output folder: results.jsonl (one line per row, written as measured: a stopped run keeps its rows), table.md,
# log.txt, crashes.txt (tracebacks, when a row crashed), estimates.json. Every other option goes to
# python -m longvie.benchmark.gpu_check (see --help). A hard stop (--timeout-s, default: the budget + 50 s with
# CUDA, + 120 s on the CPU) ends a run that overruns; the table is then made from what was written. Set PYTHON to choose the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$(command -v python3 || command -v python || true)}"
USAGE="usage: bash scripts/gpu_check.sh --out DIR [--timeout-s S] [--render-only] [--prepare-wheels] [python -m longvie.benchmark.gpu_check options ...]"
usage() {
  cat <<EOF
$USAGE

Measures every speed and memory mode on this machine (GPU: random weights at the real shapes; no CUDA: the
tiny CPU twin) and writes DIR/table.md (with CUDA also this device's section of docs/performance.md).
Options of this script:
  --out DIR          the output folder (results.jsonl, table.md, log.txt, ...) [outputs/gpu_check/<UTC time>]
  --timeout-s S      hard stop of the measuring process [the budget + 50 s with CUDA, + 120 s on the CPU]
  --render-only      make the table from DIR/results.jsonl (add --write-docs to update docs/performance.md)
  --prepare-wheels   download the packages a GPU machine without a package index lacks into .whl/ and exit
  -h, --help         this help, then the options of python -m longvie.benchmark.gpu_check
EOF
}
fail() {  # a usage line and one sentence, exit 2, before any Python starts
  echo "$USAGE" >&2
  echo "gpu_check.sh: error: $*" >&2
  exit 2
}

OUT=""
TIMEOUT_S=""
HELP=0
RENDER=0
WHEELS=0
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) HELP=1; shift ;;
    --out)
      [[ $# -ge 2 && -n "$2" ]] || fail "--out needs a folder, e.g. --out outputs/gpu_check"
      OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    --timeout-s)
      [[ $# -ge 2 ]] || fail "--timeout-s needs a number of seconds, e.g. --timeout-s 560"
      TIMEOUT_S="$2"; shift 2 ;;
    --timeout-s=*) TIMEOUT_S="${1#--timeout-s=}"; shift ;;
    --render-only) RENDER=1; shift ;;
    --prepare-wheels) WHEELS=1; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [[ -z "$PYTHON" ]]; then
  echo "gpu_check.sh: error: no python found; activate the environment with torch (see docs/install.md)" >&2
  exit 2
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$HELP" == 1 ]]; then
  usage
  echo
  exec "$PYTHON" -m longvie.benchmark.gpu_check --help
fi
if [[ -n "$TIMEOUT_S" ]] && ! [[ "$TIMEOUT_S" =~ ^[0-9]{1,5}$ && "$TIMEOUT_S" -gt 0 ]]; then
  fail "--timeout-s '$TIMEOUT_S': must be a whole number of seconds, e.g. --timeout-s 560"
fi

if [[ "$WHEELS" == 1 ]]; then  # here (with a package index): the wheels a bare GPU machine lacks
  versions="$("$PYTHON" -c 'from importlib.metadata import version as v; print(f"diffusers=={v(\"diffusers\")} ftfy=={v(\"ftfy\")} wcwidth=={v(\"wcwidth\")}")')"
  mkdir -p "$ROOT/.whl"
  exclude="$(git -C "$ROOT" rev-parse --path-format=absolute --git-path info/exclude 2>/dev/null || true)"
  if [[ -n "$exclude" ]] && ! grep -qx '/.whl/' "$exclude" 2>/dev/null; then
    echo '/.whl/' >> "$exclude"  # not committed, still carried by the device tool (carry=[".whl"])
  fi
  # shellcheck disable=SC2086  # $versions is a list of requirements
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$ROOT/.whl" $versions
  echo "wheels in $ROOT/.whl: carry it (device tool: carry=[\".whl\"]); the script installs them there"
  exit 0
fi

if [[ -z "$OUT" ]]; then
  OUT="outputs/gpu_check/$(date -u +%Y%m%d-%H%M%S)"
fi
COMMAND="bash scripts/gpu_check.sh --out $OUT${TIMEOUT_S:+ --timeout-s $TIMEOUT_S}${ARGS[*]+ ${ARGS[*]}}"
if [[ "$RENDER" == 1 ]]; then
  exec "$PYTHON" -m longvie.benchmark.gpu_check --out "$OUT" --render-only "${ARGS[@]+"${ARGS[@]}"}"
fi

# Wheels carried to a machine without a package index (see the header), installed outside the environment.
if compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
  SITE="${TMPDIR:-/tmp}/longvie_gpu_check_site"
  if ! "$PYTHON" -c "import diffusers, ftfy" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$ROOT"/.whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$SITE"
    echo "installed $(ls "$ROOT"/.whl/*.whl | wc -l) carried wheel(s) into $SITE"
  fi
fi

# Prerequisites: the device, the versions; stops here when a package is missing.
if command -v nvidia-smi > /dev/null 2>&1; then
  echo "nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
fi
NOISE='^W[0-9]{4} |[Ww]arn|^ +warnings.warn'  # library warnings: kept in log.txt, not shown
"$PYTHON" -m longvie.benchmark.gpu_check --prerequisites 2> >(grep -v -E "$NOISE" >&2) || exit 1

# The measuring process, under a hard stop; then, if it did not finish, the table from what it wrote.
if [[ -z "$TIMEOUT_S" ]]; then
  BUDGET=""
  for ((i = 0; i < ${#ARGS[@]}; i++)); do
    case "${ARGS[$i]}" in
      --budget-s) BUDGET="${ARGS[$((i + 1))]:-}" ;;
      --budget-s=*) BUDGET="${ARGS[$i]#--budget-s=}" ;;
    esac
  done
  # the Python defaults: 420 s with CUDA, 600 s for the CPU twin. With CUDA the hard stop leaves 50 s for the
  # row that ends last (a row starts only when its predicted time fits), so the whole check stays under 8 minutes.
  if nvidia-smi -L > /dev/null 2>&1; then SLACK=50; [[ -n "$BUDGET" ]] || BUDGET=420
  else SLACK=120; [[ -n "$BUDGET" ]] || BUDGET=600; fi
  TIMEOUT_S=$(( ${BUDGET%.*} + SLACK ))
fi
"$PYTHON" -m longvie.media.output_dir "$OUT" --kind gpu_check --what "GPU check folder" --flag=--out --mark || exit 2
status=0
set -o pipefail
PYTHONUNBUFFERED=1 DIFFUSERS_VERBOSITY=error TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1 \
  timeout --signal=TERM --kill-after=20 "$TIMEOUT_S" \
  "$PYTHON" -m longvie.benchmark.gpu_check --out "$OUT" --command "$COMMAND" "${ARGS[@]+"${ARGS[@]}"}" 2>&1 \
  | tee "$OUT/log.txt" | grep --line-buffered -v -E "$NOISE" || status="${PIPESTATUS[0]}"
if [[ "$status" == 124 || "$status" == 137 ]]; then
  if [[ -s "$OUT/results.jsonl" ]]; then
    echo "gpu_check.sh: the measuring process passed the hard stop (--timeout-s $TIMEOUT_S); the table of what it measured:"
    "$PYTHON" -m longvie.benchmark.gpu_check --out "$OUT" --render-only "${ARGS[@]+"${ARGS[@]}"}" | tee "$OUT/table.md" || true
  else
    echo "gpu_check.sh: the measuring process passed the hard stop (--timeout-s $TIMEOUT_S) before it measured anything"
  fi
fi
exit "$status"
