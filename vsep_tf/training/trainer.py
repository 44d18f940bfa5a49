"""The custom training loop: one prior per source class, trained together under a tf.distribute strategy.

Per step, each prior k gets a batch of solo crops of its class, noised at per-example levels sigma drawn by
`priors.base.sample_sigma`; the loss is the sum over classes of the noised negative log-likelihood
(nats/sample), averaged over the GLOBAL batch (`tf.nn.compute_average_loss`), so gradients do not grow with the
number of replicas. `steps_per_loop` steps run inside one tf.function call.
"""
from __future__ import annotations

import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from vsep_tf.priors import base as prior_base
from vsep_tf.training import builders
from vsep_tf.training import config as config_lib
from vsep_tf.training import strategy as strategy_lib


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `peak` over `warmup_steps`, then constant."""

  def __init__(self, peak: float, warmup_steps: int):
    self.peak, self.warmup_steps = float(peak), int(warmup_steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    return self.peak * tf.minimum(1.0, (step + 1.0) / float(max(self.warmup_steps, 1)))

  def get_config(self):
    return {"peak": self.peak, "warmup_steps": self.warmup_steps}


class PriorTrainer:
  """Trains {source_name: Prior} on a dataset's solo crops. Build it, then call `train()`.

  Everything that owns variables (priors, optimizer, step counter, checkpoint) is created inside
  `strategy.scope()`, and the optimizer is built before the first tf.function step.
  """

  def __init__(self, fv, strategy=None):
    self.fv = fv
    self.strategy = strategy or tf.distribute.get_strategy()
    self.model_dir = fv.model_dir
    if not self.model_dir:
      raise ValueError("--model_dir is required")
    self.write_dir = strategy_lib.worker_dir(self.model_dir, self.strategy)
    self.is_chief = strategy_lib.is_chief(self.strategy)
    keras.utils.set_random_seed(fv.seed)

    self.data = builders.dataset_from_config(fv)
    self.source_names = tuple(self.data.source_names)
    self.global_batch = fv.batch_size
    replicas = self.strategy.num_replicas_in_sync
    if self.global_batch % replicas:
      raise ValueError(f"--batch_size={self.global_batch} must divide evenly over {replicas} replicas")

    with self.strategy.scope():
      self.priors = builders.build_priors(fv, self.source_names)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.optimizer = keras.optimizers.Adam(WarmupSchedule(fv.learning_rate, fv.warmup_steps))
      self.variables = [v for p in self.priors.values() for v in p.trainable_variables]
      self.optimizer.build(self.variables)
      self.checkpoint = tf.train.Checkpoint(priors=self.priors, optimizer=self.optimizer, step=self.step)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, os.path.join(self.write_dir, "checkpoints"), max_to_keep=fv.max_checkpoints)

    dataset = self.data.solo("train", crop_length=fv.crop_length, batch_size=self.global_batch, seed=fv.seed)
    self.dataset = dataset
    self._loop_fn = None

  # ----------------------------------------------------------------------------------------------- steps
  def _replica_step(self, batch):
    fv = self.fv
    local_batch = tf.shape(batch[self.source_names[0]])[0]
    with tf.GradientTape() as tape:
      losses = {}
      for name in self.source_names:
        sigma = prior_base.sample_sigma(local_batch, fv.sigma_min, fv.sigma_max, fv.p_clean)
        per_example = self.priors[name].compute_losses(batch[name], sigma, training=True)["total_loss"]
        losses[name] = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
      total = tf.add_n(list(losses.values()))
    grads = tape.gradient(total, self.variables)
    # Clip by the norm of the GLOBAL gradient: sum over replicas first. The Keras optimizer all-reduces
    # (sums) again, so hand it the mean; the applied update is the clipped global-batch gradient.
    ctx = tf.distribute.get_replica_context()
    grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    if fv.grad_clip_norm > 0:
      grads, _ = tf.clip_by_global_norm(grads, fv.grad_clip_norm)
    scale = 1.0 / ctx.num_replicas_in_sync
    self.optimizer.apply_gradients([(g * scale, v) for g, v in zip(grads, self.variables)])
    losses["total_loss"] = total
    return losses

  def _build_loop(self):
    strategy = self.strategy

    keys = (*self.source_names, "total_loss")

    @tf.function
    def loop(iterator, num_steps):
      sums = tf.zeros([len(keys)])
      for _ in tf.range(num_steps):
        per_replica = strategy.run(self._replica_step, args=(next(iterator),))
        sums += tf.stack([strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None) for k in keys])
        self.step.assign_add(1)
      means = sums / tf.cast(num_steps, tf.float32)
      return {k: means[i] for i, k in enumerate(keys)}

    return loop

  # ----------------------------------------------------------------------------------------------- train
  def initialize_or_restore(self, first_batch):
    """Restores the latest checkpoint, or runs the priors' data-dependent init on the first batch."""
    restored = self.manager.restore_or_initialize()
    if restored:
      logging.info("restored %s at step %d", restored, int(self.step.numpy()))
      return True
    with self.strategy.scope():
      for name, prior in self.priors.items():
        if hasattr(prior, "initialize"):
          sigma = prior_base.sample_sigma(self.global_batch, self.fv.sigma_min, self.fv.sigma_max, self.fv.p_clean)
          prior.initialize(first_batch[name], sigma)
    return False

  def train(self, num_steps=None):
    """Trains until --train_steps (or `num_steps` more steps). Returns the last loop's mean losses."""
    fv = self.fv
    first_batch = next(iter(self.dataset))
    self.initialize_or_restore(first_batch)
    if self.is_chief:
      config_lib.save_config(fv, self.model_dir)
    target = fv.train_steps if num_steps is None else int(self.step.numpy()) + num_steps
    dist_dataset = self.strategy.experimental_distribute_dataset(self.dataset)
    iterator = iter(dist_dataset)
    self._loop_fn = self._loop_fn or self._build_loop()
    writer = tf.summary.create_file_writer(os.path.join(self.write_dir, "train"))
    progbar = keras.utils.Progbar(target, stateful_metrics=["steps/s", "ksamples/s", *self.source_names],
                                  verbose=1 if self.is_chief else 0, unit_name="step")
    step = int(self.step.numpy())
    if step == 0 and self.is_chief:
      self._write_data_audio(writer, first_batch)
    metrics = {}
    while step < target:
      n = min(fv.steps_per_loop, target - step, fv.checkpoint_every - step % fv.checkpoint_every)
      t0 = time.perf_counter()
      metrics = {k: float(v) for k, v in self._loop_fn(iterator, tf.constant(n)).items()}
      dt = time.perf_counter() - t0
      step = int(self.step.numpy())
      if not np.isfinite(metrics["total_loss"]):
        raise FloatingPointError(f"non-finite loss at step {step}: {metrics}")
      # audio samples through all priors per second (crops x crop length x classes)
      rates = {"steps/s": n / dt,
               "ksamples/s": n * self.global_batch * fv.crop_length * len(self.source_names) / dt / 1e3}
      progbar.update(step, [(k, v) for k, v in {**metrics, **rates}.items() if k != "total_loss"]
                     + [("loss", metrics["total_loss"])])
      with writer.as_default(step=step):
        for k, v in {**metrics, **rates}.items():
          tf.summary.scalar(f"nll/{k}" if k in self.source_names else k, v)
        tf.summary.scalar("learning_rate", self.optimizer.learning_rate)
      if step % fv.checkpoint_every == 0 or step >= target:
        self.manager.save(checkpoint_number=step)
    if self.is_chief and metrics:
      self._write_sample_audio(writer, step)
    writer.flush()
    return metrics

  def _write_data_audio(self, writer, batch):
    seconds = self.fv.audio_summary_seconds
    if seconds <= 0:
      return
    n = min(int(seconds * self.data.sample_rate), self.fv.crop_length)
    with writer.as_default(step=0):
      for name in self.source_names:
        x = batch[name][:2, :n]
        tf.summary.audio(f"data/{name}", x[..., None], self.data.sample_rate, max_outputs=2)

  def _write_sample_audio(self, writer, step):
    """Listening check: a short noiseless sample from every prior (Fast WaveNet / flow inverse)."""
    seconds = self.fv.audio_summary_seconds
    if seconds <= 0:
      return
    n = int(seconds * self.data.sample_rate)
    n -= n % 64  # flows need lengths divisible by their total squeeze factor
    with writer.as_default(step=step):
      for name, prior in self.priors.items():
        if hasattr(prior, "sample") and n > 0:
          x = prior.sample(1, n, sigma=0.0)
          x = x[0] if isinstance(x, (tuple, list)) else x
          tf.summary.audio(f"samples/{name}", tf.clip_by_value(x, -1.0, 1.0)[..., None], self.data.sample_rate,
                           max_outputs=1)
