"""The contract every source prior follows.

A prior models the density of ONE source class's mono waveform, smoothed by Gaussian noise:

    p_sigma(x) = (p * N(0, sigma^2 I))(x),      x: [batch, time] float32, linear amplitude

`sigma` is a per-example noise level, [batch] float32; sigma = 0 is the noiseless density. One network is
conditioned on sigma (no model per sigma). Priors are trained by maximum likelihood on noised data
x = s + sigma * eps with sigma drawn by `sample_sigma`, which is exactly maximum likelihood of p_sigma.

Subclasses (Keras 3 models) implement `log_prob(x, sigma, training=False) -> [batch]` (nats, summed over
time). Everything else (losses, score) is derived here, so trainers, tuners, separators and tools read the
same named outputs.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

# BASIS schedule (REFERENCES.md): 10 levels geometric from 1.0 to 0.01.
def geometric_sigmas(sigma_max: float = 1.0, sigma_min: float = 0.01, num_levels: int = 10) -> np.ndarray:
  """Noise levels sigma_max ... sigma_min, geometric, float32 [num_levels]."""
  return np.geomspace(sigma_max, sigma_min, num_levels).astype(np.float32)


def sample_sigma(batch_size, sigma_min: float, sigma_max: float, p_clean: float, seed=None) -> tf.Tensor:
  """Per-example training noise levels [batch]: 0 with probability p_clean, else log-uniform in
  [sigma_min, sigma_max]. Log-uniform covers every level of a geometric schedule equally."""
  u = tf.random.uniform([batch_size], seed=seed)
  v = tf.random.uniform([batch_size], seed=None if seed is None else seed + 1)
  log_sigma = math.log(sigma_min) + v * (math.log(sigma_max) - math.log(sigma_min))
  return tf.where(u < p_clean, tf.zeros_like(v), tf.exp(log_sigma))


class Prior(keras.Model):
  """Base class: a sigma-conditioned density over waveforms [batch, time]."""

  # False for priors known only through their score (priors/score.py): log_prob raises, score works.
  has_log_prob = True

  def log_prob(self, x, sigma, training=False):
    """log p_sigma(x) in nats, summed over time: [batch]. x: [batch, time], sigma: [batch]."""
    raise NotImplementedError

  def call(self, inputs, training=False):
    x, sigma = inputs
    return self.log_prob(x, sigma, training=training)

  def compute_losses(self, clean, sigma, training=True):
    """Noised maximum likelihood. clean: [batch, time], sigma: [batch].

    Returns a dict of per-example losses [batch] (the trainer averages over the GLOBAL batch):
      total_loss: negative log-likelihood of the noised data, nats per sample.
    """
    noisy = clean + sigma[:, None] * tf.random.normal(tf.shape(clean))
    nll = -self.log_prob(noisy, sigma, training=training) / tf.cast(tf.shape(clean)[1], tf.float32)
    return {"total_loss": nll, "nll_per_sample": nll}

  def score(self, x, sigma):
    """grad_x log p_sigma(x): [batch, time]. The Langevin separator's drift."""
    with tf.GradientTape() as tape:
      tape.watch(x)
      lp = self.log_prob(x, sigma)
    return tape.gradient(lp, x)
