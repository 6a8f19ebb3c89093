#!/usr/bin/env bash
# Regenerates every golden under tests/golden/ with the PyTorch reference.
# Usage (from the repository root): bash tests/reference/make_goldens.sh [gen_NAME.py ...]
# The reference venv is .refenv, built by benchmarks/reference/setup_refenv.sh when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .refenv/bin/python ] || bash benchmarks/reference/setup_refenv.sh .refenv
scripts=("$@")
[ ${#scripts[@]} -gt 0 ] || scripts=(tests/reference/gen_*.py)
for s in "${scripts[@]}"; do
  echo "== $s"
  OMP_NUM_THREADS=2 .refenv/bin/python "$s"
done
