"""Trains the amortised separator (vsep_tf.separators.encoder) with the shared loop of trainer.Trainer.

--job=variational: mixes ALONE (the dataset's sources are dropped before the data reaches the step), the
  priors of --prior_dir frozen, loss = -ELBO / T with the prior noise level annealed geometrically from
  --elbo_sigma_start to --elbo_sigma_end over --elbo_anneal_fraction of the run.
  Phases before the ELBO that were measured and are not on the product path (the sleep phase of wake-sleep,
  distillation from a teacher separator) live in vsep_tf/research/sleep_trainer.py.
--job=supervised: (mix, sources) pairs, loss = -SI-SDR: the reference the unsupervised separator chases.

At every checkpoint the encoder means are scored (SI-SDR per source) on --valid_examples mixes of the
'valid' split: monitoring only, never a training signal.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from vsep_tf import signal as signal_lib
from vsep_tf import model_dir as model_dir_lib
from vsep_tf import registry
from vsep_tf.data import mixing
from vsep_tf.separators import encoder as encoder_lib
from vsep_tf.training.trainer import Trainer


class SeparatorTrainer(Trainer):
  """--job=variational or --job=supervised. See the module docstring."""

  def build_models(self):
    cfg = self.cfg
    self.variational = cfg.job == "variational"
    self.encoder = encoder_lib.build_encoder(len(self.source_names), self.data.mix,
                                             **registry.factory_kwargs(cfg, "encoder"))
    self.variables = list(self.encoder.trainable_variables)
    self.priors = None
    self.phase = self.main_phase
    if self.variational:
      if not cfg.prior_dir:
        raise ValueError("--job=variational needs --prior_dir (a model directory trained with --job=priors)")
      priors, prior_cfg = model_dir_lib.restore_priors(cfg.prior_dir)
      if tuple(priors) != self.source_names:
        raise ValueError(f"priors in {cfg.prior_dir} are for {tuple(priors)}, the data has {self.source_names}")
      if prior_cfg.dataset != cfg.dataset:
        logging.warning("priors trained on --dataset=%s, separator on --dataset=%s", prior_cfg.dataset, cfg.dataset)
      for prior in priors.values():
        prior.trainable = False
      self.priors = [priors[name] for name in self.source_names]
    return {"encoder": self.encoder}

  def make_dataset(self):
    cfg = self.cfg
    ds = self.data.mixtures("train", length=cfg.crop_length, batch_size=self.global_batch, seed=cfg.seed)
    if self.variational:  # unsupervised: the ground truth never reaches the training step
      ds = ds.map(lambda b: {"mix": b["mix"]})
    return ds

  def phase_dataset(self, phase: str):
    """The data of a phase (subclasses add phases with data of their own)."""
    del phase
    return self.dataset

  def on_first_batch(self, batch):
    """A fresh run with --init_from starts from that model dir's encoder weights (same architecture)."""
    del batch
    if self.cfg.init_from:
      path = tf.train.latest_checkpoint(os.path.join(self.cfg.init_from, "checkpoints"))
      if path is None:
        raise FileNotFoundError(f"--init_from={self.cfg.init_from}: no checkpoint")
      tf.train.Checkpoint(encoder=self.encoder).restore(path).expect_partial().assert_existing_objects_matched()
      logging.info("encoder initialised from %s", path)

  def phases(self) -> list:
    """[(phase, last step)] of this run: here one, the main loss (subclasses add phases before it)."""
    return [(self.main_phase, self.cfg.train_steps)]

  @property
  def main_phase(self) -> str:
    return "elbo" if self.variational else "supervised"

  def train(self, num_steps=None):
    """Runs the phases in order (resuming inside the one the checkpoint's step falls in) up to --train_steps."""
    if num_steps is not None:
      return super().train(num_steps)
    metrics = {}
    main_dataset = self.dataset
    done = self.checkpointed_step()  # phases already done are skipped before their data is built
    for phase, end in self.phases():
      if end <= done:
        continue
      self.phase, self._loop_fn = phase, None
      self.dataset = self.phase_dataset(phase)
      # Up to the phase's END step, counted after the checkpoint restore inside Trainer.train (a resumed run
      # learns its step only there; counting 'remaining' before it overran the first phase).
      metrics = super().train(until_step=end) or metrics
    self.dataset = main_dataset
    return metrics

  @property
  def loss_keys(self):
    if self.phase == "elbo":
      return ("prior_nll", "mix_nll", "neg_entropy", "sigma_prior", "total_loss")
    return ("si_sdr", "total_loss")

  def sigma_prior(self):
    """The prior noise level, annealed over the ELBO steps (after any distillation steps)."""
    cfg = self.cfg
    start = ([0] + [end for _, end in self.phases()[:-1]])[-1]  # the ELBO starts after the phases before it
    return encoder_lib.annealed_sigma(self.step - start, int(cfg.elbo_anneal_fraction * (cfg.train_steps - start)),
                                      cfg.elbo_sigma_start, cfg.elbo_sigma_end)

  def replica_step(self, batch):
    cfg = self.cfg
    with tf.GradientTape() as tape:
      if self.phase == "elbo":
        sigma = self.sigma_prior()
        per_example = encoder_lib.elbo_losses(self.encoder, self.priors, batch["mix"], sigma,
                                              cfg.elbo_mix_sigma, cfg.elbo_entropy_weight,
                                              prior_noise=cfg.elbo_prior_noise)
      else:  # supervised, or a phase of a subclass whose batches hold its targets as "sources"
        per_example = encoder_lib.supervised_losses(self.encoder, batch["mix"], batch["sources"])
      losses = {k: tf.nn.compute_average_loss(v, global_batch_size=self.global_batch)
                for k, v in per_example.items()}
    self.apply_gradients(tape, losses["total_loss"])
    if self.phase == "elbo":  # reported as a mean over replicas after the SUM reduction
      losses["sigma_prior"] = sigma / self.strategy.num_replicas_in_sync
    return losses

  def validate(self):
    """Median SI-SDR (dB) per source of the encoder means on 'valid' mixes: {name: dB}."""
    cfg = self.cfg
    n = cfg.valid_examples
    if n <= 0:
      return {}
    if "valid" not in getattr(self.data, "splits", ("valid",)):  # e.g. a stem folder with train/ and test/ only
      logging.log_first_n(logging.WARNING, "no 'valid' split in %s: no validation SI-SDR (the test split is never "
                          "used here)", 1, self.data)
      return {}
    ds = self.data.mixtures("valid", length=cfg.crop_length, batch_size=n, seed=cfg.seed + 1)
    batch = next(iter(ds))
    mean, _ = self.encoder(batch["mix"])
    sdr = signal_lib.si_sdr(batch["sources"], mean).numpy()  # [n, N]
    return {name: float(np.median(sdr[:, k])) for k, name in enumerate(self.source_names)}

  def on_checkpoint(self, writer, step):
    scores = self.validate()
    if scores:
      with writer.as_default(step=step):
        for name, value in scores.items():
          tf.summary.scalar(f"valid_si_sdr/{name}", value)
      logging.info("step %d valid SI-SDR %s", step, " ".join(f"{k}={v:.2f}" for k, v in scores.items()))
