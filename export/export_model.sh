#!/usr/bin/env bash
# Export a trained model directory for deployment: the SavedModel (TF-Serving layout), then the TFLite variants if
# the model has a TFLite form.
#
#   bash export/export_model.sh runs/toy_supervised exports toy            [QUALITY: fast (default) | balanced | best]
#   -> exports/toy/<version>/            SavedModel (serving_default, separate_chunk, metadata)
#      exports/toy_tflite/toy_{f32,dynamic,f16}.tflite (+ .json metadata)
#
# QUALITY (optional, default fast): the model's quality preset in the SavedModel (vsep_tf.separate --quality).
# A spectral separator (--job=spectral or spectral_encoder, e.g. pretrained/band, pretrained/chorales): the SavedModel
# holds the preset (fast: the amortised encoder's one pass; balanced / best: 50 / all iterations of its MAP fit);
# the TFLite files are its ONE-PASS graph (the fast preset, --spectral_search.iterations=0; STFT / ISTFT as real
# matrix products), converted from MODEL_DIR, and their .json metadata says so ("graph": "one_pass").
# A harmonic separator (--job=harmonic_separator, e.g. pretrained/toy): the TFLite files are the whole separator
# over a real DFT, converted from MODEL_DIR (mix [1, chunk]: channels one by one), float32 and dynamic-range int8
# (float16 weights cost it 14 dB SI-SDR on the toy, measured).
#
# What a model does not support is skipped with a line saying why, and the script still exits 0: a Langevin
# separator (--job=priors) has no TFLite form (its gradient loop); a converter refusal ("... does not convert to
# TFLite: <reason>") is reported the same way. Any other failure (the SavedModel export, its signatures, a TFLite
# conversion that should work) exits non-zero.
set -euo pipefail
usage="usage: export_model.sh MODEL_DIR EXPORT_BASE NAME [fast|balanced|best]"
model_dir="${1:?$usage}"
base="${2:?$usage}"
name="${3:?$usage}"
quality="${4:-fast}"
python -m vsep_tf.export.saved_model --model_dir="$model_dir" --export_base="$base" --name="$name" \
  --quality="$quality"
version="$(ls "$base/$name" | grep -E '^[0-9]+$' | sort -n | tail -1)"
saved_model_cli show --all --dir "$base/$name/$version" > /dev/null  # the signatures must read back clean
# The export's method, from assets/metadata.json (no TensorFlow needed to read it).
method="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["method"])' \
  "$base/$name/$version/assets/metadata.json")"
if [ "$method" = "langevin" ]; then
  echo "skipped TFLite: a Langevin separator's gradient loop has no TFLite form (serve the SavedModel)"
  exit 0
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
source_args=(--saved_model_dir="$base/$name")
if [ "$method" = "spectral" ] || [ "$method" = "harmonic" ]; then
  source_args+=(--model_dir="$model_dir")  # the one-pass graph is built from the model directory
fi
quantize=none,dynamic,float16
if [ "$method" = "harmonic" ]; then
  quantize=none,dynamic  # vsep_tf.export.tflite.HARMONIC_QUANTIZATIONS
  echo "skipped TFLite float16: float16 weights cost a harmonic separator 14 dB SI-SDR on the toy (measured)"
fi
python -m vsep_tf.export.tflite "${source_args[@]}" --output_dir="$base/${name}_tflite" --name="$name" \
  --quantize="$quantize" 2> "$log" || status=$?
if [ "$status" -eq 0 ]; then
  exit 0
fi
reason="$(sed -n 's/^error: .* does not convert to TFLite: //p' "$log" | tail -1)"
if [ -n "$reason" ]; then
  echo "skipped TFLite: $reason"
  exit 0
fi
cat "$log" >&2
echo "export_model.sh: the TFLite conversion failed (exit $status); the SavedModel is in $base/$name/$version" >&2
exit "$status"
