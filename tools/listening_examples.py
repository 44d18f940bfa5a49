r"""Listening examples: the mix, the true sources and a model's estimates for the first held-out track, cropped.

  python -m tools.listening_examples --model_dir=pretrained/toy --output_dir=docs/listening/toy --seconds=2
  python -m tools.listening_examples --model_dir=pretrained/chorales --output_dir=docs/listening/chorales \
      --data_root=../shared/data/chorales

Toy models are heard on --toy_seed (default 1234: never trained on); stem models on their data's test split (a
shipped model names no data paths: --data_root / --musdb_root; a training run's own config.flags does).
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A model directory (load_separator).", required=True)
flags.DEFINE_string("output_dir", None, "Where mix.wav, <source>_true.wav, <source>_estimate.wav go.", required=True)
flags.DEFINE_float("seconds", 2.0, "Seconds written per file (the whole track is separated).")
flags.DEFINE_integer("toy_seed", 1234, "Toy data seed of the held-out items.")
flags.DEFINE_integer("track", 0, "Which test track (index).")
flags.DEFINE_string("data_root", None, "--dataset=stems: the stem folder (default: the training run's).")
flags.DEFINE_string("musdb_root", None, "--dataset=musdb: the MUSDB18 root (default: the training run's).")


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vsep_tf import audio  # pylint: disable=import-outside-toplevel
  from vsep_tf import registry  # pylint: disable=import-outside-toplevel
  from vsep_tf.model_dir import load_separator  # pylint: disable=import-outside-toplevel
  from tools.common import model_data_config  # pylint: disable=import-outside-toplevel
  paths = {k: getattr(FLAGS, k) for k in ("data_root", "musdb_root") if getattr(FLAGS, k)}
  cfg = model_data_config(FLAGS.model_dir, **paths)
  if cfg.dataset == "toy":
    cfg = cfg.replace(toy_seed=FLAGS.toy_seed)
  data = registry.dataset_from_config(cfg)
  tracks = data.tracks("test")
  for _ in range(FLAGS.track):
    next(tracks)
  name, mix, sources = next(tracks)
  est = np.asarray(load_separator(FLAGS.model_dir).separate_long(mix))
  n = int(FLAGS.seconds * data.sample_rate)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  files = {"mix.wav": mix[:n]}
  for k, source in enumerate(data.source_names):
    files[f"{source}_true.wav"] = sources[k, :n]
    files[f"{source}_estimate.wav"] = np.clip(est[k, :n], -1.0, 1.0)
  for filename, x in files.items():
    audio.write_audio(os.path.join(FLAGS.output_dir, filename), x, data.sample_rate, overwrite=True)
  print(f"{name}: {len(files)} files, {n / data.sample_rate:.1f} s each -> {FLAGS.output_dir}")


if __name__ == "__main__":
  sys.exit(app.run(main))
