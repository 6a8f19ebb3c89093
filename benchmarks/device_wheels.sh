#!/usr/bin/env bash
# Downloads (here, with pip) the wheels that benchmarks/device_check.sh installs offline on
# the lent NVIDIA machine, into the git-ignored benchmarks/device_wheels/ that its run call
# carries, and checks them and the working tree against the 64 MiB carry limit.
#
# Usage: bash benchmarks/device_wheels.sh PYTHON_VERSIONS [DEST]
#   PYTHON_VERSIONS  the machine's python3, e.g. 3.12 (KINDS.md: 3.12.3; to check, a 5-second
#                    device call `python3 --version; nvidia-smi`), or a comma list (3.12,3.13):
#                    each more costs about 1.5 MB (the compiled mlx, cffi and soxr wheels)
#   DEST             default benchmarks/device_wheels
#
# What the machine lacks (its image has torch 2.11 with CUDA 13, numpy, scipy, numba,
# transformers 5.17, tokenizers 0.23, the nvidia-* CUDA 13 libraries, ...):
#   ours:      mlx, mlx-cuda-13 (mlx[cuda13]), soundfile (+ cffi, pycparser), soxr
#   reference: chatterbox-tts 0.1.7 with the versions .refenv pins (setup_refenv.sh):
#              transformers 5.2.0 (+ tokenizers 0.22.2, which it requires), diffusers,
#              conformer, omegaconf, s3tokenizer, librosa (+ audioread, decorator, pooch,
#              platformdirs), pyloudnorm, resemble-perth, importlib-metadata, setuptools<81
# mlx-cuda-13 0.32.4's wheel is 85.6 MiB, over the limit alone: device_slim_wheel.py keeps
# its sm_90 images (H100, H200) and strips libmlx.so's static symbols (22.5 MiB). perth's
# wheel (33 MiB) is its watermark weights: left out (the check runs --dummy-watermarker).
# Wheels over 1 MiB are stored again with LZMA.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "device_wheels.sh: $*" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: device_wheels.sh PYTHON_VERSIONS [DEST], e.g. 3.12"
[[ "$1" =~ ^3\.[0-9]+(,3\.[0-9]+)*$ ]] || die "'$1' is not a python version list such as 3.12 or 3.12,3.13"
IFS=, read -r -a VERSIONS <<<"$1"
DEST="${2:-$ROOT/benchmarks/device_wheels}"
LIMIT=$((64 * 1024 * 1024))
RAW="${XDG_CACHE_HOME:-$HOME/.cache}/chatterbox-mlx-device-wheels"

OURS=(mlx==0.32.4 mlx-cuda-13==0.32.4 soundfile==0.14.0 cffi==2.0.0 pycparser==3.0 soxr==1.1.0)
REFERENCE=(chatterbox-tts==0.1.7 transformers==5.2.0 tokenizers==0.22.2 diffusers==0.29.0
  conformer==0.3.2 omegaconf==2.4.0 s3tokenizer==0.3.0 librosa==0.11.0 audioread==3.1.0
  decorator==5.3.2 pooch==1.9.0 platformdirs==4.14.9 pyloudnorm==0.2.0 resemble-perth==1.0.1
  importlib-metadata==10.2.0 setuptools==80.10.2)

PLATFORMS=(--platform manylinux2014_x86_64)
for n in $(seq 17 39); do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
mkdir -p "$RAW"
for version in "${VERSIONS[@]}"; do
  echo "downloading for python $version"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
    --python-version "$version" "${PLATFORMS[@]}" -d "$RAW" "${OURS[@]}" "${REFERENCE[@]}"
done

STAGE="$(mktemp -d "${DEST%/}.tmp.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
for spec in "${OURS[@]}" "${REFERENCE[@]}"; do
  name="${spec%%==*}"; version="${spec#*==}"; stem="${name//-/_}-${version}-"
  matches=("$RAW"/"$stem"*.whl)
  [ -e "${matches[0]}" ] || die "no wheel of $spec in $RAW"
  for wheel in "${matches[@]}"; do
    case "$name" in
      mlx-cuda-13) echo "slimming $(basename "$wheel") (about 2 minutes)"
        python3 "$ROOT/benchmarks/device_slim_wheel.py" "$wheel" "$STAGE" --keep-sm 90 --strip ;;
      resemble-perth)
        python3 "$ROOT/benchmarks/device_slim_wheel.py" "$wheel" "$STAGE" --drop perth/perth_net/pretrained/ ;;
      *) if [ "$(stat -c %s "$wheel")" -gt 1048576 ]; then
           python3 "$ROOT/benchmarks/device_slim_wheel.py" "$wheel" "$STAGE"
         else cp "$wheel" "$STAGE/"; fi ;;
    esac
  done
  echo "$spec" >>"$STAGE/requirements.txt"
done
echo "$1" >"$STAGE/python-versions.txt"
rm -rf "$DEST" && mv "$STAGE" "$DEST" && trap - EXIT

cd "$ROOT"
python3 - "$DEST" "$LIMIT" <<'EOF'
import os, subprocess, sys
from pathlib import Path
dest, limit = Path(sys.argv[1]), int(sys.argv[2])
listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                        capture_output=True).stdout.decode().split("\0")
tree = sum(os.path.getsize(p) for p in listed if p and os.path.isfile(p))
wheels = sorted(dest.iterdir(), key=lambda p: -p.stat().st_size)
carried = sum(p.stat().st_size for p in wheels)
for p in wheels:
    print(f"{p.stat().st_size / 2**20:8.2f} MiB  {p.name}")
print(f"wheels {carried / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = "
      f"{(carried + tree) / 2**20:.1f} MiB of the {limit / 2**20:.0f} MiB carry limit")
if carried + tree > limit:
    sys.exit("over the carry limit: carry fewer python versions, or drop transformers 5.2.0 and "
             "tokenizers 0.22.2 (13 MiB; the machine's transformers 5.17 then runs the reference)")
EOF
