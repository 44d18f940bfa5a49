"""Trains the amortised separator (vsep_tf.separators.encoder) with the shared loop of trainer.Trainer.

--job=variational: mixes ALONE (the dataset's sources are dropped before the data reaches the step), the
  priors of --prior_dir frozen, loss = -ELBO / T with the prior noise level annealed geometrically from
  --elbo_sigma_start to --elbo_sigma_end over --elbo_anneal_fraction of the run.
  With --teacher_dir and --distill_steps=K, the first K steps instead imitate a teacher separator's estimates
  on the same training mixes (loss -SI-SDR against them): a starting point inside the right basin for the
  ELBO. The teacher must use no more supervision than the priors (e.g. --job=nmf: per-class dictionaries
  from solo audio), so the pipeline stays free of (mix, sources) pairs.
  With --sleep_steps=K, the very first K steps are the 'sleep' phase of wake-sleep: --sleep_bank_size waveforms
  are drawn from each frozen prior (once; cached in <model_dir>/prior_samples.npz), and the encoder learns to
  split random mixes of them back into those samples (loss -SI-SDR). That is amortised inference fitted on the
  priors' own generative model p(s) p(m | s): everything it knows about the sources comes from the priors.
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
from vsep_tf.data import mixing
from vsep_tf.separators import encoder as encoder_lib
from vsep_tf.training import builders
from vsep_tf.training import config as config_lib
from vsep_tf.training.trainer import Trainer


class SeparatorTrainer(Trainer):
  """--job=variational or --job=supervised. See the module docstring."""

  def build_models(self):
    fv = self.fv
    self.variational = fv.job == "variational"
    self.encoder = encoder_lib.build_encoder(len(self.source_names), self.data.mix,
                                             **config_lib.factory_kwargs(fv, "encoder"))
    self.variables = list(self.encoder.trainable_variables)
    self.priors = None
    if self.variational:
      if not fv.prior_dir:
        raise ValueError("--job=variational needs --prior_dir (a model directory trained with --job=priors)")
      priors, prior_fv = builders.restore_priors(fv.prior_dir)
      if tuple(priors) != self.source_names:
        raise ValueError(f"priors in {fv.prior_dir} are for {tuple(priors)}, the data has {self.source_names}")
      if prior_fv.dataset != fv.dataset:
        logging.warning("priors trained on --dataset=%s, separator on --dataset=%s", prior_fv.dataset, fv.dataset)
      for prior in priors.values():
        prior.trainable = False
      self.priors = [priors[name] for name in self.source_names]
    self.teacher = None
    self._bank = None
    self.phase = "elbo" if self.variational else "supervised"
    if self.variational and fv.teacher_dir and fv.distill_steps > 0:
      from vsep_tf.separators import load_separator  # pylint: disable=import-outside-toplevel
      self.teacher = load_separator(fv.teacher_dir)
      if tuple(self.teacher.source_names) != self.source_names:
        raise ValueError(f"teacher {fv.teacher_dir} separates {self.teacher.source_names}, not {self.source_names}")
    return {"encoder": self.encoder}

  def make_dataset(self):
    fv = self.fv
    ds = self.data.mixtures("train", length=fv.crop_length, batch_size=self.global_batch, seed=fv.seed)
    if self.variational:  # unsupervised: the ground truth never reaches the training step
      ds = ds.map(lambda b: {"mix": b["mix"]})
    if self.teacher is not None:
      n, length = len(self.source_names), fv.crop_length

      def teach(mix):
        est = tf.numpy_function(lambda m: self.teacher.separate(m).numpy().astype("float32"), [mix], tf.float32)
        est.set_shape([None, n, length])
        return {"mix": mix, "teacher": est}

      ds = ds.map(lambda b: teach(b["mix"]), num_parallel_calls=tf.data.AUTOTUNE)
    return ds

  @property
  def sleeps(self) -> bool:
    return self.variational and self.fv.sleep_steps > 0

  @property
  def bank(self) -> np.ndarray:
    """The sleep phase's prior-sample bank, drawn (or read from the cache) on first use: a run resumed after
    its sleep phase never draws it."""
    if self._bank is None and self.sleeps:
      self._bank = self.prior_sample_bank()
    return self._bank

  def prior_sample_bank(self) -> np.ndarray:
    """[N, bank_size, length] noiseless samples of the frozen priors, drawn once and cached in the model dir."""
    fv = self.fv
    length = fv.sleep_bank_length or 2 * fv.crop_length
    path = os.path.join(self.model_dir, "prior_samples.npz")
    if os.path.exists(path):
      with np.load(path) as f:
        bank = f["samples"]
      if bank.shape == (len(self.source_names), fv.sleep_bank_size, length):
        return bank
    samples = []
    for k, prior in enumerate(self.priors):
      x = prior.sample(fv.sleep_bank_size, length, sigma=0.0, temperature=fv.sleep_temperature,
                       seed=fv.seed * 1000 + k).numpy()
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
    fv = self.fv
    ds = self.data.mixtures("train", length=fv.crop_length, batch_size=8, seed=fv.seed + 2)
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
    fv = self.fv
    bank = self.bank
    if fv.sleep_match_level:
      bank = bank * self.bank_level_gains()[:, None, None]
    bank = tf.constant(bank)  # [N, B, L]
    n, size, length = self.bank.shape
    crop, batch = fv.crop_length, self.global_batch
    mix_fn = self.encoder.mix

    def make(i):
      seeds = tf.stack([tf.cast(fv.seed, tf.int64) + 7919, i])
      idx = tf.random.stateless_uniform([batch, n], seeds, maxval=size, dtype=tf.int32)
      off = tf.random.stateless_uniform([batch, n], seeds + 1, maxval=length - crop + 1, dtype=tf.int32)
      cls = tf.broadcast_to(tf.range(n)[None], [batch, n])
      rows = tf.gather_nd(bank, tf.stack([cls, idx], -1))  # [batch, n, L]
      t = off[..., None] + tf.range(crop)[None, None]
      sources = tf.gather(rows, t, batch_dims=2)  # [batch, n, crop]
      if fv.sleep_gain_db > 0:
        gain_db = tf.random.stateless_uniform([batch, n, 1], seeds + 2, -fv.sleep_gain_db, fv.sleep_gain_db)
        sources = sources * tf.pow(10.0, gain_db / 20.0)
      return {"mix": mixing.mix_sources(sources, mix_fn), "sources": sources}

    return tf.data.Dataset.range(2 ** 62).map(make, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)

  def on_first_batch(self, batch):
    """A fresh run with --init_from starts from that model dir's encoder weights (same architecture)."""
    del batch
    if self.fv.init_from:
      path = tf.train.latest_checkpoint(os.path.join(self.fv.init_from, "checkpoints"))
      if path is None:
        raise FileNotFoundError(f"--init_from={self.fv.init_from}: no checkpoint")
      tf.train.Checkpoint(encoder=self.encoder).restore(path).expect_partial().assert_existing_objects_matched()
      logging.info("encoder initialised from %s", path)

  def phases(self) -> list:
    """[(phase, last step)] of this run: sleep (--sleep_steps), distill (--distill_steps), then the main loss."""
    fv, out, end = self.fv, [], 0
    if self.sleeps:
      end += fv.sleep_steps
      out.append(("sleep", end))
    if self.teacher is not None:
      end += fv.distill_steps
      out.append(("distill", end))
    out.append(("elbo" if self.variational else "supervised", max(fv.train_steps, end)))
    return out

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
      self.dataset = self.sleep_dataset() if phase == "sleep" else main_dataset
      # Up to the phase's END step, counted after the checkpoint restore inside Trainer.train (a resumed run
      # learns its step only there; counting 'remaining' before it overran the first phase).
      metrics = super().train(until_step=end) or metrics
    self.dataset = main_dataset
    return metrics

  @property
  def loss_keys(self):
    if self.phase in ("distill", "sleep"):
      return ("si_sdr", "total_loss")
    if self.variational:
      return ("prior_nll", "mix_nll", "neg_entropy", "sigma_prior", "total_loss")
    return ("si_sdr", "total_loss")

  def sigma_prior(self):
    """The prior noise level, annealed over the ELBO steps (after any distillation steps)."""
    fv = self.fv
    start = ([0] + [end for _, end in self.phases()[:-1]])[-1]  # the ELBO starts after the phases before it
    return encoder_lib.annealed_sigma(self.step - start, int(fv.elbo_anneal_fraction * (fv.train_steps - start)),
                                      fv.elbo_sigma_start, fv.elbo_sigma_end)

  def replica_step(self, batch):
    fv = self.fv
    with tf.GradientTape() as tape:
      if self.phase == "distill":
        per_example = encoder_lib.supervised_losses(self.encoder, batch["mix"], batch["teacher"])
      elif self.phase == "sleep":  # prior samples, never real sources
        per_example = encoder_lib.supervised_losses(self.encoder, batch["mix"], batch["sources"])
      elif self.variational:
        sigma = self.sigma_prior()
        per_example = encoder_lib.elbo_losses(self.encoder, self.priors, batch["mix"], sigma,
                                              fv.elbo_mix_sigma, fv.elbo_entropy_weight,
                                              prior_noise=fv.elbo_prior_noise)
      else:
        per_example = encoder_lib.supervised_losses(self.encoder, batch["mix"], batch["sources"])
      losses = {k: tf.nn.compute_average_loss(v, global_batch_size=self.global_batch)
                for k, v in per_example.items()}
    self.apply_gradients(tape, losses["total_loss"])
    if self.phase == "elbo":  # reported as a mean over replicas after the SUM reduction
      losses["sigma_prior"] = sigma / self.strategy.num_replicas_in_sync
    return losses

  def validate(self):
    """Median SI-SDR (dB) per source of the encoder means on 'valid' mixes: {name: dB}."""
    fv = self.fv
    n = fv.valid_examples
    if n <= 0:
      return {}
    if "valid" not in getattr(self.data, "splits", ("valid",)):  # e.g. a stem folder with train/ and test/ only
      logging.log_first_n(logging.WARNING, "no 'valid' split in %s: no validation SI-SDR (the test split is never "
                          "used here)", 1, self.data)
      return {}
    ds = self.data.mixtures("valid", length=fv.crop_length, batch_size=n, seed=fv.seed + 1)
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
