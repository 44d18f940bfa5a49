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
EXIT_NON_FINITE_LOSS = 3  # exit code of a run stopped by a NaN/Inf loss
config_lib.define_flags(FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The strategy first: splitting the CPU into logical devices must precede any TF op.
  from vsep_tf.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
  if FLAGS.worker_hosts:
    if FLAGS.strategy != "multi_worker":
      raise app.UsageError("--worker_hosts needs --strategy=multi_worker")
    logging.info("TF_CONFIG=%s", strategy_lib.set_tf_config(FLAGS.worker_hosts, FLAGS.task_index))
  strategy = strategy_lib.get_strategy(FLAGS.strategy, FLAGS.num_cpu_devices, FLAGS.collective_timeout_seconds)
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  logging.info("job=%s strategy=%s replicas=%d model_dir=%s", FLAGS.job, FLAGS.strategy,
               strategy.num_replicas_in_sync, FLAGS.model_dir)
  trainer = trainer_lib.get_trainer(FLAGS.job)(FLAGS, strategy)
  try:
    metrics = trainer.train()
  except trainer_lib.NonFiniteLossError as e:
    logging.error("%s", e)
    print(f"ERROR: {e}", file=sys.stderr, flush=True)
    sys.exit(EXIT_NON_FINITE_LOSS)
  print("final " + " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        + (f" step={int(trainer.step.numpy())}" if hasattr(trainer, "step") else ""), flush=True)
  checksum = getattr(trainer, "weights_checksum", None)
  if checksum is not None:
    print(f"weights_sha256={checksum()}", flush=True)


def run():
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
