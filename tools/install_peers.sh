#!/usr/bin/env bash
# Peer separators for tools/bench.py (speed only): PyTorch (CPU) + Open-Unmix + HT-Demucs in their OWN venv
# (default .venv-peers), so that their pins never touch the project's environment.
# Usage: bash tools/install_peers.sh [VENV_DIR]
#
# Notes, all measured on this project's machines (Python 3.11, x86_64):
#  * torch==2.13.0 is the CPU build; a bare `pip install torch` on PyPI pulls a CUDA build of several GB.
#    Off this workplace, add `--index-url https://download.pytorch.org/whl/cpu` to get a CPU build.
#  * demucs 4.1.0 and openunmix 1.3.0 are installed --no-deps with only what their model code imports
#    (their full requirements pull torchaudio's CUDA build, huggingface-hub, lameenc, ...).
#  * PyPI's torchaudio wheel is a CUDA build whose compiled extension cannot load beside the CPU torch
#    (libc10_cuda.so missing). Open-Unmix only IMPORTS torchaudio (its STFT is torch.stft), and torchaudio runs
#    in its documented pure-Python mode when the extension files are absent, so they are removed.
set -euo pipefail
VENV=${1:-.venv-peers}
python -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null
$PIP install -q torch==2.13.0 numpy
$PIP install -q --no-deps demucs==4.1.0 openunmix==1.3.0 torchaudio==2.11.1
$PIP install -q einops julius pyyaml tqdm
rm -f "$("$VENV/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torchaudio").origin))')"/lib/*.so
"$VENV/bin/python" -c "import torch, openunmix, demucs.htdemucs; print('peers ready: torch', torch.__version__)"
