r"""Separate audio files with a trained or exported model.

  python -m vsep_tf.separate --model_dir=runs/toy_supervised --input=song.wav --output_dir=out
  python -m vsep_tf.separate --model_dir=runs/toy_supervised --input=test_dir/ --output_dir=out --format=flac
  python -m vsep_tf.separate --model_dir=exports/toy --input=song.wav --output_dir=out    # exported SavedModel
  python -m vsep_tf.separate --model_dir=exports/toy_tflite/toy_f32.tflite --input=song.wav --output_dir=out

Writes <output_dir>/<track>/<source>.<format> at the input's rate, length and channels (each channel separated
on its own, or --downmix). Files are streamed in chunks (memory does not grow with their length); every source
goes to a temporary file, renamed into place only when all sources of the track are complete, and existing
outputs are never replaced without --overwrite. A bad input (not audio, empty, NaN/Inf, unsupported format) is
reported and leaves no output; the exit code is non-zero if any input failed.

--model_dir: a `python -m vsep_tf.train` model directory (config.flags + checkpoints), an exported SavedModel
(`python -m vsep_tf.export.saved_model`: BASE/NAME or one version directory) or a .tflite file
(`python -m vsep_tf.export.tflite`). --model_override='--langevin_steps_per_level=20' changes a saved flag of a
model directory (repeatable).
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

from vsep_tf import inference

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Model directory, exported SavedModel or .tflite file.")
flags.DEFINE_multi_string("model_override", [], "'--name=value' replacing a flag saved in the model directory "
                          "(e.g. --model_override=--langevin_steps_per_level=20).")
inference.define_cli_flags(FLAGS)


def load_model(path: str, overrides=()):
  """The Separator at `path`: a training model directory, an exported SavedModel, or a .tflite file."""
  from vsep_tf.training import config as config_lib  # pylint: disable=import-outside-toplevel
  if os.path.isfile(os.path.join(path, config_lib.CONFIG_FILENAME)):
    from vsep_tf.separators import load_separator  # pylint: disable=import-outside-toplevel
    return load_separator(path, list(overrides))
  from vsep_tf import export  # pylint: disable=import-outside-toplevel
  if overrides:
    raise ValueError("--model_override applies to training model directories only")
  return export.load_exported(path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.model_dir:
    print("error: --model_dir is required", file=sys.stderr)
    return 2
  if not os.path.exists(FLAGS.model_dir):
    print(f"error: --model_dir={FLAGS.model_dir}: no such directory", file=sys.stderr)
    return 2
  problem = inference.check_cli_flags(FLAGS)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  try:
    separator = load_model(FLAGS.model_dir, FLAGS.model_override)
  except (FileNotFoundError, ValueError, OSError) as e:
    print(f"error: --model_dir={FLAGS.model_dir}: cannot load a model ({e})", file=sys.stderr)
    return 2
  return inference.run_cli(separator, FLAGS)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
