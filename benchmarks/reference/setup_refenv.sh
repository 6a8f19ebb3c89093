#!/usr/bin/env bash
# Builds a virtualenv holding the official PyTorch Chatterbox (chatterbox-tts 0.1.7) on the
# CPU: the reference that benchmarks/compare_reference.py and the other benchmarks time, and
# that tests/reference/gen_*.py run to write tests/golden/. About 2 minutes; rerunning it on a
# ready venv is a no-op.
#
# Usage (from anywhere): bash benchmarks/reference/setup_refenv.sh [VENV_DIR]
#   VENV_DIR defaults to .refenv at the repository root, where the benchmarks and
#   tests/reference/make_goldens.sh look for it.
#   REFENV_PYTHON   the Python that creates the venv (default python3; 3.11 is what the
#                   goldens were made with)
#   REFENV_TORCH_INDEX  where the CPU build of torch comes from when pip's own indexes do not
#                   have it (default https://download.pytorch.org/whl/cpu). PyPI's
#                   torch==2.13.0 is the multi-GB CUDA build; the reference needs the CPU one.
#
# torchaudio has no build for torch 2.13, so 2.11 is installed without dependencies and its
# compiled libraries are removed: the reference only uses its pure-Python parts (Kaldi
# fbank, resample). setuptools<81 keeps pkg_resources, which resemble-perth imports (without
# it every Chatterbox*TTS constructor fails with "'NoneType' object is not callable").
# pykakasi is the Japanese step the multilingual text goldens (gen_text.py) were made with.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-$ROOT/.refenv}"
PYTHON="${REFENV_PYTHON:-python3}"
TORCH_INDEX="${REFENV_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
CHECK="import perth, pykakasi, chatterbox.tts, chatterbox.tts_turbo, chatterbox.vc, \
chatterbox.mtl_tts, torchaudio.compliance.kaldi, torch; \
assert perth.PerthImplicitWatermarker, 'perth needs setuptools<81'; \
assert not torch.version.cuda, 'torch is a CUDA build: ' + torch.__version__"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
  echo "reference venv ready: $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip
# The CPU wheel: from pip's configured indexes or wheel folders where they hold it,
# otherwise from PyTorch's CPU index.
"${PIP[@]}" install -q "torch==2.13.0+cpu" 2>/dev/null \
  || "${PIP[@]}" install -q --index-url "$TORCH_INDEX" "torch==2.13.0+cpu"
"${PIP[@]}" install -q --no-deps chatterbox-tts==0.1.7 torchaudio==2.11.0
rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
"${PIP[@]}" install -q numpy "transformers==5.2.0" "diffusers==0.29.0" conformer==0.3.2 \
  safetensors omegaconf s3tokenizer librosa==0.11.0 pyloudnorm resemble-perth pykakasi \
  "setuptools<81"
rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
"$VENV/bin/python" -c "$CHECK; print('reference venv ready:', '$VENV')"
