"""--job=spectral: one spectral VAE prior (priors/spectral.py) per source class, on SOLO audio frames.

The shared custom loop (`trainer.Trainer`: tf.distribute strategy, steps_per_loop steps per tf.function call,
checkpoints and resume, TensorBoard scalars). Data: the magnitude STFT frames of every class's solo train audio
(the train tracks' stems, never a mix; `data.solo.solo_audio`, up to --max_solo_seconds per class), silent frames left
out (`data.solo.solo_frames`), shuffled per class; each step gives every prior a batch of --batch_size frames
of its class. The loss is the sum over classes of the negative ELBO per frame, averaged over the GLOBAL batch.
"""
from __future__ import annotations

import tensorflow as tf
from absl import logging

from vsep_tf import model_dir as model_dir_lib
from vsep_tf import registry
from vsep_tf import signal as signal_lib
from vsep_tf.data.solo import solo_audio, solo_frames
from vsep_tf.priors.spectral import gaussian_kl
from vsep_tf.separators import spectral
from vsep_tf.separators.masks import to_sum_mix
from vsep_tf.training.trainer import Trainer


class SpectralPriorTrainer(Trainer):
  """Trains {source_name: SpectralPrior} (--spectral_prior=vae: negative ELBO per frame) or
  {source_name: SpectralFlowPrior} (--spectral_prior=flow: exact NLL per frame of the noised features, after a
  data-dependent init of the flows' normalisations on the first batch) on solo frames. Build it, then call
  `train()`."""

  def build_models(self):
    self.priors = registry.build_spectral_priors(self.cfg, self.source_names)
    self.variables = [v for p in self.priors.values() for v in p.trainable_variables]
    return {"priors": self.priors}

  def on_first_batch(self, batch):
    """Data-dependent init of a fresh run's flow priors (ActNorm / FeatureNorm); the VAE needs none."""
    for name, prior in self.priors.items():
      if hasattr(prior, "initialize"):
        prior.initialize(batch[name])

  def solo_frames(self):
    """{class: float32 [frames, bins]}: the non-silent magnitude frames of the class's solo train audio."""
    prior = next(iter(self.priors.values()))
    solo = solo_audio(self.data, "train", self.cfg.max_solo_seconds)
    frames = {}
    for name, signals in solo.items():
      frames[name] = solo_frames(signals, prior.n_fft, prior.hop).T
      if frames[name].shape[0] < self.global_batch:
        raise ValueError(f"class {name!r}: only {frames[name].shape[0]} non-silent STFT frames of solo train "
                         f"audio, fewer than --batch_size={self.global_batch}")
      logging.info("spectral prior %s: %d frames", name, frames[name].shape[0])
    return frames

  def make_dataset(self):
    frames = self.solo_frames()
    self.num_frames = {name: int(f.shape[0]) for name, f in frames.items()}
    per_class = {
        name: tf.data.Dataset.from_tensor_slices(f).shuffle(min(len(f), 100000), seed=self.cfg.seed + k,
                                                            reshuffle_each_iteration=True).repeat()
        for k, (name, f) in enumerate(frames.items())}
    return tf.data.Dataset.zip(per_class).batch(self.global_batch, drop_remainder=True).prefetch(2)

  @property
  def loss_keys(self):
    return (*self.source_names, "total_loss")

  @property
  def samples_per_step(self):
    """STFT frames per step (the progress bar's 'ksamples/s' counts frames for this job)."""
    return self.global_batch * len(self.source_names)

  def replica_step(self, batch):
    with tf.GradientTape() as tape:
      losses = {}
      for name in self.source_names:
        per_frame = self.priors[name].compute_losses(batch[name], training=True)["total_loss"]
        losses[name] = tf.nn.compute_average_loss(per_frame, global_batch_size=self.global_batch)
      total = tf.add_n(list(losses.values()))
    self.apply_gradients(tape, total)
    losses["total_loss"] = total
    return losses


class SpectralEncoderTrainer(Trainer):
  """--job=spectral_encoder: the amortised encoder (separators/spectral.py) on training MIXES alone, by the
  ELBO of the frozen spectral priors of --prior_dir. Each step: a batch of --crop_length mixes (the sources are
  dropped by the data pipeline), their magnitude STFT, q(z | X) and mass shares from the encoder, z sampled,
  loss = -ELBO per mix averaged over the GLOBAL batch (data term + KL(q || N(0, I)), both per frame summed)."""

  def build_models(self):
    cfg = self.cfg
    if not cfg.prior_dir:
      raise ValueError("--job=spectral_encoder needs --prior_dir (a --job=spectral model directory)")
    self.priors = model_dir_lib.restore_spectral_priors(cfg.prior_dir)
    if tuple(self.priors) != self.source_names:
      raise ValueError(f"the priors are for {tuple(self.priors)}, the data has {self.source_names}")
    for prior in self.priors.values():
      prior.trainable = False
    self.encoder = spectral.SpectralEncoder.for_priors(self.priors, **registry.factory_kwargs(cfg, "spectral_encoder"))
    self.variables = list(self.encoder.trainable_variables)
    first = next(iter(self.priors.values()))
    self.n_fft, self.hop, self.concentration = first.n_fft, first.hop, first.concentration
    self.objective = spectral.mixture_objective
    return {"encoder": self.encoder}

  def make_dataset(self):
    cfg = self.cfg
    ds = self.data.mixtures("train", length=cfg.crop_length, batch_size=self.global_batch, seed=cfg.seed)
    return ds.map(lambda b: {"mix": b["mix"]})  # unsupervised: the ground truth never reaches the step

  def manifest_components(self):
    return {model_dir_lib.PRIORS_SUBDIR: self.cfg.prior_dir}

  @property
  def loss_keys(self):
    return ("total_loss", "data", "kl")

  def replica_step(self, batch):
    mix = to_sum_mix(batch["mix"], self.data.mix, len(self.source_names))
    x = tf.abs(signal_lib.stft(mix, self.n_fft, self.hop))
    with tf.GradientTape() as tape:
      mu, logvar, log_share = self.encoder(x, training=True)
      a = log_share + tf.math.log(tf.reduce_sum(x, axis=-1) + 1e-8)[:, None]
      if self.cfg.encoder_objective == "map":
        # The MAP fit's objective at the encoder's means: the one pass lands where the fit would go.
        _, data = self.objective(list(self.priors.values()), x, mu, a, self.concentration)
        kl = self.cfg["spectral_search.prior_weight"] * spectral.latent_prior_energy(
            mu, self.cfg["spectral_search.temporal_rho"])
      else:
        z = mu + tf.exp(0.5 * logvar) * tf.random.normal(tf.shape(mu))
        _, data = self.objective(list(self.priors.values()), x, z, a, self.concentration)
        kl = tf.reduce_sum(gaussian_kl(mu, logvar), axis=[1, 2])
      per_mix = {"data": data, "kl": kl, "total_loss": data + kl}
      losses = {k: tf.nn.compute_average_loss(v, global_batch_size=self.global_batch) for k, v in per_mix.items()}
    self.apply_gradients(tape, losses["total_loss"])
    return losses
