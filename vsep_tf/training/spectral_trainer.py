"""--job=spectral: one spectral VAE prior (priors/spectral.py) per source class, on SOLO audio frames.

The shared custom loop (`trainer.Trainer`: tf.distribute strategy, steps_per_loop steps per tf.function call,
checkpoints and resume, TensorBoard scalars). Data: the magnitude STFT frames of every class's solo train audio
(the train tracks' stems, never a mix; `nmf.solo_audio`, up to --max_solo_seconds per class), silent frames left
out (`nmf.drop_silent_frames`), shuffled per class; each step gives every prior a batch of --batch_size frames
of its class. The loss is the sum over classes of the negative ELBO per frame, averaged over the GLOBAL batch.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from vsep_tf.priors.spectral import build_spectral_prior
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
      specs = [nmf.drop_silent_frames(nmf.magnitude_spectrogram(x, prior.n_fft, prior.hop))
               for x in signals if len(x) >= prior.n_fft // 2]
      frames[name] = np.concatenate(specs, axis=1).T if specs else np.zeros([0, prior.bins], np.float32)
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
