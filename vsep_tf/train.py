r"""Train vsep-tf models: one command, one model directory.

  python -m vsep_tf.train --flagfile=configs/toy.flags          # the main job: a toy separator, minutes on a CPU
  python -m vsep_tf.train --flagfile=configs/chorales.flags     # ../shared/data/chorales (any stem folder)
  python -m vsep_tf.train --flagfile=configs/musdb.flags --musdb_root=/data/musdb18hq

The default --job=spectral_separator trains the spectral priors, then the amortised encoder, into --model_dir
(vsep_tf/training/pipeline.py); the toy recipe is --job=harmonic_separator (harmonic priors, then a pitch encoder;
vsep_tf/training/harmonic_trainer.py). Every job ends by printing the command that separates a file with it.
Re-running the same command resumes from the latest checkpoint of the running stage. The run's flags are saved as
<model_dir>/config.flags, the model's own settings as <model_dir>/manifest.json.
"""
from __future__ import annotations

import sys

from absl import app, flags, logging

from vsep_tf import run_flags

FLAGS = flags.FLAGS
EXIT_NON_FINITE_LOSS = 3  # exit code of a run stopped by a NaN/Inf loss
run_flags.define_flags(FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.model_dir:
    raise app.UsageError("--model_dir is required")
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
  cfg = run_flags.config_from_flags(FLAGS)
  trainer = trainer_class(cfg)(cfg, strategy)
  if strategy_lib.is_chief(strategy):
    run_flags.save_config(cfg, cfg.model_dir)
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
  if strategy_lib.is_chief(strategy):
    print(f"separator ready in {cfg.model_dir}; separate a file with it:\n"
          f"  python -m vsep_tf.separate --model_dir={cfg.model_dir} --input=song.wav --output_dir=separated",
          flush=True)


def trainer_class(cfg):
  """The trainer of cfg.job; the research phases of the waveform encoder (vsep_tf/research) when asked for."""
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  if cfg.job == "variational" and (cfg.sleep_steps > 0 or (cfg.teacher_dir and cfg.distill_steps > 0)):
    from vsep_tf.research.sleep_trainer import SleepDistillTrainer  # pylint: disable=import-outside-toplevel
    return SleepDistillTrainer
  return trainer_lib.get_trainer(cfg.job)


def run():
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
