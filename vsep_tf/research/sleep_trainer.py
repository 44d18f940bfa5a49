"""Research (measured, off the product path; docs/research.md): phases of the waveform encoder's training
before its ELBO steps.

  --sleep_steps=K    the 'sleep' phase of wake-sleep: --sleep_bank_size waveforms are drawn from each frozen
                     prior (once; cached in <model_dir>/prior_samples.npz) and the encoder learns to split random
                     mixes of them back into those samples (loss -SI-SDR): amortised inference fitted on the
                     priors' own generative model p(s) p(m | s). Options: --sleep_match_level, --sleep_gain_db,
                     --sleep_temperature, --sleep_bank_length.
  --teacher_dir + --distill_steps=K
                     the encoder first imitates a teacher separator's estimates on the training mixes (loss
                     -SI-SDR against them); the teacher must use no more supervision than the priors (e.g. an
                     NMF model learnt from solo audio).

Measured (docs/research.md): the sleep phase on the toy score priors reached 2.1 / 8.9 / 3.5 / -3.3 dB SI-SDR, on
the chorales 1.9 dB SDR; NMF distillation on the chorales 2.4 dB; the spectral route ships 8.2 dB.
`vsep_tf.train` picks this trainer for --job=variational when either option is set (`train.trainer_class`).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from vsep_tf import model_dir as model_dir_lib
from vsep_tf.data import mixing
from vsep_tf.training.separator_trainer import SeparatorTrainer


class SleepDistillTrainer(SeparatorTrainer):
  """SeparatorTrainer with the sleep and distillation phases before the ELBO (module docstring)."""

  def build_models(self):
    trackables = super().build_models()
    cfg = self.cfg
    self.teacher = None
    self._bank = None
    if self.variational and cfg.teacher_dir and cfg.distill_steps > 0:
      self.teacher = model_dir_lib.load_separator(cfg.teacher_dir)
      if tuple(self.teacher.source_names) != self.source_names:
        raise ValueError(f"teacher {cfg.teacher_dir} separates {self.teacher.source_names}, not {self.source_names}")
    return trackables

  def phases(self) -> list:
    """[(phase, last step)]: sleep (--sleep_steps), distill (--distill_steps), then the ELBO."""
    cfg, out, end = self.cfg, [], 0
    if self.sleeps:
      end += cfg.sleep_steps
      out.append(("sleep", end))
    if self.teacher is not None:
      end += cfg.distill_steps
      out.append(("distill", end))
    out.append((self.main_phase, max(cfg.train_steps, end)))
    return out

  def phase_dataset(self, phase: str):
    if phase == "sleep":
      return self.sleep_dataset()
    if phase == "distill":
      return self.teacher_dataset()
    return self.dataset

  def teacher_dataset(self):
    """Training mixes with the teacher's estimates as the targets ("sources": never the true sources)."""
    cfg = self.cfg
    n, length = len(self.source_names), cfg.crop_length

    def teach(mix):
      est = tf.numpy_function(lambda m: self.teacher.separate(m).numpy().astype("float32"), [mix], tf.float32)
      est.set_shape([None, n, length])
      return {"mix": mix, "sources": est}

    return self.dataset.map(lambda b: teach(b["mix"]), num_parallel_calls=tf.data.AUTOTUNE)

  @property
  def loss_keys(self):
    if self.phase in ("distill", "sleep"):
      return ("si_sdr", "total_loss")
    return super().loss_keys

  @property
  def sleeps(self) -> bool:
    return self.variational and self.cfg.sleep_steps > 0

  @property
  def bank(self) -> np.ndarray:
    """The sleep phase's prior-sample bank, drawn (or read from the cache) on first use: a run resumed after
    its sleep phase never draws it."""
    if self._bank is None and self.sleeps:
      self._bank = self.prior_sample_bank()
    return self._bank

  def prior_sample_bank(self) -> np.ndarray:
    """[N, bank_size, length] noiseless samples of the frozen priors, drawn once and cached in the model dir."""
    cfg = self.cfg
    length = cfg.sleep_bank_length or 2 * cfg.crop_length
    path = os.path.join(self.model_dir, "prior_samples.npz")
    if os.path.exists(path):
      with np.load(path) as f:
        bank = f["samples"]
      if bank.shape == (len(self.source_names), cfg.sleep_bank_size, length):
        return bank
    samples = []
    for k, prior in enumerate(self.priors):
      x = prior.sample(cfg.sleep_bank_size, length, sigma=0.0, temperature=cfg.sleep_temperature,
                       seed=cfg.seed * 1000 + k).numpy()
      if not np.all(np.isfinite(x)):
        raise FloatingPointError(f"prior {self.source_names[k]} drew non-finite samples")
      logging.info("prior samples %s: rms %.3f, peak %.3f", self.source_names[k], float(np.sqrt(np.mean(x ** 2))),
                   float(np.abs(x).max()))
      samples.append(x.astype(np.float32))
    bank = np.stack(samples)
    if self.is_chief:
      os.makedirs(self.model_dir, exist_ok=True)
      tmp = path + ".tmp.npz"
      np.savez(tmp, samples=bank, source_names=np.array(self.source_names))
      os.replace(tmp, path)
    return bank

  def bank_level_gains(self, num_batches: int = 16) -> np.ndarray:
    """[N] factors that bring each class's bank RMS to the RMS of its solo training crops (--sleep_match_level)."""
    cfg = self.cfg
    ds = self.data.mixtures("train", length=cfg.crop_length, batch_size=8, seed=cfg.seed + 2)
    power = np.zeros(len(self.source_names))
    for batch in ds.take(num_batches):
      power += np.mean(np.square(batch["sources"].numpy()), axis=(0, 2))
    target = np.sqrt(power / num_batches)
    have = np.sqrt(np.mean(np.square(self.bank), axis=(1, 2)))
    gains = target / np.maximum(have, 1e-6)
    for name, t, h, g in zip(self.source_names, target, have, gains):
      logging.info("sleep level match %s: training audio rms %.3f, prior samples %.3f -> gain %.2f", name, t, h, g)
    return gains.astype(np.float32)

  def sleep_dataset(self):
    """Random mixes of prior samples: every example takes, per class, a random bank entry and crop offset (and,
    with --sleep_gain_db, a random gain; with --sleep_match_level, the bank is first brought to the level of the
    solo training audio)."""
    cfg = self.cfg
    bank = self.bank
    if cfg.sleep_match_level:
      bank = bank * self.bank_level_gains()[:, None, None]
    bank = tf.constant(bank)  # [N, B, L]
    n, size, length = self.bank.shape
    crop, batch = cfg.crop_length, self.global_batch
    mix_fn = self.encoder.mix

    def make(i):
      seeds = tf.stack([tf.cast(cfg.seed, tf.int64) + 7919, i])
      idx = tf.random.stateless_uniform([batch, n], seeds, maxval=size, dtype=tf.int32)
      off = tf.random.stateless_uniform([batch, n], seeds + 1, maxval=length - crop + 1, dtype=tf.int32)
      cls = tf.broadcast_to(tf.range(n)[None], [batch, n])
      rows = tf.gather_nd(bank, tf.stack([cls, idx], -1))  # [batch, n, L]
      t = off[..., None] + tf.range(crop)[None, None]
      sources = tf.gather(rows, t, batch_dims=2)  # [batch, n, crop]
      if cfg.sleep_gain_db > 0:
        gain_db = tf.random.stateless_uniform([batch, n, 1], seeds + 2, -cfg.sleep_gain_db, cfg.sleep_gain_db)
        sources = sources * tf.pow(10.0, gain_db / 20.0)
      return {"mix": mixing.mix_sources(sources, mix_fn), "sources": sources}

    return tf.data.Dataset.range(2 ** 62).map(make, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
