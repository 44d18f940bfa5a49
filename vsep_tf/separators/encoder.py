"""The amortised separator: an encoder q_phi(s_k | m) that separates in one forward pass.

    mean, log_std = SeparationEncoder(m)          m [batch, T] -> [batch, N, T] each
    q_phi(s | m)  = prod_k N(s_k; mean_k, diag(exp(log_std_k))^2)

The encoder is a non-causal WaveNet (vsep_tf.layers.wavenet.WaveNet, 'same' padding) over the mix with 2N
output channels. The means go through a mixture-consistency projection, f(mean) = m exactly, so the mixing
likelihood only sees the posterior noise and the network's job is to split the mix, not to reproduce it.

Two ways to train the same network (vsep_tf.training.separator_trainer):
  variational (unsupervised): maximise the ELBO on mixes alone, priors frozen,
      ELBO = E_q[log N(m; f(s), sigma_m^2)] + sum_k E_q[log p_sigma_p,k(s_k)] + H[q]
    with reparameterised samples s = mean + exp(log_std) * eps. The priors are read at a noise level sigma_p
    annealed from `sigma_start` to `sigma_end` (smooth densities first, as in annealed Langevin dynamics).
  supervised (the reference the unsupervised one chases): maximise SI-SDR of the means against the true
    sources of (mix, sources) pairs.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from vsep_tf import signal as signal_lib
from vsep_tf.data import mixing
from vsep_tf.layers.wavenet import WaveNet
from vsep_tf.separators.base import Separator, consistency_projection


@keras.saving.register_keras_serializable(package="vsep_tf")
class SeparationEncoder(keras.Model):
  """q_phi(s | m): mix [batch, T] -> (mean [batch, N, T], log_std [batch, N, T]). See the module docstring."""

  def __init__(self, num_sources: int, mix: str, num_blocks: int = 2, num_layers: int = 10,
               residual_channels: int = 32, skip_channels: int = 64, kernel_size: int = 3,
               init_log_std: float = -3.0, min_log_std: float = -9.0, frame_size: int = 1, **kwargs):
    super().__init__(**kwargs)
    self.num_sources = int(num_sources)
    self.mix = mixing.check_mix(mix)
    self.num_blocks, self.num_layers = int(num_blocks), int(num_layers)
    self.residual_channels, self.skip_channels = int(residual_channels), int(skip_channels)
    self.kernel_size = int(kernel_size)
    self.init_log_std, self.min_log_std = float(init_log_std), float(min_log_std)
    self.frame_size = int(frame_size)
    if self.frame_size < 1:
      raise ValueError(f"frame_size must be >= 1, got {frame_size}")
    self.wavenet = WaveNet(self.num_blocks, self.num_layers, self.residual_channels, self.skip_channels,
                           out_channels=2 * self.num_sources * self.frame_size, kernel_size=self.kernel_size,
                           causal=False, name="wavenet")
    self.wavenet.build((None, None, self.frame_size))
    self.built = True

  @property
  def receptive_field(self) -> int:
    return self.wavenet.receptive_field * self.frame_size

  def call(self, mix, training=False):
    del training
    mix = tf.convert_to_tensor(mix, tf.float32)
    if self.frame_size == 1:
      h = self.wavenet(mix[..., None])  # [batch, T, 2N]
    else:
      # Space-to-depth: frames of `frame_size` samples are the WaveNet's time steps (its FLOPs per second of
      # audio and its memory shrink by the frame size, its receptive field in samples grows by it); every
      # frame's output channels are its samples' 2N values (depth-to-space back).
      batch, length = tf.shape(mix)[0], tf.shape(mix)[1]
      padded = tf.pad(mix, [[0, 0], [0, (-length) % self.frame_size]])
      h = self.wavenet(tf.reshape(padded, [batch, -1, self.frame_size]))
      h = tf.reshape(h, [batch, -1, 2 * self.num_sources])[:, :length]
    h = tf.transpose(h, [0, 2, 1])  # [batch, 2N, T]
    mean = consistency_projection(h[:, :self.num_sources], mix, self.mix)
    log_std = tf.maximum(self.init_log_std + h[:, self.num_sources:], self.min_log_std)
    return mean, log_std

  def get_config(self):
    config = super().get_config()
    config.update(num_sources=self.num_sources, mix=self.mix, num_blocks=self.num_blocks,
                  num_layers=self.num_layers, residual_channels=self.residual_channels,
                  skip_channels=self.skip_channels, kernel_size=self.kernel_size,
                  init_log_std=self.init_log_std, min_log_std=self.min_log_std, frame_size=self.frame_size)
    return config


def build_encoder(num_sources, mix, num_blocks: int = 2, num_layers: int = 10, residual_channels: int = 32,
                  skip_channels: int = 64, kernel_size: int = 3, init_log_std: float = -3.0,
                  frame_size: int = 1) -> SeparationEncoder:
  """Encoder factory ('--encoder.<arg>' flags; num_sources and mix come from the dataset).

  Defaults: 2 blocks x 10 layers of kernel 3, receptive field 4093 samples (0.28 s at 14.7 kHz).
  frame_size > 1 runs the WaveNet on non-overlapping frames of that many samples (space-to-depth): FLOPs per
  second of audio / frame_size (plus the wider input and output 1x1 layers), receptive field x frame_size.
  """
  return SeparationEncoder(num_sources, mix, num_blocks=num_blocks, num_layers=num_layers,
                           residual_channels=residual_channels, skip_channels=skip_channels,
                           kernel_size=kernel_size, init_log_std=init_log_std, frame_size=frame_size)


# ------------------------------------------------------------------------------------------------- losses
def annealed_sigma(step, total_steps, sigma_start: float, sigma_end: float):
  """Geometric annealing sigma_start -> sigma_end over `total_steps`, then held at sigma_end."""
  frac = tf.minimum(tf.cast(step, tf.float32) / float(max(total_steps, 1)), 1.0)
  return tf.exp(math.log(sigma_start) + frac * (math.log(sigma_end) - math.log(sigma_start)))


def elbo_losses(encoder, priors, mix, sigma_prior, mix_sigma: float, entropy_weight: float = 1.0, seed=None,
                prior_noise: bool = False):
  """Per-example negative ELBO terms in nats per sample of the mix, each [batch].

    prior_nll:   -sum_k log p_sigma_prior,k(s_k) / T (score priors: a surrogate with the same gradient)
    mix_nll:     -log N(m; f(s), mix_sigma^2) / T (up to the constant)
    neg_entropy: -sum_k H[q_k] / T (up to the constant), times entropy_weight
    total_loss:  their sum = -ELBO / T

  prior_noise (score priors only): the prior term's gradient is the denoiser's pull at a NOISED point,
  (D(s + sigma e, sigma) - s) / sigma^2 with fresh e (score distillation, DreamFusion's SDS): the
  denoiser is read where it was trained (x = s + sigma e), and in expectation over sigma this is the gradient of
  the diffusion ELBO of -log p(s) without back-propagating through D (ScorePrior.denoising_energy). Without it,
  the score of p_sigma is read at the clean sample s, where no training input of that noise level lies.
  """
  mean, log_std = encoder(mix, training=True)
  eps = tf.random.normal(tf.shape(mean), seed=seed)
  s = mean + tf.exp(log_std) * eps
  length = tf.cast(tf.shape(mix)[-1], tf.float32)
  batch = tf.shape(mix)[0]
  sig = tf.broadcast_to(tf.cast(sigma_prior, tf.float32), [batch])
  prior_nll = -tf.add_n([_prior_term(p, s[:, k], sig, prior_noise) for k, p in enumerate(priors)]) / length
  resid = mix - mixing.mix_sources(s, encoder.mix)
  mix_nll = 0.5 * tf.reduce_sum(tf.square(resid), axis=-1) / (mix_sigma ** 2) / length
  neg_entropy = -entropy_weight * tf.reduce_sum(log_std, axis=[1, 2]) / length
  return {"total_loss": prior_nll + mix_nll + neg_entropy, "prior_nll": prior_nll, "mix_nll": mix_nll,
          "neg_entropy": neg_entropy}


def _prior_term(prior, s, sigma, noised: bool = False):
  """log p_sigma(s) [batch] for likelihood priors. For score priors (no density) the surrogate
  sum_t stop_gradient(score(s)) * s, whose gradient w.r.t. the encoder is exactly that of E_q[log p_sigma(s)]
  (reparameterised: d/dphi log p(s(phi)) = score(s) . ds/dphi); its VALUE is not a log-likelihood.
  noised: the score-distillation pull (D(s + sigma e, sigma) - s) / sigma^2 instead (elbo_losses)."""
  if prior.has_log_prob:
    return prior.log_prob(s, sigma)
  if noised:
    pull = (prior.denoise(s + sigma[:, None] * tf.random.normal(tf.shape(s)), sigma) - s) / tf.square(sigma)[:, None]
    return tf.reduce_sum(tf.stop_gradient(pull) * s, axis=-1)
  return tf.reduce_sum(tf.stop_gradient(prior.score(s, sigma)) * s, axis=-1)


def supervised_losses(encoder, mix, sources):
  """Per-example negative SI-SDR (dB, mean over sources) of the encoder means: {'total_loss', 'si_sdr'}."""
  mean, _ = encoder(mix, training=True)
  sdr = tf.reduce_mean(signal_lib.si_sdr(sources, mean), axis=-1)
  return {"total_loss": -sdr, "si_sdr": sdr}


# ----------------------------------------------------------------------------------------------- separator
class EncoderSeparator(Separator):
  """Separation by one forward pass: the encoder means."""

  def __init__(self, encoder: SeparationEncoder, source_names, sample_rate: int, method: str = "variational",
               chunk_length: int = 2 ** 16):
    self.encoder = encoder
    self.source_names = tuple(source_names)
    self.sample_rate = int(sample_rate)
    self.mix = encoder.mix
    self.method = method
    self.chunk_length = int(chunk_length)
    # Cross-fade over at least the receptive field so that chunk edges (zero-padded context) fade out.
    self.chunk_overlap = min(self.chunk_length // 2, max(2 ** 12, encoder.receptive_field))
    self._fn = tf.function(lambda m: self.encoder(m)[0], reduce_retracing=True)

  def separate(self, mix) -> tf.Tensor:
    mix = tf.convert_to_tensor(mix, tf.float32)
    if mix.shape.rank != 2:
      raise ValueError(f"mix must be [batch, time], got shape {mix.shape}")
    return self._fn(mix)
