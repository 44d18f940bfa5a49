r"""Train vsep-tf models.

  python -m vsep_tf.train --flagfile=configs/toy.flags                 # toy priors, minutes on a CPU
  python -m vsep_tf.train --flagfile=configs/chorales.flags            # ../shared/data/chorales (any stem folder)
  python -m vsep_tf.train --flagfile=configs/musdb.flags --musdb_root=/data/musdb18hq

Run-level flags (paths, strategy, steps) live apart from model hyperparameters ('<family>.<arg>' flags, e.g.
--wavenet.residual_channels). The resolved flags are saved as <model_dir>/config.flags; re-running the same
command resumes from the latest checkpoint in <model_dir>/checkpoints.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging

from vsep_tf.training import config as config_lib

FLAGS = flags.FLAGS
config_lib.define_flags(FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The strategy first: splitting the CPU into logical devices must precede any TF op.
  from vsep_tf.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
  strategy = strategy_lib.get_strategy(FLAGS.strategy, FLAGS.num_cpu_devices)
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  logging.info("job=%s strategy=%s replicas=%d model_dir=%s", FLAGS.job, FLAGS.strategy,
               strategy.num_replicas_in_sync, FLAGS.model_dir)
  trainer = trainer_lib.get_trainer(FLAGS.job)(FLAGS, strategy)
  metrics = trainer.train()
  print("final " + " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())), flush=True)


def run():
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
