"""--job=spectral: one spectral VAE prior (priors/spectral.py) per source class, on SOLO audio frames.

The shared custom loop (`trainer.Trainer`: tf.distribute strategy, steps_per_loop steps per tf.function call,
checkpoints and resume, TensorBoard scalars). Data: the magnitude STFT frames of every class's solo train audio
(the train tracks' stems, never a mix; `nmf.solo_audio`, up to --max_solo_seconds per class), silent frames left
out (`nmf.solo_frames`), shuffled per class; each step gives every prior a batch of --batch_size frames
of its class. The loss is the sum over classes of the negative ELBO per frame, averaged over the GLOBAL batch.
"""
from __future__ import annotations

import tensorflow as tf
from absl import logging

from vsep_tf.priors.spectral import build_spectral_prior, gaussian_kl
from vsep_tf.separators import nmf
from vsep_tf.training import config as config_lib
from vsep_tf.training.trainer import Trainer


class SpectralPriorTrainer(Trainer):
  """Trains {source_name: SpectralPrior} on solo frames. Build it, then call `train()`."""

  def build_models(self):
    kwargs = config_lib.factory_kwargs(self.fv, "spectral")
    self.priors = {name: build_spectral_prior(**kwargs) for name in self.source_names}
    self.variables = [v for p in self.priors.values() for v in p.trainable_variables]
    return {"priors": self.priors}

  def solo_frames(self):
    """{class: float32 [frames, bins]}: the non-silent magnitude frames of the class's solo train audio."""
    prior = next(iter(self.priors.values()))
    solo = nmf.solo_audio(self.data, "train", self.fv.max_solo_seconds)
    frames = {}
    for name, signals in solo.items():
      frames[name] = nmf.solo_frames(signals, prior.n_fft, prior.hop).T
      if frames[name].shape[0] < self.global_batch:
        raise ValueError(f"class {name!r}: only {frames[name].shape[0]} non-silent STFT frames of solo train "
                         f"audio, fewer than --batch_size={self.global_batch}")
      logging.info("spectral prior %s: %d frames", name, frames[name].shape[0])
    return frames

  def make_dataset(self):
    frames = self.solo_frames()
    self.num_frames = {name: int(f.shape[0]) for name, f in frames.items()}
    per_class = {
        name: tf.data.Dataset.from_tensor_slices(f).shuffle(min(len(f), 100000), seed=self.fv.seed + k,
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
    from vsep_tf.separators import spectral  # pylint: disable=import-outside-toplevel
    fv = self.fv
    if not fv.prior_dir:
      raise ValueError("--job=spectral_encoder needs --prior_dir (a --job=spectral model directory)")
    prior_fv = config_lib.load_config(fv.prior_dir)
    if prior_fv.job != "spectral":
      raise ValueError(f"--prior_dir={fv.prior_dir} is a --job={prior_fv.job} directory, not --job=spectral")
    self.priors = spectral.restore_spectral_priors(fv.prior_dir, prior_fv)
    if tuple(self.priors) != self.source_names:
      raise ValueError(f"the priors are for {tuple(self.priors)}, the data has {self.source_names}")
    for prior in self.priors.values():
      prior.trainable = False
    self.encoder = spectral.build_encoder_for(self.priors, fv)
    self.variables = list(self.encoder.trainable_variables)
    first = next(iter(self.priors.values()))
    self.n_fft, self.hop, self.concentration = first.n_fft, first.hop, first.concentration
    self.objective = spectral.mixture_objective
    return {"encoder": self.encoder}

  def make_dataset(self):
    fv = self.fv
    ds = self.data.mixtures("train", length=fv.crop_length, batch_size=self.global_batch, seed=fv.seed)
    return ds.map(lambda b: {"mix": b["mix"]})  # unsupervised: the ground truth never reaches the step

  @property
  def loss_keys(self):
    return ("total_loss", "data", "kl")

  def replica_step(self, batch):
    from vsep_tf import signal as signal_lib  # pylint: disable=import-outside-toplevel
    from vsep_tf.separators.oracle import to_sum_mix  # pylint: disable=import-outside-toplevel
    mix = to_sum_mix(batch["mix"], self.data.mix, len(self.source_names))
    x = tf.abs(signal_lib.stft(mix, self.n_fft, self.hop))
    with tf.GradientTape() as tape:
      mu, logvar, log_share = self.encoder(x, training=True)
      z = mu + tf.exp(0.5 * logvar) * tf.random.normal(tf.shape(mu))
      a = log_share + tf.math.log(tf.reduce_sum(x, axis=-1) + 1e-8)[:, None]
      _, data = self.objective(list(self.priors.values()), x, z, a, self.concentration)
      kl = tf.reduce_sum(gaussian_kl(mu, logvar), axis=[1, 2])
      per_mix = {"data": data, "kl": kl, "total_loss": data + kl}
      losses = {k: tf.nn.compute_average_loss(v, global_batch_size=self.global_batch) for k, v in per_mix.items()}
    self.apply_gradients(tape, losses["total_loss"])
    return losses
