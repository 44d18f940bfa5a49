"""Score-based WaveNet prior: p_sigma(x) known through its score (a trained denoiser), not its density.

A non-causal, sigma-conditioned WaveNet F (the same Keras layers as the autoregressive prior, 'same' padding)
is a denoiser with the EDM preconditioning (Karras et al., NeurIPS 2022; sd = `sigma_data`):

    D(x, sigma) = c_skip x + c_out F(c_in x, e(sigma)),
    c_in = 1 / sqrt(sigma^2 + sd^2),  c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2)

trained by denoising score matching: x = s + sigma eps, loss = mean_t (F - (s - c_skip x) / c_out)^2, i.e.
||D - s||^2 with EDM's weighting, which gives every noise level the same loss scale. By Tweedie's formula the
optimal denoiser is E[s | x], and

    grad_x log p_sigma(x) = (E[s | x] - x) / sigma^2  ~=  (D(x, sigma) - x) / sigma^2,

so the Langevin separator and the ELBO read the score from ONE forward pass, with no back-propagation through a
likelihood (the autoregressive prior needs a backward pass through all its steps). This is the prior family of
BASIS's successors (independent diffusion priors, MSDM/ISDM; REFERENCES.md). There is no tractable log-density:
`log_prob` raises; `has_log_prob` tells callers (the ELBO uses the score, see separators/encoder.py).

`sample` draws from the prior on a geometric noise ladder from N(0, sigma_start^2) down to sigma_min, then D:

    x <- D + sqrt(1 - churn) (sigma_next / sigma) (x - D) + sqrt(churn) sigma_next z,    z ~ N(0, I)

churn = 0 (the default) is the probability-flow ODE with Euler steps (DDIM); churn = 1 denoises and draws fresh
noise of the next level at every step (ancestral sampling). The fresh noise corrects the denoiser's errors
instead of carrying them along the ODE: on the toy priors (64 steps) the share of spectral energy at the
strongest peak of a sample (median of 16 x 8,192 samples) rises from 0.045 / 0.033 / 0.087 / 0.061 (DDIM) to
0.118 / 0.127 / 0.209 / 0.365 (real items:
1.00 / 0.81 / 0.61 / 0.99; sine / square / sawtooth / triangle): samples with a steadier pitch. Yet a sleep-phase
encoder trained on ancestral samples separated real mixes WORSE than one trained on DDIM samples (README,
diagnosis), so DDIM stays the default.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from vsep_tf.layers.wavenet import NoiseLevelEmbedding, WaveNet
from vsep_tf.priors.base import Prior

# Training noise levels below this are raised to it (c_out -> 0 at sigma = 0: nothing left to learn).
SIGMA_FLOOR = 1e-3


@keras.saving.register_keras_serializable(package="vsep_tf")
class ScorePrior(Prior):
  """Sigma-conditioned non-causal WaveNet denoiser; score by Tweedie. See the module docstring."""

  has_log_prob = False

  def __init__(self, num_blocks: int = 1, num_layers: int = 11, residual_channels: int = 16,
               skip_channels: int = 32, kernel_size: int = 3, gate_channels: int = 0, head_channels: int = 0,
               cond_channels: int = 32, sigma_data: float = 0.5, sample_sigma_max: float = 3.0,
               sample_steps: int = 64, sample_churn: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.num_blocks = int(num_blocks)
    self.num_layers = int(num_layers)
    self.residual_channels = int(residual_channels)
    self.skip_channels = int(skip_channels)
    self.kernel_size = int(kernel_size)
    self.gate_channels = int(gate_channels)
    self.head_channels = int(head_channels)
    self.cond_channels = int(cond_channels)
    self.sigma_data = float(sigma_data)
    self.sample_sigma_max = float(sample_sigma_max)
    self.sample_steps = int(sample_steps)
    self.sample_churn = float(sample_churn)
    if not 0.0 <= self.sample_churn <= 1.0:
      raise ValueError(f"sample_churn must be in [0, 1], got {sample_churn}")
    if self.sigma_data <= 0:
      raise ValueError(f"sigma_data must be > 0, got {sigma_data}")

    self.embedding = NoiseLevelEmbedding(self.cond_channels, name="sigma_embedding")
    self.wavenet = WaveNet(self.num_blocks, self.num_layers, self.residual_channels, self.skip_channels,
                           out_channels=1, kernel_size=self.kernel_size, causal=False,
                           gate_channels=self.gate_channels, head_channels=self.head_channels,
                           conditional=True, zero_init_output=True, name="wavenet")
    self.embedding.build((None,))
    self.wavenet.build((None, None, 1), (None, self.cond_channels))
    self.built = True
    object.__setattr__(self, "_sample_fn", None)

  @property
  def receptive_field(self) -> int:
    """Samples one output depends on, centred: x_{t-(R-1)/2} .. x_{t+(R-1)/2}."""
    return self.wavenet.receptive_field

  def _coefficients(self, sigma):
    sd2 = self.sigma_data ** 2
    var = tf.square(sigma) + sd2
    return tf.math.rsqrt(var), sd2 / var, sigma * self.sigma_data * tf.math.rsqrt(var)  # c_in, c_skip, c_out

  def _raw(self, x, sigma):
    """(F(c_in x, sigma) [batch, time], c_skip [batch, 1], c_out [batch, 1])."""
    x = tf.convert_to_tensor(x, tf.float32)
    sigma = tf.broadcast_to(tf.convert_to_tensor(sigma, tf.float32), tf.shape(x)[:1])
    c_in, c_skip, c_out = (c[:, None] for c in self._coefficients(sigma))
    f = self.wavenet((c_in * x)[..., None], self.embedding(sigma))[..., 0]
    return f, c_skip, c_out

  def denoise(self, x, sigma, training=False):
    """D(x, sigma) ~= E[s | x = s + sigma eps]: [batch, time]. x [batch, time], sigma [batch] or scalar (> 0)."""
    del training
    f, c_skip, c_out = self._raw(x, sigma)
    return c_skip * x + c_out * f

  def score(self, x, sigma):
    """grad_x log p_sigma(x) ~= (D(x, sigma) - x) / sigma^2: [batch, time] (one forward pass)."""
    x = tf.convert_to_tensor(x, tf.float32)
    sigma = tf.broadcast_to(tf.convert_to_tensor(sigma, tf.float32), tf.shape(x)[:1])
    return (self.denoise(x, sigma) - x) / tf.square(sigma)[:, None]

  def denoising_energy(self, x, sigmas, seed):
    """A diffusion-ELBO estimate of -log p(x) up to a constant, per example: [batch].

    For the variance-exploding diffusion x_sigma = x + sigma e the negative ELBO is
    (1/2) int ||D(x_sigma, sigma) - x||^2 / sigma^3 dsigma + const; on a geometric grid `sigmas` (ascending or
    descending, >= 2 levels) that is sum_i ||D - x||^2 / sigma_i^2 * dlog(sigma) / 2, with one noise draw e_i
    [time] per level (stateless, from the int `seed`), the SAME for every row of x: candidates compared in one
    batch or across calls see the same noise. Lower = more likely. It only ranks inputs of one length against
    each other (the constant depends on the grid and the length)."""
    x = tf.convert_to_tensor(x, tf.float32)
    sigmas = np.asarray(sigmas, np.float32)
    dlog = float(abs(np.log(sigmas[-1] / sigmas[0])) / (len(sigmas) - 1))
    total = tf.zeros(tf.shape(x)[:1])
    for i, sigma in enumerate(sigmas):
      e = tf.random.stateless_normal(tf.shape(x)[-1:], tf.constant([seed, i], tf.int32))[None]
      err = self.denoise(x + float(sigma) * e, float(sigma)) - x
      total += tf.reduce_sum(tf.square(err), axis=-1) / float(sigma) ** 2
    return 0.5 * dlog * total

  def log_prob(self, x, sigma, training=False):
    raise NotImplementedError("ScorePrior has no tractable log-density; use score(x, sigma) (the Langevin "
                              "separator and the ELBO do). Likelihood tables need --prior=wavenet or flow.")

  def call(self, inputs, training=False):
    x, sigma = inputs
    return self.denoise(x, sigma, training=training)

  def compute_losses(self, clean, sigma, training=True):
    """Denoising score matching. clean [batch, time], sigma [batch] (0 is raised to SIGMA_FLOOR).

    total_loss / denoise_loss: mean_t (F - (s - c_skip x) / c_out)^2 per example (EDM-weighted ||D - s||^2)."""
    sigma = tf.maximum(tf.convert_to_tensor(sigma, tf.float32), SIGMA_FLOOR)
    noisy = clean + sigma[:, None] * tf.random.normal(tf.shape(clean))
    f, c_skip, c_out = self._raw(noisy, sigma)
    target = (clean - c_skip * noisy) / c_out
    loss = tf.reduce_mean(tf.square(f - target), axis=-1)
    return {"total_loss": loss, "denoise_loss": loss}

  # --- sampling ---

  def _generate(self, noise, sigmas, seed):
    x = noise * sigmas[0]
    keep = float(np.sqrt(1.0 - self.sample_churn))
    fresh = float(np.sqrt(self.sample_churn))

    def body(i, x):
      d = self.denoise(x, sigmas[i])
      nxt = sigmas[i + 1]
      x = d + keep * (nxt / sigmas[i]) * (x - d)
      if fresh > 0:
        x += fresh * nxt * tf.random.stateless_normal(tf.shape(x), tf.stack([seed, i + 1]))
      return i + 1, x

    _, x = tf.while_loop(lambda i, _: i < tf.shape(sigmas)[0] - 1, body, (tf.constant(0), x))
    return self.denoise(x, sigmas[-1])

  def sample(self, num, length, sigma=0.0, temperature=1.0, seed=None, num_steps=None, sigma_min=0.01):
    """Draws `num` waveforms [num, length] from p_sigma (sigma = 0: the noiseless prior, the last denoised step).

    `num_steps` geometric levels sample_sigma_max -> max(sigma, sigma_min), DDIM or ancestral by `sample_churn`
    (module docstring). temperature scales the starting noise. seed: optional int for a reproducible draw."""
    if self._sample_fn is None:
      object.__setattr__(self, "_sample_fn", tf.function(self._generate, reduce_retracing=True))
    steps = int(num_steps or self.sample_steps)
    sigmas = np.geomspace(self.sample_sigma_max, max(float(sigma), sigma_min), steps).astype(np.float32)
    shape = [int(num), int(length)]
    seed = int(np.random.randint(2 ** 31 - 1) if seed is None else seed)
    noise = tf.random.stateless_normal(shape, tf.constant([seed, 0], tf.int32))
    x = self._sample_fn(float(temperature) * noise, tf.constant(sigmas), tf.constant(seed, tf.int32))
    if sigma > 0:  # a draw from p_sigma: the clean estimate plus that much noise
      x = x + float(sigma) * tf.random.normal(shape)
    return x

  def get_config(self):
    config = super().get_config()
    config.update(num_blocks=self.num_blocks, num_layers=self.num_layers,
                  residual_channels=self.residual_channels, skip_channels=self.skip_channels,
                  kernel_size=self.kernel_size, gate_channels=self.gate_channels,
                  head_channels=self.head_channels, cond_channels=self.cond_channels, sigma_data=self.sigma_data,
                  sample_sigma_max=self.sample_sigma_max, sample_steps=self.sample_steps,
                  sample_churn=self.sample_churn)
    return config


def build_score_prior(num_blocks: int = 1, num_layers: int = 11, residual_channels: int = 16,
                      skip_channels: int = 32, kernel_size: int = 3, gate_channels: int = 0, head_channels: int = 0,
                      cond_channels: int = 32, sigma_data: float = 0.5, sample_sigma_max: float = 3.0,
                      sample_steps: int = 64, sample_churn: float = 0.0) -> ScorePrior:
  """Score prior factory (one flag per keyword: --score.<name>).

  CPU-sized defaults: 1 block x 11 layers, kernel 3, 'same' padding -> receptive field 4095 samples centred
  (+-139 ms at 14.7 kHz: more than three periods of the lowest toy fundamental either side)."""
  return ScorePrior(num_blocks=num_blocks, num_layers=num_layers, residual_channels=residual_channels,
                    skip_channels=skip_channels, kernel_size=kernel_size, gate_channels=gate_channels,
                    head_channels=head_channels, cond_channels=cond_channels, sigma_data=sigma_data,
                    sample_sigma_max=sample_sigma_max, sample_steps=sample_steps, sample_churn=sample_churn)
