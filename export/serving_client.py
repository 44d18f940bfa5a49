#!/usr/bin/env python3
r"""Separate audio files against a TF-Serving endpoint (thin wrapper of vsep_tf.export.client).

  python export/serving_client.py --server=localhost:8500 --model_name=toy --input=song.wav --output_dir=out

The endpoint: the real TF-Serving (export/serve_tf_serving.sh) or the development stand-in
(python -m vsep_tf.export.dev_server). See `python -m vsep_tf.export.client --help` for every flag.
"""
from vsep_tf.export import client

if __name__ == "__main__":
  client.run()
