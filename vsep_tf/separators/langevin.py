"""Noise-annealed Langevin dynamics under sigma-conditioned priors (BASIS, Jayaram & Thickstun 2020).

For noise levels sigma_1 > ... > sigma_L (geometric, 1.0 -> 0.01) and `steps_per_level` steps at each:

    eta    = step_scale * (sigma / sigma_L)^2                      (BASIS: step_scale = 3e-5)
    x_k   <- x_k + eta * d/dx_k log p_sigma,k(x_k)
                 - eta * lambda * d/dx_k ||f(x) - m||^2 + sqrt(2 eta) * eps,
    lambda = mix_weight / (sigma^2 * c),   c = sum_k (df/dx_k)^2   (sum: N, mean: 1/N)

The factor c makes the mixing term's pull on the residual r = f(x) - m the same for any f and N:
r <- (1 - 2 eta lambda c) r = (1 - 2 mix_weight step_scale / sigma_L^2) r, 0.4 r for the BASIS numbers. BASIS
wrote lambda = 1/sigma^2 for a mean of 2 sources (c = 1/2); literally applied to a SUM of 4 sources
(c = 4) the same step sizes make r grow by -2.4 per step and the chain diverges. p(m | x) is then
N(m; f(x), sigma^2 c / (2 mix_weight)).

x: [batch, N, time], one source per prior, f the mixing function (sum or mean). All levels and steps run in
one tf.function (a tf.while_loop; XLA optional), so the loop and its gradients also live in an exported graph.

Guards against the degenerate solutions the thesis met (a silent source scored as likely, the whole mix
given to one source):
  * The sources start at the mixture consistency point f(x) = m with independent noise of the first level
    (x_k = m-share + sigma_1 eps), never at silence, and the priors are only queried at sigma > 0, where
    p_sigma is smooth (the noiseless density is what rewarded silence).
  * The last step is a mixture-consistency projection: the estimates always add up to the mix exactly.
  * `final_denoise`: one step x + sigma_L^2 * score (Tweedie) removes the last level's injected noise.
"""
from __future__ import annotations

import tensorflow as tf

from vsep_tf.data import mixing
from vsep_tf.priors.base import geometric_sigmas
from vsep_tf.separators.base import Separator, consistency_projection


class LangevinSeparator(Separator):
  """BASIS separation under {name: Prior}. See the module docstring."""

  method = "langevin"

  def __init__(self, priors: dict, sample_rate: int, mix: str, sigma_max: float = 1.0, sigma_min: float = 0.01,
               num_levels: int = 10, steps_per_level: int = 100, step_scale: float = 3e-5,
               mix_weight: float = 1.0, final_denoise: bool = True, seed: int = 0, jit_compile: bool = True,
               chunk_length: int = 2 ** 15):
    self.priors = dict(priors)
    self.source_names = tuple(self.priors)
    self.sample_rate = int(sample_rate)
    self.mix = mixing.check_mix(mix)
    self.sigmas = geometric_sigmas(sigma_max, sigma_min, num_levels)
    self.steps_per_level = int(steps_per_level)
    self.step_scale = float(step_scale)
    self.mix_weight = float(mix_weight)
    self.final_denoise = bool(final_denoise)
    self.seed = int(seed)
    self.chunk_length = int(chunk_length)
    self.chunk_overlap = self.chunk_length // 8
    self.use_xla(jit_compile)

  def use_xla(self, jit_compile: bool):
    """Compile the Langevin loop with XLA (the default) or not (exports: the converters need plain ops)."""
    self._fn = tf.function(self._run, jit_compile=bool(jit_compile), reduce_retracing=True)

  # ------------------------------------------------------------------------------------------------ core
  def scores(self, x, sigma):
    """grad log p_sigma,k(x_k) for every source: x [batch, N, time], sigma scalar -> [batch, N, time].
    Likelihood priors differentiate their log-density; score priors (priors/score.py) denoise once."""
    sig = tf.fill(tf.shape(x)[:1], sigma)
    return tf.stack([prior.score(x[:, k], sig) for k, prior in enumerate(self.priors.values())], axis=1)

  def _run(self, mix, seed):
    """mix [batch, time], seed int32 [2] -> sources [batch, N, time]."""
    mix = tf.convert_to_tensor(mix, tf.float32)
    n = len(self.priors)
    sigmas = tf.constant(self.sigmas)
    start = mixing.equal_split(mix, self.mix, n)
    shape = tf.shape(start)
    x = start + sigmas[0] * tf.random.stateless_normal(shape, seed)
    total_steps = len(self.sigmas) * self.steps_per_level
    sigma_min = float(self.sigmas[-1])
    c = float(n) if self.mix == "sum" else 1.0 / n  # sum_k (df/dx_k)^2

    def body(i, x):
      sigma = sigmas[i // self.steps_per_level]
      eta = self.step_scale * (sigma / sigma_min) ** 2
      lam = self.mix_weight / (sigma ** 2 * c)
      with tf.GradientTape() as tape:
        tape.watch(x)
        misfit = tf.reduce_sum(tf.square(mixing.mix_sources(x, self.mix) - mix))
      grad_mix = tape.gradient(misfit, x)
      noise = tf.random.stateless_normal(shape, tf.random.experimental.stateless_fold_in(seed, i + 1))
      x = x + eta * self.scores(x, sigma) - eta * lam * grad_mix + tf.sqrt(2.0 * eta) * noise
      return i + 1, x

    _, x = tf.while_loop(lambda i, _: i < total_steps, body, (tf.constant(0), x))
    if self.final_denoise:
      x = x + sigma_min ** 2 * self.scores(x, tf.constant(sigma_min))
    return consistency_projection(x, mix, self.mix)

  def separate(self, mix) -> tf.Tensor:
    mix = tf.convert_to_tensor(mix, tf.float32)
    if mix.shape.rank != 2:
      raise ValueError(f"mix must be [batch, time], got shape {mix.shape}")
    return self._fn(mix, tf.constant([self.seed, 0], tf.int32))

  def describe(self) -> dict:
    info = super().describe()
    info.update(sigmas=[float(s) for s in self.sigmas], steps_per_level=self.steps_per_level,
                step_scale=self.step_scale, mix_weight=self.mix_weight)
    return info

