#!/usr/bin/env bash
# Serve an export with the REAL TensorFlow Serving (docker image tensorflow/serving), gRPC on 8500, REST on 8501.
#
#   bash export/serve_tf_serving.sh exports toy          # serves exports/toy/<highest version> as model "toy"
#   bash export/serve_tf_serving.sh exports --config     # serves every model of export/models.config
#
# Then separate a file against it:
#   python export/serving_client.py --server=localhost:8500 --model_name=toy --input=song.wav --output_dir=out
#
# Where docker / TF-Serving is not available, the development stand-in answers the same client:
#   python -m vsep_tf.export.dev_server --model_base_path=exports/toy --model_name=toy --port=8500
set -euo pipefail
base="$(cd "${1:?usage: serve_tf_serving.sh EXPORT_BASE [MODEL_NAME|--config]}" && pwd)"
name="${2:-toy}"
here="$(cd "$(dirname "$0")" && pwd)"
if [[ "$name" == "--config" ]]; then
  exec docker run --rm -p 8500:8500 -p 8501:8501 -v "$base:/models" -v "$here/models.config:/config/models.config:ro" \
    tensorflow/serving --model_config_file=/config/models.config
fi
# The Langevin export runs without XLA by default; an export made with --xla needs
#   ... tensorflow/serving --xla_cpu_compilation_enabled=true
exec docker run --rm -p 8500:8500 -p 8501:8501 -v "$base:/models" -e MODEL_NAME="$name" tensorflow/serving
