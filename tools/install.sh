#!/usr/bin/env bash
# Installs everything vsep-tf needs on a fresh Debian/Ubuntu machine with Python >= 3.10:
# ffmpeg (musdb/museval need ffmpeg+ffprobe on PATH, even for WAV) and the package with all extras.
# Usage: bash tools/install.sh            (from the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q -e ".[all,test]"
