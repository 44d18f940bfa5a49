"""Mixture of logistics on LINEAR amplitude: the output distribution of the autoregressive WaveNet prior.

The next sample x_t (a real number, linear amplitude: never mu-law, which would break the linear mixing model
m = sum_k s_k that the separators rely on) given the network output at t has density

    p(x_t) = sum_k pi_k * Logistic(x_t; mu_k, s_k),      pi = softmax(logits),   s_k = exp(log_s_k)

    log Logistic(x; mu, s) = -z - log s - 2 softplus(-z),   z = (x - mu) / s

The raw network output per time step is 3K numbers: [logits (K) | means (K) | raw log-scales (K)]. The logits go
straight into a log-softmax (no sigmoid or other squashing before it: the thesis's WaveNet put a sigmoid before the
softmax, which caps every logit to (0, 1) and makes the weights nearly uniform). The means are linear (unbounded).
The log-scales get a SMOOTH floor

    log_s = log_scale_min + softplus(raw - log_scale_min)  >=  log_scale_min

so the noiseless density is bounded (p <= 1 / (4 s_min)), grad_x log p = -(1/s) tanh(z/2) is bounded by
1 / s_min, and, unlike a hard max(raw, log_scale_min), the gradient w.r.t. raw never vanishes below the floor.

Two variants (both returned as log-DENSITIES in nats per sample, so they are directly comparable):

  continuous   log p(x) above.
  discretised  log P(bin of width d around x) - log d,   P = CDF(x + d/2) - CDF(x - d/2),   d = 2 / 2^16
               (one 16-bit step on [-1, 1]). No edge bins are clamped: the bin is centred on x itself, so it
               is valid for any real x (noised data lies beyond [-1, 1]). Computed in a cancellation-free form:
                 CDF(a) - CDF(b) = sigmoid(a) sigmoid(-b) (1 - exp(-(a - b)))
                 log P = log_sigmoid(a) + log_sigmoid(-b) + log1mexp(d / s),   a, b = z +- d / (2 s)
               where d / s is computed directly (never as the difference a - b).

Default: continuous. The separators need a smooth grad_x log p_sigma(x); the continuous density gives exactly the
analytic score of a smooth density on real-valued (noised) data, which is what p_sigma is. With the default floor
(s >= exp(-7) ~ 9e-4, i.e. 30 bins of 16-bit audio) d / s <= 0.034 and the two variants agree to O((d/s)^2) ~ 1e-4
nats per sample, so discretising buys nothing but cost. It matters only with a much lower floor, where the
discretised log-density stays bounded by -log d ~ 10.4 nats per sample even when s << d.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

# Registered as 'vsep_tf.layers>Name', a namespace of its own (see vsep_tf/layers/wavenet.py).
_PACKAGE = "vsep_tf.layers"

BIN_WIDTH_16BIT = 2.0 / 2 ** 16
LOG_SCALE_MIN = -7.0
_LOG2 = math.log(2.0)


def split_params(params, num_mixtures: int, log_scale_min: float = LOG_SCALE_MIN):
  """Splits raw network output [..., 3K] into (logits, means, log_scales), each [..., K].

  log_scales = log_scale_min + softplus(raw - log_scale_min) (smooth floor: never below log_scale_min, ~raw
  well above it).
  """
  logits, means, raw_log_scales = tf.split(params, [num_mixtures] * 3, axis=-1)
  log_scales = log_scale_min + tf.nn.softplus(raw_log_scales - log_scale_min)
  return logits, means, log_scales


def log1mexp(u):
  """log(1 - exp(-u)) for u > 0, stable (Maechler 2012): log(-expm1(-u)) for u <= log 2, else log1p(-exp(-u)).

  Both branches get inputs inside their own safe range, so neither value nor gradient of the unused one is inf.
  """
  small = tf.minimum(u, _LOG2)
  large = tf.maximum(u, _LOG2)
  return tf.where(u <= _LOG2, tf.math.log(-tf.math.expm1(-small)), tf.math.log1p(-tf.exp(-large)))


def logistic_log_pdf(x, means, log_scales):
  """Continuous logistic log-density, elementwise: -z - log s - 2 softplus(-z), z = (x - mu) / s."""
  z = (x - means) * tf.exp(-log_scales)
  return -z - log_scales - 2.0 * tf.nn.softplus(-z)


def discretized_logistic_log_density(x, means, log_scales, bin_width: float = BIN_WIDTH_16BIT):
  """log[CDF(x + d/2) - CDF(x - d/2)] - log d, elementwise, valid for any real x (no edge clamping).

  With a = z + u/2, b = z - u/2, u = d / s:  log P = -softplus(-a) - softplus(b) + log1mexp(u).
  """
  inv_s = tf.exp(-log_scales)
  z = (x - means) * inv_s
  u = bin_width * inv_s
  log_mass = -tf.nn.softplus(-(z + 0.5 * u)) - tf.nn.softplus(z - 0.5 * u) + log1mexp(u)
  return log_mass - math.log(bin_width)


def mixture_log_prob(x, logits, means, log_scales, discretized: bool = False,
                     bin_width: float = BIN_WIDTH_16BIT):
  """log sum_k pi_k p_k(x) in nats per sample. x: [...]; logits, means, log_scales: [..., K] -> [...]."""
  x = x[..., None]
  if discretized:
    comp = discretized_logistic_log_density(x, means, log_scales, bin_width)
  else:
    comp = logistic_log_pdf(x, means, log_scales)
  return tf.reduce_logsumexp(tf.nn.log_softmax(logits, axis=-1) + comp, axis=-1)


def mixture_sample(logits, means, log_scales, temperature=1.0, seed=None):
  """One draw per leading index: [..., K] -> [...].

  k ~ Categorical(softmax(logits)), x = mu_k + temperature * s_k * logit(u), u ~ U(0, 1). temperature = 1 samples
  the model's own distribution exactly (continuous variant; the discretised variant is the same density up to
  O((d/s)^2)); temperature < 1 narrows each component (0: the chosen component's mean).
  `seed`: optional stateless seed [2] int32.
  """
  shape = tf.shape(means)
  num_mixtures = shape[-1]
  flat_logits = tf.reshape(logits, [-1, num_mixtures])
  if seed is None:
    k = tf.random.categorical(flat_logits, 1, dtype=tf.int32)
    u = tf.random.uniform(shape[:-1], minval=1e-6, maxval=1.0 - 1e-6)
  else:
    seeds = tf.random.experimental.stateless_split(seed, 2)
    k = tf.random.stateless_categorical(flat_logits, 1, seed=seeds[0], dtype=tf.int32)
    u = tf.random.stateless_uniform(shape[:-1], seed=seeds[1], minval=1e-6, maxval=1.0 - 1e-6)
  one_hot = tf.reshape(tf.one_hot(k[:, 0], num_mixtures, dtype=means.dtype), shape)
  mu = tf.reduce_sum(one_hot * means, axis=-1)
  log_s = tf.reduce_sum(one_hot * log_scales, axis=-1)
  return mu + temperature * tf.exp(log_s) * (tf.math.log(u) - tf.math.log1p(-u))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LogisticMixture(keras.layers.Layer):
  """A K-component logistic mixture over linear amplitude, read from raw parameters [..., 3K] (no weights).

  log_prob(params [batch, time, 3K], x [batch, time]) -> [batch, time] nats per sample (a log-density).
  sample(params [batch, 3K]) -> [batch].
  """

  def __init__(self, num_mixtures: int = 10, log_scale_min: float = LOG_SCALE_MIN, discretized: bool = False,
               bin_width: float = BIN_WIDTH_16BIT, **kwargs):
    super().__init__(**kwargs)
    self.num_mixtures = int(num_mixtures)
    self.log_scale_min = float(log_scale_min)
    self.discretized = bool(discretized)
    self.bin_width = float(bin_width)

  @property
  def params_size(self) -> int:
    return 3 * self.num_mixtures

  def split(self, params):
    return split_params(params, self.num_mixtures, self.log_scale_min)

  def log_prob(self, params, x):
    logits, means, log_scales = self.split(params)
    return mixture_log_prob(x, logits, means, log_scales, self.discretized, self.bin_width)

  def sample(self, params, temperature=1.0, seed=None):
    logits, means, log_scales = self.split(params)
    return mixture_sample(logits, means, log_scales, temperature, seed)

  def call(self, params, x):
    return self.log_prob(params, x)

  def get_config(self):
    config = super().get_config()
    config.update(num_mixtures=self.num_mixtures, log_scale_min=self.log_scale_min,
                  discretized=self.discretized, bin_width=self.bin_width)
    return config
