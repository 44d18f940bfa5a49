"""The custom training loop under a tf.distribute strategy (`Trainer`), and the prior trainer.

`Trainer` is the shared loop (the separator trainer in separator_trainer.py reuses it). `PriorTrainer` trains
one prior per source class, all together: per step, each prior k gets a batch of solo crops of its class, noised at per-example levels sigma drawn by
`priors.base.sample_sigma`; the loss is the sum over classes of the noised negative log-likelihood
(nats/sample), averaged over the GLOBAL batch (`tf.nn.compute_average_loss`), so gradients do not grow with the
number of replicas. `steps_per_loop` steps run inside one tf.function call.
"""
from __future__ import annotations

import hashlib
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from vsep_tf import model_dir as model_dir_lib
from vsep_tf import registry
from vsep_tf.priors import base as prior_base
from vsep_tf.training import strategy as strategy_lib


NAN_BATCH_FILENAME = "nan_batch.npz"


class NonFiniteLossError(FloatingPointError):
  """Training stopped on a NaN/Inf loss; `step` is the first offending optimisation step (1-based, the value
  the step counter would have after it), `batch_index` its batch's index in this run's data stream and
  `batch_path` where that batch was dumped (chief only; None if not dumped)."""

  def __init__(self, step: int, batch_index: int, batch_path, metrics: dict):
    self.step, self.batch_index, self.batch_path, self.metrics = step, batch_index, batch_path, metrics
    where = f"; batch dumped to {batch_path}" if batch_path else ""
    super().__init__(f"non-finite loss at step {step} (batch index {batch_index} of this run's data "
                     f"stream{where}): {metrics}")


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `peak` over `warmup_steps`, then constant."""

  def __init__(self, peak: float, warmup_steps: int):
    self.peak, self.warmup_steps = float(peak), int(warmup_steps)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    return self.peak * tf.minimum(1.0, (step + 1.0) / float(max(self.warmup_steps, 1)))

  def get_config(self):
    return {"peak": self.peak, "warmup_steps": self.warmup_steps}


class Trainer:
  """The shared custom loop. Subclasses build their models and define one replica step; this class owns
  the strategy plumbing, the tf.function loop of `steps_per_loop` steps, checkpoints (resume), TensorBoard
  scalars, the progress bar and the saved config.

  Hooks: `build_models()` (inside strategy.scope(); returns the dict of trackables to checkpoint and sets
  `self.variables`), `make_dataset()`, `replica_step(batch) -> {name: scalar}` (with 'total_loss'; losses
  averaged over the GLOBAL batch), `loss_keys`, `samples_per_step`, `on_first_batch(batch)` (data-dependent
  init of a fresh model), `on_checkpoint(writer, step)`, `on_end(writer, step)`.
  Everything that owns variables is created inside `strategy.scope()`, and the optimizer is built before the
  first tf.function step.
  """

  def __init__(self, cfg, strategy=None):
    self.cfg = cfg
    self.strategy = strategy or tf.distribute.get_strategy()
    self.model_dir = cfg.model_dir
    if not self.model_dir:
      raise ValueError("--model_dir is required")
    self.write_dir = strategy_lib.worker_dir(self.model_dir, self.strategy)
    self.is_chief = strategy_lib.is_chief(self.strategy)
    keras.utils.set_random_seed(cfg.seed)

    self.data = registry.dataset_from_config(cfg)
    self.source_names = tuple(self.data.source_names)
    self.global_batch = cfg.batch_size
    self.loop_times = []  # (steps, seconds) of every tf.function loop call: throughput without checkpoint I/O
    replicas = self.strategy.num_replicas_in_sync
    if self.global_batch % replicas:
      raise ValueError(f"--batch_size={self.global_batch} must divide evenly over {replicas} replicas")

    with self.strategy.scope():
      trackables = self.build_models()
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.optimizer = keras.optimizers.Adam(WarmupSchedule(cfg.learning_rate, cfg.warmup_steps))
      self.optimizer.build(self.variables)
      self.checkpoint = tf.train.Checkpoint(optimizer=self.optimizer, step=self.step, **trackables)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, os.path.join(self.write_dir, "checkpoints"), max_to_keep=cfg.max_checkpoints)
    self.dataset = self.make_dataset()
    self._loop_fn = None

  # ------------------------------------------------------------------------------------------------ hooks
  def build_models(self) -> dict:
    raise NotImplementedError

  def make_dataset(self):
    raise NotImplementedError

  def replica_step(self, batch) -> dict:
    raise NotImplementedError

  @property
  def loss_keys(self):
    return ("total_loss",)

  @property
  def samples_per_step(self) -> int:
    return self.global_batch * self.cfg.crop_length

  def on_first_batch(self, batch):
    del batch

  def on_end(self, writer, step):
    del writer, step

  def on_checkpoint(self, writer, step):
    del writer, step

  def write_data_audio(self, writer, batch):
    del writer, batch

  def write_manifest(self):
    """<model_dir>/manifest.json: what load_separator needs (model_dir.py); subclasses add components."""
    model_dir_lib.write_manifest(self.model_dir, self.cfg, self.source_names, self.data.sample_rate, self.data.mix,
                                 self.manifest_components())

  def manifest_components(self) -> dict:
    return {}

  def apply_gradients(self, tape, total):
    """Gradients of the replica's `total` (already divided by the GLOBAL batch), summed over replicas,
    clipped by the global norm, applied once."""
    cfg = self.cfg
    grads = tape.gradient(total, self.variables)
    # Clip by the norm of the GLOBAL gradient: sum over replicas first. The Keras optimizer all-reduces
    # (sums) again, so hand it the mean; the applied update is the clipped global-batch gradient.
    ctx = tf.distribute.get_replica_context()
    grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    if cfg.grad_clip_norm > 0:
      grads, _ = tf.clip_by_global_norm(grads, cfg.grad_clip_norm)
    scale = 1.0 / ctx.num_replicas_in_sync
    self.optimizer.apply_gradients([(g * scale, v) for g, v in zip(grads, self.variables)])

  def _build_loop(self):
    strategy = self.strategy

    keys = tuple(self.loss_keys)

    @tf.function
    def loop(iterator, num_steps):
      # Stops after the first step whose (all-reduced, so identical on every worker) loss is not finite:
      # the step counter then names the offending step, and no further update is applied on top of it.
      sums = tf.zeros([len(keys)])
      done = tf.constant(0)
      finite = tf.constant(True)
      for _ in tf.range(num_steps):
        per_replica = strategy.run(self.replica_step, args=(next(iterator),))
        values = tf.stack([strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None) for k in keys])
        sums += values
        self.step.assign_add(1)
        done += 1
        finite = tf.reduce_all(tf.math.is_finite(values))
        if not finite:
          break
      means = sums / tf.cast(done, tf.float32)
      return {k: means[i] for i, k in enumerate(keys)}, done

    return loop

  # ----------------------------------------------------------------------------------------------- train
  def initialize_or_restore(self, first_batch):
    """Restores the latest checkpoint, or runs the data-dependent init (`on_first_batch`) of a fresh run."""
    if self.is_chief:
      restored = self.manager.restore_or_initialize()
    else:
      # Every worker resumes from the CHIEF's checkpoint (the real one; this worker's scratch copy may be
      # missing or stale), so all workers restart from the same step and weights.
      restored = tf.train.latest_checkpoint(os.path.join(self.model_dir, "checkpoints"))
      if restored:
        self.checkpoint.restore(restored)
    if restored:
      logging.info("restored %s at step %d", restored, int(self.step.numpy()))
      return True
    self.on_first_batch(first_batch)
    return False

  def checkpointed_step(self) -> int:
    """The step the next `train` call resumes from (the chief's latest checkpoint; the live step if later),
    read without restoring anything."""
    path = tf.train.latest_checkpoint(os.path.join(self.model_dir, "checkpoints"))
    saved = int(tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) if path else 0
    return max(saved, int(self.step.numpy()))

  def train(self, num_steps=None, until_step=None):
    """Trains until --train_steps (or `num_steps` more steps, or up to step `until_step`), counting from the
    restored checkpoint's step. Returns the last loop's mean losses ({} if there was nothing left to do)."""
    cfg = self.cfg
    first_batch = next(iter(self.dataset))
    self.initialize_or_restore(first_batch)
    if self.is_chief:
      self.write_manifest()
    start_step = int(self.step.numpy())
    if until_step is not None:
      target = int(until_step)
    else:
      target = cfg.train_steps if num_steps is None else start_step + num_steps
    dataset = self._debug_nan_dataset(self.dataset, start_step)
    dist_dataset = self.strategy.experimental_distribute_dataset(dataset)
    iterator = iter(dist_dataset)
    self._loop_fn = self._loop_fn or self._build_loop()
    writer = tf.summary.create_file_writer(os.path.join(self.write_dir, "train"))
    progbar = keras.utils.Progbar(target, stateful_metrics=["steps/s", "ksamples/s", *self.loss_keys],
                                  verbose=1 if self.is_chief else 0, unit_name="step")
    step = int(self.step.numpy())
    if step == 0 and self.is_chief:
      self.write_data_audio(writer, first_batch)
    metrics = {}
    while step < target:
      n = min(cfg.steps_per_loop, target - step, cfg.checkpoint_every - step % cfg.checkpoint_every)
      t0 = time.perf_counter()
      out, done = self._loop_fn(iterator, tf.constant(n))
      metrics = {k: float(v) for k, v in out.items()}
      dt = time.perf_counter() - t0
      step = int(self.step.numpy())
      if not all(np.isfinite(v) for v in metrics.values()):
        batch_index = step - 1 - start_step
        path = self._dump_batch(dataset, batch_index) if self.is_chief else None
        writer.flush()
        raise NonFiniteLossError(step, batch_index, path, metrics)
      self.loop_times.append((n, dt))
      rates = {"steps/s": n / dt, "ksamples/s": n * self.samples_per_step / dt / 1e3}
      progbar.update(step, [(k, v) for k, v in {**metrics, **rates}.items() if k != "total_loss"]
                     + [("loss", metrics["total_loss"])])
      with writer.as_default(step=step):
        for k, v in {**metrics, **rates}.items():
          tf.summary.scalar(f"nll/{k}" if k in self.source_names else k, v)
        tf.summary.scalar("learning_rate", self.optimizer.learning_rate)
      if step % cfg.checkpoint_every == 0 or step >= target:
        self.manager.save(checkpoint_number=step)
        if self.is_chief:
          self.on_checkpoint(writer, step)
    if self.is_chief and metrics:
      self.on_end(writer, step)
    writer.flush()
    return metrics

  def weights_checksum(self) -> str:
    """sha256 of every trained variable's bytes (identical on every worker of a synchronous run)."""
    h = hashlib.sha256()
    for v in self.variables:
      h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()

  # ------------------------------------------------------------------------------------------- debugging
  def _debug_nan_dataset(self, dataset, start_step: int):
    """--debug_nan_at_step=S (testing aid): the batch of step S (1-based) becomes NaN."""
    nan_step = self.cfg.debug_nan_at_step if "debug_nan_at_step" in self.cfg else 0
    if nan_step <= start_step:
      return dataset
    index = nan_step - 1 - start_step

    def poison(i, batch):
      bad = tf.equal(i, index)
      return tf.nest.map_structure(
          lambda x: tf.where(bad, tf.fill(tf.shape(x), tf.constant(float("nan"), x.dtype)), x)
          if x.dtype.is_floating else x, batch)

    return dataset.enumerate().map(poison)

  def _dump_batch(self, dataset, batch_index: int):
    """Writes batch `batch_index` of this run's (deterministic) data stream to <model_dir>/nan_batch.npz."""
    try:
      batch = next(iter(dataset.skip(batch_index).take(1)))
      arrays = {k: np.asarray(v) for k, v in
                (batch.items() if isinstance(batch, dict) else enumerate(tf.nest.flatten(batch)))}
      path = os.path.join(self.model_dir, NAN_BATCH_FILENAME)
      np.savez(path, batch_index=batch_index, **{str(k): v for k, v in arrays.items()})
      return path
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("could not dump the non-finite batch: %s", e)
      return None


class PriorTrainer(Trainer):
  """Trains {source_name: Prior} on a dataset's solo crops. Build it, then call `train()`."""

  def build_models(self):
    self.priors = registry.build_priors(self.cfg, self.source_names)
    self.variables = [v for p in self.priors.values() for v in p.trainable_variables]
    return {"priors": self.priors}

  def make_dataset(self):
    cfg = self.cfg
    return self.data.solo("train", crop_length=cfg.crop_length, batch_size=self.global_batch, seed=cfg.seed)

  @property
  def loss_keys(self):
    return (*self.source_names, "total_loss")

  @property
  def samples_per_step(self):
    return self.global_batch * self.cfg.crop_length * len(self.source_names)

  # ----------------------------------------------------------------------------------------------- steps
  def replica_step(self, batch):
    cfg = self.cfg
    local_batch = tf.shape(batch[self.source_names[0]])[0]
    with tf.GradientTape() as tape:
      losses = {}
      for name in self.source_names:
        sigma = prior_base.sample_sigma(local_batch, cfg.sigma_min, cfg.sigma_max, cfg.p_clean)
        per_example = self.priors[name].compute_losses(batch[name], sigma, training=True)["total_loss"]
        losses[name] = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
      total = tf.add_n(list(losses.values()))
    self.apply_gradients(tape, total)
    losses["total_loss"] = total
    return losses

  def on_first_batch(self, batch):
    """The flows' data-dependent ActNorm init on the first batch (fresh runs only)."""
    with self.strategy.scope():
      for name, prior in self.priors.items():
        if hasattr(prior, "initialize"):
          sigma = prior_base.sample_sigma(self.global_batch, self.cfg.sigma_min, self.cfg.sigma_max, self.cfg.p_clean)
          prior.initialize(batch[name], sigma)

  def on_end(self, writer, step):
    self._write_sample_audio(writer, step)

  def write_data_audio(self, writer, batch):
    seconds = self.cfg.audio_summary_seconds
    if seconds <= 0:
      return
    n = min(int(seconds * self.data.sample_rate), self.cfg.crop_length)
    with writer.as_default(step=0):
      for name in self.source_names:
        x = batch[name][:2, :n]
        tf.summary.audio(f"data/{name}", x[..., None], self.data.sample_rate, max_outputs=2)

  def _write_sample_audio(self, writer, step):
    """Listening check: a short noiseless sample from every prior (Fast WaveNet / flow inverse)."""
    seconds = self.cfg.audio_summary_seconds
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


def get_trainer(job: str):
  """The trainer class of a --job (imported lazily: each job pulls in only what it needs)."""
  if job == "spectral_separator":
    from vsep_tf.training.pipeline import SpectralSeparatorPipeline  # pylint: disable=import-outside-toplevel
    return SpectralSeparatorPipeline
  if job in ("harmonic_separator", "harmonic_priors", "harmonic"):
    from vsep_tf.training import harmonic_trainer  # pylint: disable=import-outside-toplevel
    return {"harmonic_separator": harmonic_trainer.HarmonicSeparatorPipeline,
            "harmonic_priors": harmonic_trainer.HarmonicPriorFitter,
            "harmonic": harmonic_trainer.HarmonicEncoderTrainer}[job]
  if job == "priors":
    return PriorTrainer
  if job in ("variational", "supervised"):
    from vsep_tf.training.separator_trainer import SeparatorTrainer  # pylint: disable=import-outside-toplevel
    return SeparatorTrainer
  if job == "nmf":
    from vsep_tf.training.nmf_trainer import NMFTrainer  # pylint: disable=import-outside-toplevel
    return NMFTrainer
  if job == "spectral":
    from vsep_tf.training.spectral_trainer import SpectralPriorTrainer  # pylint: disable=import-outside-toplevel
    return SpectralPriorTrainer
  if job == "spectral_encoder":
    from vsep_tf.training.spectral_trainer import SpectralEncoderTrainer  # pylint: disable=import-outside-toplevel
    return SpectralEncoderTrainer
  raise ValueError(f"unknown --job={job!r}")
