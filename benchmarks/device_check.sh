#!/usr/bin/env bash
# The prepared GPU check (issue 29, item 1): chatterbox-mlx on MLX's CUDA backend against the
# PyTorch reference on torch CUDA, on the lent NVIDIA machine, in one call of at most 8 min.
#
# A later session that is lent a GPU (`status`: can_start_another true) does, in order:
#   1. here:  bash benchmarks/device_wheels.sh 3.12      # wheels for the machine's python3;
#             fails if they and the working tree pass the 64 MiB carry limit
#      (KINDS.md reads that machine's python3 as 3.12.3. To check first, a 5-second call:
#       run(command="python3 --version; nvidia-smi", timeout_s=60); it starts the machine,
#       which then stays warm for only 30 s, so make the next call at once.)
#   2. here:  bash benchmarks/device_check.sh --dry-run --out /tmp/dry   # CPU, tiny sizes;
#             also checks the wheels resolve for the machine and the carry fits. On a loaded
#             CPU add --budget-s 1800 --timeout-scale 8 (t3.py's 8- and 4-bit runs, 15x slower
#             on a CPU, still outlast it), or prove one step of each kind with
#             --steps checkpoints,compare-turbo,batching
#   3. the device tool, one call:
#        run(command="bash benchmarks/device_check.sh", carry=["benchmarks/device_wheels"],
#            timeout_s=570)
#      Results come back under files_at: gpu-summary.json, raw-output.txt, setup.log,
#      batching.json. To rerun part of it on the still-warm machine (the venv stays):
#        run(command="bash benchmarks/device_check.sh --steps compare-english,batching",
#            carry=["benchmarks/device_wheels"], timeout_s=570)
#   4. give_back, then commit the raw output under benchmarks/results/ (a dry run's summary
#      is CPU numbers: commit it nowhere).
#
# On the machine: the carried wheels install offline into .refenv/site, ahead of python3's own
# packages (its torch with CUDA) on PYTHONPATH, beside a link to its nvidia/ (libmlx.so's
# RPATH and MLX's JIT headers look there); .refenv/bin/python runs python3 so (t3.py takes
# the reference from there; both sides run it). Then benchmarks/device_check.py runs every
# step with its own timeout inside the budget and writes $OUT/gpu-summary.json after each
# one. A failed step is recorded, not fatal. --dry-run skips the install (it checks that the wheels resolve for the machine's
# platform when they are here) and runs the same steps on this CPU at tiny sizes.
#
# Usage: bash benchmarks/device_check.sh [--dry-run] [--out DIR] [--budget-s N] [--steps LIST]
#                                        [--timeout-scale F]   (each step's timeout times F)
#   --out defaults to $OUT; --budget-s is the whole check's seconds (default 480; dry run 430,
#   whose order runs one step of each kind first).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$ROOT/benchmarks/device_wheels"
VENV="$ROOT/.refenv"
SITE="$VENV/site"
START=$(date +%s)

die() { echo "device_check.sh: $*" >&2; exit 2; }

DRY=0; OUT_DIR="${OUT:-}"; BUDGET=""; STEPS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT_DIR="$2"; shift ;;
    --budget-s) [ $# -ge 2 ] || die "--budget-s needs a number of seconds"; BUDGET="$2"; shift ;;
    --steps) [ $# -ge 2 ] || die "--steps needs a comma list"; STEPS+=(--steps "$2"); shift ;;
    --timeout-scale) [ $# -ge 2 ] || die "--timeout-scale needs a factor"
      STEPS+=(--timeout-scale "$2"); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1'; use --dry-run, --out DIR, --budget-s N, --steps LIST or --timeout-scale F" ;;
  esac
  shift
done
[ -n "$OUT_DIR" ] || die "no output folder: set OUT or pass --out DIR"
if [ -z "$BUDGET" ]; then BUDGET=$([ "$DRY" = 1 ] && echo 430 || echo 480); fi
[[ "$BUDGET" =~ ^[0-9]+$ ]] && [ "$BUDGET" -gt 30 ] \
  || die "--budget-s '$BUDGET': give a whole number of seconds above 30"
mkdir -p "$OUT_DIR" || die "cannot make the output folder $OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SETUP_LOG="$OUT_DIR/setup.log"
SETUP_STATUS=ok
fail_setup() { if [ "$SETUP_STATUS" = ok ]; then SETUP_STATUS="$1"; else SETUP_STATUS="$SETUP_STATUS; $1"; fi; }

setup_dry() {
  # The wheels cannot install here (another python, no CUDA): check that they resolve,
  # offline, for the machine's platform and python.
  PY="$(command -v python3)"
  REF_PY="$ROOT/.refenv/bin/python"
  if [ ! -f "$WHEELS/requirements.txt" ]; then
    echo "no $WHEELS/requirements.txt: run benchmarks/device_wheels.sh before the GPU call"
    return 0
  fi
  local version platforms=()
  version="$(head -1 "$WHEELS/python-versions.txt" 2>/dev/null | cut -d, -f1)"
  for n in $(seq 17 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  timeout 120 python3 -m pip install --dry-run --quiet --no-index --no-deps --find-links "$WHEELS" \
    --only-binary=:all: --python-version "${version:-3.12}" --implementation cp \
    "${platforms[@]}" --target "$(mktemp -d)" -r "$WHEELS/requirements.txt" \
    || { fail_setup "the carried wheels do not resolve for python ${version:-3.12}"; return 0; }
  echo "wheels resolve for python ${version:-3.12} on manylinux x86_64"
  (cd "$ROOT" && python3 - "$WHEELS" <<'EOF'
import os, subprocess, sys
listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                        capture_output=True).stdout.decode().split("\0")
tree = sum(os.path.getsize(p) for p in listed if p and os.path.isfile(p))
wheels = sum(e.stat().st_size for e in os.scandir(sys.argv[1]) if e.is_file())
print(f"carry: wheels {wheels / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB "
      f"= {(wheels + tree) / 2**20:.1f} MiB of 64 MiB")
sys.exit(wheels + tree > 64 * 2**20)
EOF
  ) || fail_setup "the working tree and the wheels pass the 64 MiB carry limit"
}

setup_gpu() {
  # The machine's python3 is itself a venv (/opt/torch/.venv), so a venv made from it would
  # not see its torch: the wheels go into a folder ahead of it on PYTHONPATH instead, and
  # .refenv/bin/python (where t3.py looks for the reference) runs python3 with that path.
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 --version
  PY="$VENV/bin/python"; REF_PY="$PY"
  if [ -x "$PY" ] && "$PY" -c "import mlx.core, chatterbox.tts" 2>/dev/null; then
    echo "$SITE already installed (a warm machine)"; return 0
  fi
  [ -f "$WHEELS/requirements.txt" ] || {
    fail_setup "no $WHEELS/requirements.txt: run benchmarks/device_wheels.sh here and carry benchmarks/device_wheels"
    return 0; }
  if [ -e "$VENV" ] && [ ! -f "$VENV/device-check" ]; then
    fail_setup "$VENV exists and is not this script's (a development checkout?): use --dry-run here"
    return 0
  fi
  rm -rf "$VENV" && mkdir -p "$VENV/bin" "$SITE" && touch "$VENV/device-check"
  printf '#!/bin/sh\nexport PYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}"\nexec %s "$@"\n' \
    "$SITE" "$(command -v python3)" >"$PY"
  chmod +x "$PY"
  # libmlx.so's RPATH and MLX's JIT headers look for nvidia/ beside mlx/
  local system_nvidia
  system_nvidia="$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)"
  if [ -n "$system_nvidia" ]; then ln -sfn "$system_nvidia" "$SITE/nvidia"
  else echo "warning: python3 has no nvidia/ packages; libmlx.so may not find CUDA"; fi
  timeout 180 python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
    --target "$SITE" --find-links "$WHEELS" -r "$WHEELS/requirements.txt" \
    || { fail_setup "pip install of the carried wheels failed"; return 0; }
  timeout 120 "$PY" -c "import mlx.core as mx; print('mlx', mx.__version__, 'gpu:', mx.is_available(mx.gpu)); \
x = mx.ones((256, 256), stream=mx.gpu) @ mx.ones((256, 256), stream=mx.gpu); mx.eval(x); print('gpu matmul', x[0, 0].item())" \
    || fail_setup "mlx does not run on the GPU (see setup.log)"
  timeout 120 "$PY" -c "import perth, chatterbox.tts, chatterbox.tts_turbo, torch; print('reference', torch.__version__, torch.cuda.is_available())" \
    || fail_setup "the reference does not import (see setup.log)"
}

if [ "$DRY" = 1 ]; then
  setup_dry >"$SETUP_LOG" 2>&1
else
  command -v nvidia-smi >/dev/null || die "no nvidia-smi: this is not the GPU machine; use --dry-run"
  setup_gpu >"$SETUP_LOG" 2>&1
fi
cat "$SETUP_LOG"
LEFT=$(( BUDGET - ($(date +%s) - START) ))
[ "$LEFT" -gt 10 ] || LEFT=10
ARGS=(--out "$OUT_DIR" --budget-s "$LEFT" --reference-python "$REF_PY"
      --setup-log "$SETUP_LOG" --setup-status "$SETUP_STATUS" "${STEPS[@]}")
[ "$DRY" = 1 ] && ARGS+=(--dry-run)
cd "$ROOT" && "$PY" benchmarks/device_check.py "${ARGS[@]}"
echo "device_check.sh: $(( $(date +%s) - START )) s in all"
