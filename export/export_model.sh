#!/usr/bin/env bash
# Export a trained model directory for deployment: SavedModel (TF-Serving layout) + TFLite variants.
#
#   bash export/export_model.sh runs/toy_supervised exports toy
#   -> exports/toy/<version>/            SavedModel (serving_default, separate_chunk, metadata)
#      exports/toy_tflite/toy_{f32,dynamic,f16}.tflite (+ .json metadata)
#
# A --job=priors directory (Langevin separator) gets the SavedModel only (its gradient loop has no TFLite form).
set -euo pipefail
model_dir="${1:?usage: export_model.sh MODEL_DIR EXPORT_BASE NAME}"
base="${2:?usage: export_model.sh MODEL_DIR EXPORT_BASE NAME}"
name="${3:?usage: export_model.sh MODEL_DIR EXPORT_BASE NAME}"
python -m vsep_tf.export.saved_model --model_dir="$model_dir" --export_base="$base" --name="$name"
version="$(ls "$base/$name" | grep -E '^[0-9]+$' | sort -n | tail -1)"
saved_model_cli show --all --dir "$base/$name/$version" > /dev/null  # the signatures must read back clean
if grep -q -- "--job=priors" "$model_dir/config.flags"; then
  echo "Langevin separator: SavedModel only"
  exit 0
fi
python -m vsep_tf.export.tflite --saved_model_dir="$base/$name" --output_dir="$base/${name}_tflite" \
  --quantize=none,dynamic,float16
