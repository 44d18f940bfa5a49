r"""Copy a trained model directory into a small shippable one (pretrained/...): config.flags, the LATEST
checkpoint only (weights + optimizer state, restorable and resumable), the TensorBoard training logs, and an
optional text log. Any --job's directory works with `load_separator`, `vsep_tf.evaluate`, `separate`, export.

  python -m tools.ship_model --model_dir=runs/toy_score_variational --output_dir=pretrained/toy/encoder \
      --set=prior_dir=pretrained/toy --log=runs/toy_score_variational.log

--set=NAME=VALUE rewrites one flag line of the shipped config.flags (e.g. paths that pointed into runs/).
--weights_only (--job=spectral / spectral_encoder directories) ships the weights and the step without the
optimizer state (a third of the size; training resumed from the copy restarts Adam's moments).
Nothing is half-written: the copy is assembled in a temporary sibling directory and renamed into place.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Trained model directory (vsep_tf.train).", required=True)
flags.DEFINE_string("output_dir", None, "Where the shippable copy goes (replaced if it exists).", required=True)
flags.DEFINE_multi_string("set", [], "NAME=VALUE: rewrite the --NAME line of config.flags.")
flags.DEFINE_string("log", None, "A text training log to ship as train.log.")
flags.DEFINE_boolean("weights_only", False, "Ship the weights and step without the optimizer state (--job=spectral, "
                     "spectral_encoder).")


def write_weights_only(model_dir: str, prefix: str, out_dir: str):
  """Writes the trained networks and the step of checkpoint `prefix` of `model_dir` to `out_dir` under the same
  name: the spectral priors (--job=spectral) or the amortised encoder (--job=spectral_encoder), no optimizer
  state. The object keys are the trainer's, so load_separator and a resumed trainer read it."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from vsep_tf.separators import spectral  # pylint: disable=import-outside-toplevel
  from vsep_tf.training import config as config_lib  # pylint: disable=import-outside-toplevel
  fv = config_lib.load_config(model_dir)
  if fv.job == "spectral":
    trackables = {"priors": spectral.restore_spectral_priors(model_dir, fv)}
  elif fv.job == "spectral_encoder":
    trackables = {"encoder": spectral.SpectralPriorSeparator.from_model_dir(model_dir, fv).encoder}
  else:
    raise ValueError(f"--weights_only supports --job=spectral and spectral_encoder model directories; "
                     f"{model_dir} is --job={fv.job}")
  step = tf.Variable(tf.train.load_checkpoint(prefix).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"), name="step")
  tf.train.CheckpointManager(tf.train.Checkpoint(step=step, **trackables), out_dir, max_to_keep=1).save(
      checkpoint_number=int(step.numpy()))


def ship(model_dir: str, output_dir: str, overrides=(), log=None, weights_only: bool = False) -> str:
  """Writes the shippable copy of `model_dir` to `output_dir`; returns the checkpoint prefix shipped."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  prefix = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
  if prefix is None:
    raise FileNotFoundError(f"no checkpoint in {model_dir}/checkpoints")
  config = os.path.join(model_dir, "config.flags")
  if not os.path.exists(config):
    raise FileNotFoundError(f"{config} is missing")
  parent = os.path.dirname(os.path.abspath(output_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".ship-", dir=parent)
  try:
    with open(config, encoding="utf-8") as f:
      lines = f.read().splitlines()
    for item in overrides:
      name, _, value = item.partition("=")
      if not name or not _:
        raise ValueError(f"--set needs NAME=VALUE, got {item!r}")
      hits = [i for i, line in enumerate(lines) if line.startswith(f"--{name}=")]
      if not hits:
        raise ValueError(f"config.flags has no --{name}= line")
      for i in hits:
        lines[i] = f"--{name}={value}"
    with open(os.path.join(tmp, "config.flags"), "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
    os.makedirs(os.path.join(tmp, "checkpoints"))
    base = os.path.basename(prefix)
    if weights_only:
      write_weights_only(model_dir, prefix, os.path.join(tmp, "checkpoints"))
    for name in ([] if weights_only else os.listdir(os.path.dirname(prefix))):
      if name.startswith(base + "."):
        shutil.copy2(os.path.join(os.path.dirname(prefix), name), os.path.join(tmp, "checkpoints", name))
    with open(os.path.join(tmp, "checkpoints", "checkpoint"), "w", encoding="utf-8") as f:
      f.write(f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')
    if os.path.isdir(os.path.join(model_dir, "train")):
      shutil.copytree(os.path.join(model_dir, "train"), os.path.join(tmp, "train"))
    if log:
      shutil.copy2(log, os.path.join(tmp, "train.log"))
    if os.path.exists(output_dir):
      shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return prefix


def main(argv):
  del argv
  try:
    prefix = ship(FLAGS.model_dir, FLAGS.output_dir, FLAGS.set, FLAGS.log, FLAGS.weights_only)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"shipped {prefix} -> {FLAGS.output_dir}")


if __name__ == "__main__":
  app.run(main)
