r"""Separate audio files with a trained or exported model.

  python -m vsep_tf.separate --model_dir=pretrained/chorales --input=song.wav --output_dir=out
  python -m vsep_tf.separate --model_dir=runs/toy --input=test_dir/ --output_dir=out --format=flac
  python -m vsep_tf.separate --model_dir=exports/toy --input=song.wav --output_dir=out    # exported SavedModel
  python -m vsep_tf.separate --model_dir=exports/toy_tflite/toy_f32.tflite --input=song.wav --output_dir=out

Writes <output_dir>/<track>/<source>.<format> at the input's rate, length and channels (each channel separated
on its own, or --downmix). --input is an audio file, a track folder (<track>/mixture.{wav,flac} beside its stems,
the MUSDB18-HQ layout: one track named after the folder), or a folder of audio files and track folders. Files are
streamed in chunks (memory does not grow with their length; progress moves at least 8 times per file of 8 chunks
or more); every source goes to a temporary file, renamed into place only when all sources of the track are
complete, and existing outputs are never replaced without --overwrite. A bad input (not audio, empty, NaN/Inf,
unsupported format) is reported in one line and leaves no output; the exit code is 1 if any input failed, 2 for a
usage error or a model that does not load. SIGINT (Ctrl-C) or SIGTERM stops it within a second: the track in
progress leaves nothing, the completed ones stay, and the exit code is 128 + the signal number (130, 143).

--model_dir: a model directory (manifest.json + weights: `python -m vsep_tf.train` or pretrained/), an exported
SavedModel (`python -m vsep_tf.export.saved_model`: BASE/NAME or one version directory) or a .tflite file
(`python -m vsep_tf.export.tflite`). --model_override='--spectral_search.prior_weight=1' changes a setting of a
model directory (repeatable).

Quality (model directories): --quality=fast (the default) separates a spectral separator by its amortised
encoder's one forward pass; --quality=balanced adds at most 50 iterations of its MAP fit; --quality=best uses its
saved settings (the full MAP fit: tens of times slower, best). docs/results.md has the figures for every shipped model.

Priors compose (model directories of prior-based separators):
  python -m vsep_tf.separate --model_dir=pretrained/chorales --sources=violin,clarinet,tenor_sax \
      --input=trio.wav --output_dir=out        # a trio: only those three priors, outputs in that order
  python -m vsep_tf.separate --model_dir=pretrained/chorales --extra_priors=flute=runs/flute_prior \
      --input=quintet.wav --output_dir=out     # a class added from a prior trained on its own
An unknown --sources name is one line naming the available classes, exit code 2.
"""
from __future__ import annotations

import os

from absl import app, flags

from vsep_tf import cli

PROG = "separate"
FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Model directory, exported SavedModel or .tflite file.")
flags.DEFINE_multi_string("model_override", [], "'--name=value' replacing a flag saved in the model directory "
                          "(e.g. --model_override=--langevin_steps_per_level=20).")
cli.define_flags(FLAGS)
cli.define_compose_flags(FLAGS)
cli.define_quality_flag(FLAGS)


def load_model(path: str, overrides=(), sources=None, extra_priors=None, quality: str = "best"):
  """The Separator at `path`: a training model directory, an exported SavedModel, or a .tflite file. sources /
  extra_priors / quality: model_dir.load_separator's (model directories only)."""
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  if os.path.isdir(path) and model_dir_lib.is_model_dir(path):
    return model_dir_lib.load_separator(path, list(overrides), sources=sources or None, extra_priors=extra_priors,
                                        quality=quality)
  from vsep_tf import export  # pylint: disable=import-outside-toplevel
  if overrides:
    raise ValueError("--model_override applies to training model directories only")
  if sources or extra_priors:
    raise model_dir_lib.SourcesError("--sources / --extra_priors apply to model directories (an exported model's "
                                     "outputs are fixed)")
  return export.load_exported(path)


def main(argv):
  session = cli.Session(PROG)
  if len(argv) > 1:
    return session.error(f"unexpected arguments {argv[1:]} (every option is a --flag)", code=2)
  if not FLAGS.model_dir:
    return session.error("--model_dir is required", code=2)
  if not os.path.exists(FLAGS.model_dir):
    return session.error(f"--model_dir={FLAGS.model_dir}: no such file or directory", code=2)
  problem = cli.check_flags(FLAGS)
  if problem:
    return session.error(problem, code=2)
  try:
    extra_priors = cli.parse_extra_priors(FLAGS.extra_priors)
  except ValueError as e:
    return session.error(str(e), code=2)

  def work():  # in a worker thread: loading a model can take long too
    from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
    try:
      separator = load_model(FLAGS.model_dir, FLAGS.model_override, FLAGS.sources, extra_priors, FLAGS.quality)
    except model_dir_lib.SourcesError as e:
      what = f"--sources={','.join(FLAGS.sources)}" if FLAGS.sources else "--extra_priors"
      return session.error(f"{what}: {e}", code=2)
    except (FileNotFoundError, ValueError, OSError) as e:
      return session.error(f"--model_dir={FLAGS.model_dir}: cannot load a model ({e})", code=2)
    return session.separate_files(separator, FLAGS)

  return session.run(work)


def run():
  app.run(main, flags_parser=cli.flags_parser(PROG))


if __name__ == "__main__":
  run()
