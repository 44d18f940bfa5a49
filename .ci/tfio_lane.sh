#!/usr/bin/env bash
# CI lane 2: the tensorflow-io path of vsep_tf.audio, on the oldest stack we support.
#
# tensorflow-io 0.37.1 (its last release) only loads with TF 2.16/2.17 and numpy < 2, so this lane runs
# in its own venv with TF 2.17.1. It fails unless vsep_tf.audio.tfio_available() is True there: the
# lane exists to test the tensorflow-io path, a silent fallback to soundfile would make it pointless.
#
# The venv lives in ${VSEP_TFIO_VENV:-${TMPDIR:-/tmp}/vsep-tfio-venv} and is reused when it is complete
# (a stamp file holding the hash of the pinned package list is written only after every install succeeded).
# Usage: bash .ci/tfio_lane.sh    (from anywhere; runs from the repo root)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
VENV="${VSEP_TFIO_VENV:-${TMPDIR:-/tmp}/vsep-tfio-venv}"
PY="$VENV/bin/python"
PKGS=(
  "tensorflow==2.17.1" "tf-keras==2.17.0" "tensorflow-probability==0.24.0" "tensorflow-io==0.37.1"
  "numpy==1.26.4" scipy soundfile absl-py pytest
)
STAMP="$VENV/.vsep-tfio-complete"
WANT="$(printf '%s\n' "${PKGS[@]}" | sha256sum | cut -c1-16)"

# One builder at a time (two CI runs on one machine share the venv).
exec 9>"$VENV.lock"
flock 9

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$PY" -c "import sys" 2>/dev/null; then
  echo "tfio lane: reusing $VENV"
else
  # Only ever delete a directory that is a venv (or empty), never an arbitrary path from the environment.
  if [ -e "$VENV" ]; then
    if [ -f "$VENV/pyvenv.cfg" ] || [ -z "$(ls -A "$VENV")" ]; then
      rm -rf "$VENV"
    else
      echo "tfio lane: $VENV exists and is not a venv; refusing to touch it" >&2
      exit 1
    fi
  fi
  echo "tfio lane: creating $VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --disable-pip-version-check --upgrade pip
  "$PY" -m pip install -q --disable-pip-version-check "${PKGS[@]}"
  echo "$WANT" >"$STAMP"
fi

# The repo itself, without its (TF 2.21-era) dependency ranges pulling anything in.
"$PY" -m pip install -q --disable-pip-version-check --no-deps -e "$REPO"

export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
"$PY" - <<'EOF'
import sys
import tensorflow as tf
from vsep_tf import audio
ok = audio.tfio_available()
print(f"tfio lane: tensorflow {tf.__version__}, io backend = {audio.io_backend()}")
if not ok:
  print("tfio lane: FAIL: tensorflow-io is not usable in this venv; the probe says:", file=sys.stderr)
  audio._probe_tfio()  # pylint: disable=protected-access  (raises, with the traceback)
  sys.exit(1)
EOF

# VSEP_REQUIRE_TFIO turns the tfio tests' skip into a failure: in this lane they must run.
VSEP_REQUIRE_TFIO=1 "$PY" -m pytest -q tests/test_audio.py tests/test_signal.py -m "not slow"
