r"""Separation by MAP inference under per-class spectral VAE priors (priors/spectral.py): a deep NMF.

The mixture's magnitude STFT X [frames, bins] is explained as a sum of one frame model per class,

    Y_t = sum_k exp(a_kt) softmax(f_k(z_kt)),

and the latents z and log-gains a of every class and frame are fitted jointly by the posterior mode of the
priors' own model (the frame likelihood weighted by `concentration`, as in training; Poisson/KL form, the
NMF baseline's data term):

    minimise  concentration * sum_t D_KL(X_t | Y_t) / mean_t(sum_f X_t)  +  prior_weight * sum ||z||^2 / 2

(D_KL the generalised KL divergence, summed over bins; dividing by the mean frame mass puts an average mixture
frame on the unit-mass scale the priors were trained at). `iterations` steps of Adam (written out in the
graph: the whole fit is one tf.function, batched over mixes), started from each class's encoder read on the
MIXTURE frames (init='encoder', amortised inference as the first guess) or from z = 0 (init='zero'). The gains
start at an equal share of each frame's mass; they are free (no prior: loudness is not identity).

Estimates: power-p Wiener masks M_k = V_k^p / sum_j V_j^p on the mixture STFT (oracle.ratio_masks /
masks_to_sources, as the NMF baseline and the IRM oracle), so they add up to the mixture (as a sum; a 'mean'
mix is scaled by N first, like every mask separator here).

Frames are independent: long inputs are cut into chunks (`chunk_length`) with no loss but the cross-fade.
"""
from __future__ import annotations

import os
from typing import Dict

import tensorflow as tf

from vsep_tf import signal as signal_lib
from vsep_tf.data import mixing
from vsep_tf.separators.base import Separator
from vsep_tf.separators.oracle import masks_to_sources, ratio_masks, to_sum_mix

INITS = ("encoder", "zero")
EPS = 1e-8


def spectral_search_hyperparameters(iterations: int = 300, learning_rate: float = 0.05, prior_weight: float = 1.0,
                                    mask_power: float = 2.0, init: str = "encoder") -> Dict:
  """The MAP fit's settings (flags --spectral_search.<name>; the module docstring).

  iterations / learning_rate: Adam steps on (z, a) per mix. prior_weight: weight of the latent prior
  (1: the posterior mode of the trained model). mask_power: p of the Wiener masks. init: 'encoder' or 'zero'."""
  if init not in INITS:
    raise ValueError(f"init={init!r}; choose from {INITS}")
  if iterations < 0 or learning_rate <= 0 or prior_weight < 0 or mask_power <= 0:
    raise ValueError("iterations >= 0, learning_rate > 0, prior_weight >= 0 and mask_power > 0 required, got "
                     f"{iterations}, {learning_rate}, {prior_weight}, {mask_power}")
  return dict(iterations=int(iterations), learning_rate=float(learning_rate), prior_weight=float(prior_weight),
              mask_power=float(mask_power), init=str(init))


class SpectralPriorSeparator(Separator):
  """MAP separation under {name: SpectralPrior} (module docstring)."""

  method = "spectral"

  def __init__(self, priors: dict, sample_rate: int, mix: str, iterations: int = 300, learning_rate: float = 0.05,
               prior_weight: float = 1.0, mask_power: float = 2.0, init: str = "encoder",
               chunk_length: int = 2 ** 18):
    self.priors = dict(priors)
    if not self.priors:
      raise ValueError("no priors")
    self.source_names = tuple(self.priors)
    self.sample_rate = int(sample_rate)
    self.mix = mixing.check_mix(mix)
    self.settings = spectral_search_hyperparameters(iterations, learning_rate, prior_weight, mask_power, init)
    first = next(iter(self.priors.values()))
    for name, prior in self.priors.items():
      if (prior.n_fft, prior.hop, prior.concentration) != (first.n_fft, first.hop, first.concentration):
        raise ValueError(f"prior {name!r} has a different STFT or concentration from {self.source_names[0]!r}")
    self.n_fft, self.hop, self.concentration = first.n_fft, first.hop, first.concentration
    self.chunk_length = int(chunk_length)
    self.chunk_overlap = self.chunk_length // 16
    self._fn = tf.function(self._separate, reduce_retracing=True)

  @classmethod
  def from_model_dir(cls, model_dir: str, fv=None, **kwargs):
    """The priors of a --job=spectral model directory with its --spectral_search.* settings (or overrides)."""
    from vsep_tf.training import builders  # pylint: disable=import-outside-toplevel
    from vsep_tf.training import config as config_lib  # pylint: disable=import-outside-toplevel
    fv = fv or config_lib.load_config(model_dir)
    priors = restore_spectral_priors(model_dir, fv)
    data = builders.dataset_from_config(fv)
    options = config_lib.factory_kwargs(fv, "spectral_search")
    options.update(kwargs)
    return cls(priors, data.sample_rate, data.mix, **options)

  # ------------------------------------------------------------------------------------------------ core
  def source_models(self, magnitude):
    """The fitted frame models V_k = exp(a_k) softmax(f_k(z_k)) of magnitude spectrograms [batch, frames,
    bins]: float32 [batch, N, frames, bins]."""
    s = self.settings
    x = tf.convert_to_tensor(magnitude, tf.float32)
    mass = tf.reduce_sum(x, axis=-1)                                           # [B, F]
    scale = self.concentration / (tf.reduce_mean(mass, axis=-1) + EPS)         # [B]
    priors = list(self.priors.values())
    n = len(priors)
    if s["init"] == "encoder":
      z = tf.stack([p.encode(x)[0] for p in priors], axis=1)                  # [B, N, F, d]
    else:
      z = tf.zeros(tf.concat([tf.shape(x)[:1], [n], tf.shape(x)[1:2], [priors[0].latent_dim]], 0))
    a = tf.tile(tf.math.log(mass / n + EPS)[:, None], [1, n, 1])               # [B, N, F]

    def models(z, a):
      log_shapes = tf.stack([p.log_shape(z[:, k]) for k, p in enumerate(priors)], axis=1)
      return tf.exp(a[..., None] + log_shapes)                                # [B, N, F, bins]

    def loss(z, a):
      y = tf.reduce_sum(models(z, a), axis=1) + EPS
      data = tf.reduce_sum(x * tf.math.log((x + EPS) / y) - x + y, axis=[1, 2]) * scale
      return tf.reduce_sum(data) + 0.5 * s["prior_weight"] * tf.reduce_sum(tf.square(z))

    b1, b2, lr = 0.9, 0.999, s["learning_rate"]

    def body(i, z, a, mz, vz, ma, va):
      with tf.GradientTape() as tape:
        tape.watch([z, a])
        value = loss(z, a)
      gz, ga = tape.gradient(value, [z, a])
      t = tf.cast(i + 1, tf.float32)
      correction = lr * tf.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
      mz, vz = b1 * mz + (1 - b1) * gz, b2 * vz + (1 - b2) * tf.square(gz)
      ma, va = b1 * ma + (1 - b1) * ga, b2 * va + (1 - b2) * tf.square(ga)
      z = z - correction * mz / (tf.sqrt(vz) + 1e-8)
      a = a - correction * ma / (tf.sqrt(va) + 1e-8)
      return i + 1, z, a, mz, vz, ma, va

    zeros = lambda v: tf.zeros_like(v)  # pylint: disable=unnecessary-lambda-assignment
    _, z, a, *_ = tf.while_loop(lambda i, *_: i < s["iterations"], body,
                                (tf.constant(0), z, a, zeros(z), zeros(z), zeros(a), zeros(a)))
    return models(z, a)

  def _separate(self, mix):
    length = tf.shape(mix)[-1]
    spec = signal_lib.stft(to_sum_mix(mix, self.mix, self.num_sources), self.n_fft, self.hop)  # [B, F, bins]
    masks = ratio_masks(self.source_models(tf.abs(spec)), self.settings["mask_power"])
    return masks_to_sources(masks, spec, self.n_fft, self.hop, length)

  def separate(self, mix) -> tf.Tensor:
    """mix [batch, time] -> [batch, N, time] float32."""
    mix = tf.convert_to_tensor(mix, tf.float32)
    if mix.shape.rank != 2:
      raise ValueError(f"separate takes [batch, time], got shape {mix.shape}")
    # Traced inline into a caller's graph (an export): no nested function call for the converters to freeze.
    return self._separate(mix) if tf.inside_function() else self._fn(mix)

  def describe(self) -> dict:
    return {**super().describe(), "n_fft": self.n_fft, "hop": self.hop, "concentration": self.concentration,
            **self.settings}


def restore_spectral_priors(model_dir: str, fv) -> dict:
  """{source name: SpectralPrior} of a --job=spectral model directory (its config and latest checkpoint)."""
  from vsep_tf.training import builders  # pylint: disable=import-outside-toplevel
  from vsep_tf.training import config as config_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.priors.spectral import build_spectral_prior  # pylint: disable=import-outside-toplevel
  priors = {name: build_spectral_prior(**config_lib.factory_kwargs(fv, "spectral"))
            for name in builders.dataset_source_names(fv)}
  path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
  if path is None:
    raise FileNotFoundError(f"no checkpoint in {model_dir}/checkpoints (train it: python -m vsep_tf.train "
                            "--job=spectral ...)")
  tf.train.Checkpoint(priors=priors).restore(path).expect_partial().assert_existing_objects_matched()
  return priors
