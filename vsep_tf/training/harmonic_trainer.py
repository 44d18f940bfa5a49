"""--job=harmonic_separator: the harmonic separator (separators/harmonic.py), trained into ONE model directory.

  stage 1  priors   per class, the harmonic prior's amplitudes and ranges fitted to its SOLO train audio
                    (priors/harmonic.py: fit_harmonic_prior; up to --max_solo_seconds per class, numpy on the
                    host, seconds) -> <model_dir>/priors  (HarmonicPriorFitter, --job=harmonic_priors)
  stage 2  encoder  the pitch encoder by a SLEEP phase: each step renders --batch_size mix frames, each the sum of
                    one sample of every prior (random fundamental, level and harmonic phases), and trains the
                    encoder to name every class's fundamental on the grid (cross-entropy) -> <model_dir>
                    (HarmonicEncoderTrainer, --job=harmonic; --train_steps, --learning_rate)

No stage reads a mixture of the data set: the priors see solo audio, the encoder their samples. Each stage
resumes on its own (a fitted priors directory is kept; the encoder resumes from its latest checkpoint).
"""
from __future__ import annotations

import os
import time

import tensorflow as tf
from absl import logging

from vsep_tf import model_dir as model_dir_lib
from vsep_tf import registry
from vsep_tf.data.solo import solo_audio
from vsep_tf.priors.harmonic import fit_harmonic_prior
from vsep_tf.separators.harmonic import PitchEncoder
from vsep_tf.training.trainer import Trainer


class HarmonicPriorFitter:
  """--job=harmonic_priors: fits one HarmonicPrior per class on its solo train audio; `train()` -> metrics."""

  def __init__(self, cfg, strategy=None):
    del strategy  # numpy on the host
    if not cfg.model_dir:
      raise ValueError("--model_dir is required")
    self.cfg, self.model_dir = cfg, cfg.model_dir
    self.data = registry.dataset_from_config(cfg)
    self.source_names = tuple(self.data.source_names)

  def is_done(self) -> bool:
    return tf.train.latest_checkpoint(os.path.join(self.model_dir, "checkpoints")) is not None

  def train(self) -> dict:
    if self.is_done():
      logging.info("harmonic priors already fitted in %s", self.model_dir)
      return {}
    t0 = time.perf_counter()
    priors = registry.build_harmonic_priors(self.cfg, self.source_names, self.data.sample_rate)
    solo = solo_audio(self.data, "train", self.cfg.max_solo_seconds)
    metrics = {}
    for name, prior in priors.items():
      info = fit_harmonic_prior(prior, solo[name])
      logging.info("harmonic prior %s: %s", name, info)
      metrics.update({f"{k}/{name}": float(v) for k, v in info.items()})
    os.makedirs(self.model_dir, exist_ok=True)
    model_dir_lib.write_manifest(self.model_dir, self.cfg, self.source_names, self.data.sample_rate, self.data.mix)
    tf.train.CheckpointManager(tf.train.Checkpoint(priors=priors), os.path.join(self.model_dir, "checkpoints"),
                               max_to_keep=1).save(checkpoint_number=1)
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


class HarmonicEncoderTrainer(Trainer):
  """--job=harmonic: the pitch encoder for the frozen harmonic priors of --prior_dir, by the sleep phase above
  (the custom loop of trainer.Trainer: strategies, checkpoints, resume). The data set gives only the class names
  and rate; the batches are priors' samples drawn in the step from a stateless seed (--seed, step, replica)."""

  def build_models(self):
    cfg = self.cfg
    if not cfg.prior_dir:
      raise ValueError("--job=harmonic needs --prior_dir (a --job=harmonic_priors model directory)")
    self.priors = model_dir_lib.restore_harmonic_priors(cfg.prior_dir)
    if tuple(self.priors) != self.source_names:
      raise ValueError(f"the priors are for {tuple(self.priors)}, the data has {self.source_names}")
    self.encoder = PitchEncoder.for_priors(self.priors, **registry.factory_kwargs(cfg, "harmonic_encoder"))
    self.variables = list(self.encoder.trainable_variables)
    return {"encoder": self.encoder}

  def make_dataset(self):
    # Placeholder batches: only their size reaches the step (the samples are drawn there).
    return tf.data.Dataset.from_tensors(tf.zeros([1], tf.float32)).repeat().batch(self.global_batch)

  def manifest_components(self):
    return {model_dir_lib.PRIORS_SUBDIR: self.cfg.prior_dir}

  @property
  def loss_keys(self):
    return ("total_loss", "pitch_error_semitones")

  @property
  def samples_per_step(self):
    """Mix frames per step (the progress bar's 'ksamples/s' counts frames for this job)."""
    return self.global_batch

  def replica_step(self, batch):
    rows = tf.shape(batch)[0]
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    seed = tf.stack([tf.cast(self.step, tf.int32) * 1009 + tf.cast(replica, tf.int32), self.cfg.seed])
    mix, hz = 0.0, []
    for k, prior in enumerate(self.priors.values()):
      frames, f0 = prior.sample(rows, seed + tf.constant([0, 7919]) * (k + 1))
      mix, hz = mix + frames, hz + [f0]
    hz = tf.stack(hz, axis=1)                                                # [rows, N]
    with tf.GradientTape() as tape:
      logits = self.encoder(tf.abs(mix), training=True)
      per_row = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(self.encoder.labels(hz), logits), -1)
      total = tf.nn.compute_average_loss(per_row, global_batch_size=self.global_batch)
    self.apply_gradients(tape, total)
    error = tf.abs(tf.math.log(self.encoder.pitches(logits) / hz)) * (12.0 / tf.math.log(2.0))
    return {"total_loss": total, "pitch_error_semitones": tf.nn.compute_average_loss(
        tf.reduce_mean(error, -1), global_batch_size=self.global_batch)}


class HarmonicSeparatorPipeline:
  """The two stages above into one model directory (stage 1 in <model_dir>/priors). `train()` -> the encoder's
  metrics (the priors' with 'priors/')."""

  def __init__(self, cfg, strategy=None):
    if not cfg.model_dir:
      raise ValueError("--model_dir is required")
    self.cfg, self.strategy = cfg, strategy
    self.prior_dir = os.path.join(cfg.model_dir, model_dir_lib.PRIORS_SUBDIR)
    self.fitter = HarmonicPriorFitter(cfg.replace(job="harmonic_priors", model_dir=self.prior_dir), strategy)
    self.trainer = None

  def train(self) -> dict:
    logging.info("stage 1/2: harmonic priors from solo audio -> %s", self.prior_dir)
    prior_metrics = self.fitter.train()
    logging.info("stage 2/2: pitch encoder by a sleep phase on the priors' samples -> %s (%d steps)",
                 self.cfg.model_dir, self.cfg.train_steps)
    self.trainer = HarmonicEncoderTrainer(self.cfg.replace(job="harmonic", prior_dir=self.prior_dir), self.strategy)
    metrics = self.trainer.train()
    return {**{f"priors/{k}": v for k, v in prior_metrics.items()}, **metrics}

  @property
  def step(self):
    return self.trainer.step if self.trainer is not None else tf.constant(0)

  @property
  def is_chief(self) -> bool:
    return self.trainer.is_chief if self.trainer is not None else True

  def weights_checksum(self) -> str:
    return self.trainer.weights_checksum()
