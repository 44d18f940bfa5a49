r"""Spectral flow prior: a Glow over the normalised log-spectral frames of one source class.

The same frame model as the spectral VAE (priors/spectral.py), v_kt = g_kt * shape_k(z_kt), with the shape's
distribution given by an exact, invertible density model instead of a decoder:

    features  y = normalised_log_spectrum(v) = log(u * bins + LOG_FLOOR),    u = v / sum(v)
    latent    z = f(y[:F]) ~ N(0, I_F),     F = n_fft / 2 = latent_dim          (f: a Glow, below)
    shape     log_shape(z) = log_softmax([f^-1(z), NYQUIST_FEATURE])          (all `bins` = F + 1 bins)

softmax(y) = (u + LOG_FLOOR / bins) / (1 + LOG_FLOOR): the frame's shape blended with a tiny uniform floor, so
log_softmax of generated features is the right log shape for the separator's data term.

The Nyquist bin. bins = n_fft / 2 + 1 is odd; the flow acts on the first F = n_fft / 2 bins (a power of two,
so the squeezes divide it) and the Nyquist bin is held at the fixed feature NYQUIST_FEATURE = log(LOG_FLOOR),
the value of an empty bin (it is ~empty in practice: the 16 kHz chorales carry nothing at 8 kHz). The density is
the density of the first F features; the Nyquist bin's feature is not modelled.

The flow f (forward = normalising direction y -> z, the project's bijector convention, vsep_tf/bijectors):

    y [B, F] -> [B, F, 1]
    FeatureNormLayer (ActNorm, per element)         per-bin affine (data-dependent init: each bin to zero mean, unit
                                                    variance), log-det sum(log_scale); F loc + F log-scale weights
    Squeeze(squeeze)                                [B, F / squeeze, squeeze]: `squeeze` adjacent bins per position
    block b = 0 .. num_blocks - 1 (block b > 0 starts with Squeeze(2): half the positions, twice the channels):
      flows_per_block x (ActNorm -> InvertibleConv1x1 (LU) -> AffineCoupling(CouplingWaveNet))
    z = the final [B, T', C'] flattened to [B, F]

ActNorm, InvertibleConv1x1 (learned LU), AffineCoupling (soft-clamped exp scale, identity at init) and the
coupling network (a non-causal dilated WaveNet over the frequency POSITIONS, zero-initialised output) are the
project's own (vsep_tf/bijectors). No multi-scale split: every dimension goes through every block, so the
latent has latent_dim = F dimensions and log_shape needs no factored-out parts.

Likelihood (per frame, nats):  -log p(y) = 0.5 ||z||^2 + (F / 2) log(2 pi) - log|det dz/dy|.

Dequantisation: the features of real frames lie near a lower-dimensional set (u sums to 1, so the F features
nearly satisfy one equation; empty bins sit exactly at log(LOG_FLOOR)), where an exact density is unbounded.
Training therefore fits the density of NOISED features y + noise_std * eps, eps ~ N(0, I) (a Gaussian-smoothed
feature distribution; noise_std is in log-magnitude units: 0.05 ~ 5 % jitter of every bin). compute_losses with
training=False evaluates that smoothed density at the clean features (deterministic; what the confusion and
held-out NLL figures use).

Interface (the one SpectralPrior offers the separator and the encoder trainer): n_fft, hop, bins, latent_dim,
concentration; encode(v) -> (mu, logvar) with mu = f(y) EXACT and logvar = ENCODE_LOGVAR (-10: a near-delta
posterior; the flow is a bijection, so the only uncertainty about z given a frame is the dequantisation noise,
and nothing downstream reads logvar as a density); log_shape(z); compute_losses(v, training) ->
{'total_loss': exact NLL, 'log_det', 'prior_nll'} per frame. `concentration` plays no part in the prior's own
training: it is the weight the separator (and the amortised encoder's ELBO) gives a frame's multinomial
likelihood against the latent prior, exactly as for the VAE (same default). MAP under this prior is MAP in z
(the separator's ||z||^2 / 2), the posterior mode in the latent space as in InstGlow.

Registered as the flag family 'spectral_flow' (--spectral_flow.<name>); the priors stage picks it with
--spectral_prior=flow (training/spectral_trainer.py, model_dir.restore_spectral_priors).
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vsep_tf.bijectors.actnorm import ActNorm, ActNormLayer
from vsep_tf.bijectors.affine_coupling import AffineCoupling
from vsep_tf.bijectors.invertible_conv import InvertibleConv1x1Layer
from vsep_tf.bijectors.squeeze import Squeeze
from vsep_tf.layers.tracking import get_layer_list, set_layer_list
from vsep_tf.priors.spectral import LOG_FLOOR, normalised_log_spectrum

tfb = tfp.bijectors

NYQUIST_FEATURE = float(np.log(LOG_FLOOR))  # the Nyquist bin's fixed feature: an empty bin
ENCODE_LOGVAR = -10.0                        # encode()'s constant log-variance (module docstring)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@keras.saving.register_keras_serializable(package="vsep_tf")
class FeatureNormLayer(keras.layers.Layer):
  """Owns the per-bin loc and log_scale [T, C] of the first step, an ActNorm with per-element parameters (identity
  until `initialize`)."""

  def __init__(self, length, channels, min_std=1e-2, **kwargs):
    super().__init__(**kwargs)
    self.length, self.channels, self.min_std = int(length), int(channels), float(min_std)
    self.loc = self.add_weight(shape=(self.length, self.channels), initializer="zeros", name="loc")
    self.log_scale = self.add_weight(shape=(self.length, self.channels), initializer="zeros", name="log_scale")
    self.built = True

  def bijector(self, name="feature_norm"):
    return ActNorm(tf.convert_to_tensor(self.loc), tf.convert_to_tensor(self.log_scale), name=name)  # per element

  def initialize(self, x):
    """Every element of x [batch, T, C] to zero mean and unit variance over the batch."""
    mean, var = tf.nn.moments(x, axes=[0])
    self.loc.assign(-mean)
    self.log_scale.assign(-tf.math.log(tf.maximum(tf.sqrt(var), self.min_std)))

  def get_config(self):
    config = super().get_config()
    config.update(length=self.length, channels=self.channels, min_std=self.min_std)
    return config


@keras.saving.register_keras_serializable(package="vsep_tf")
class ConvCouplingNet(keras.layers.Layer):
  """Coupling network over frequency positions: x_a [batch, T, in_channels] -> (shift, raw_log_scale), each
  [batch, T, out_channels]. Plain Keras convolutions, 'same' padding (sees lower AND higher positions):

      h = relu(Conv_k(x_a));  h = relu(Conv_{k, dilation 2^i}(h)) + h  for i = 1 .. num_layers - 1
      (shift, raw) = Conv_k^zero(h)             (zero-initialised: the coupling starts as the identity)

  Receptive field 1 + (k - 1) * 2^num_layers positions. The project's CouplingWaveNet computes the same kind of
  map with gated units; on this CPU its gradient was 4x slower per layer for these sizes (its convolution is a
  pad + concat + tensordot), which is why the spectral flow uses plain Conv1D here."""

  def __init__(self, in_channels, out_channels, width=32, num_layers=3, kernel_size=3, **kwargs):
    super().__init__(**kwargs)
    self.in_channels, self.out_channels = int(in_channels), int(out_channels)
    self.width, self.num_layers, self.kernel_size = int(width), int(num_layers), int(kernel_size)
    conv = keras.layers.Conv1D
    self.convs = [conv(self.width, self.kernel_size, padding="same", activation="relu", name="conv_in")]
    self.convs += [conv(self.width, self.kernel_size, padding="same", dilation_rate=2 ** i, activation="relu",
                        name=f"conv_{i}") for i in range(1, self.num_layers)]
    self.out = conv(2 * self.out_channels, self.kernel_size, padding="same", kernel_initializer="zeros",
                    bias_initializer="zeros", name="conv_zero")
    set_layer_list(self, "conv", self.convs)
    del self.convs
    self.build()

  def build(self, input_shape=None):
    channels = self.in_channels
    for layer in get_layer_list(self, "conv"):
      layer.build((None, None, channels))
      channels = self.width
    self.out.build((None, None, self.width))
    self.built = True

  def call(self, x, conditioning=None):
    del conditioning
    convs = get_layer_list(self, "conv")
    h = convs[0](x)
    for layer in convs[1:]:
      h = layer(h) + h
    out = self.out(h)
    return out[..., :self.out_channels], out[..., self.out_channels:]

  def get_config(self):
    config = super().get_config()
    config.update(in_channels=self.in_channels, out_channels=self.out_channels, width=self.width,
                  num_layers=self.num_layers, kernel_size=self.kernel_size)
    return config


@keras.saving.register_keras_serializable(package="vsep_tf")
class SpectralFlowPrior(keras.Model):
  """Glow over the normalised log-spectral frames [batch, bins] of one source class (module docstring)."""

  def __init__(self, n_fft: int = 1024, hop: int = 256, squeeze: int = 8, num_blocks: int = 2,
               flows_per_block: int = 4, width: int = 32, num_layers: int = 4, kernel_size: int = 3,
               log_scale_clamp: float = 2.0, noise_std: float = 0.05, concentration: float = 300.0, seed: int = 0,
               **kwargs):
    super().__init__(**kwargs)
    self.n_fft, self.hop = int(n_fft), int(hop)
    self.bins = self.n_fft // 2 + 1
    self.latent_dim = self.n_fft // 2  # F: the flow's dimension
    self.squeeze, self.num_blocks, self.flows_per_block = int(squeeze), int(num_blocks), int(flows_per_block)
    self.width, self.num_layers, self.kernel_size = int(width), int(num_layers), int(kernel_size)
    self.log_scale_clamp, self.noise_std = float(log_scale_clamp), float(noise_std)
    self.concentration, self.seed = float(concentration), int(seed)
    if self.concentration <= 0 or self.noise_std < 0:
      raise ValueError(f"concentration must be > 0 and noise_std >= 0, got {concentration}, {noise_std}")
    if min(self.squeeze, self.num_blocks, self.flows_per_block, self.width, self.num_layers) < 1:
      raise ValueError("squeeze, num_blocks, flows_per_block, width and num_layers must be >= 1")
    total = self.squeeze * 2 ** (self.num_blocks - 1)
    if self.squeeze < 2 or self.latent_dim % total or self.latent_dim // total < 1:
      raise ValueError(f"n_fft / 2 = {self.latent_dim} must be divisible by squeeze * 2^(num_blocks - 1) = {total} "
                       "and squeeze >= 2 (the 1x1 convolutions need >= 2 channels)")
    self._plan = []  # (positions, channels) of every block
    t, c = self.latent_dim // self.squeeze, self.squeeze
    for b in range(self.num_blocks):
      if b:
        t, c = t // 2, c * 2
      self._plan.append((t, c))
    self.feature_norm = FeatureNormLayer(self.latent_dim, 1, name="feature_norm")
    actnorms, convs, nets = [], [], []
    for b, (_, c) in enumerate(self._plan):
      for f in range(self.flows_per_block):
        actnorms.append(ActNormLayer(c, name=f"b{b}_f{f}_actnorm"))
        convs.append(InvertibleConv1x1Layer(c, seed=self.seed * 100003 + b * 1009 + f, name=f"b{b}_f{f}_conv1x1"))
        nets.append(ConvCouplingNet(c // 2, c - c // 2, width=self.width, num_layers=self.num_layers,
                                    kernel_size=self.kernel_size, name=f"b{b}_f{f}_net"))
    for name, layers in (("actnorm", actnorms), ("conv", convs), ("coupling_net", nets)):
      set_layer_list(self, name, layers)  # tracked one by one: tf.train.Checkpoint must see every weight
    self.initialized = self.add_weight(shape=(), initializer="zeros", trainable=False, name="initialized")
    self.built = True

  actnorms = property(lambda self: get_layer_list(self, "actnorm"))
  convs = property(lambda self: get_layer_list(self, "conv"))
  coupling_nets = property(lambda self: get_layer_list(self, "coupling_net"))

  # --- the flow ---------------------------------------------------------------------------------------------
  def steps(self):
    """The flow's bijectors in application order (forward = features -> latent), as (owning layer, bijector);
    built from the weights' current values (cheap; gradients reach the weights)."""
    out = [(self.feature_norm, self.feature_norm.bijector()), (None, Squeeze(self.squeeze, name="squeeze"))]
    actnorms, convs, nets = self.actnorms, self.convs, self.coupling_nets
    for b in range(self.num_blocks):
      if b:
        out.append((None, Squeeze(2, name=f"b{b}_squeeze")))
      for f in range(self.flows_per_block):
        i = b * self.flows_per_block + f
        out.append((actnorms[i], actnorms[i].bijector(name=f"b{b}_f{f}_actnorm")))
        out.append((convs[i], convs[i].bijector(name=f"b{b}_f{f}_conv1x1")))
        out.append((nets[i], AffineCoupling(nets[i], log_scale_clamp=self.log_scale_clamp,
                                            name=f"b{b}_f{f}_coupling")))
    return out

  def flow_forward(self, y):
    """(z [N, F], log|det dz/dy| [N]) of flow inputs y [N, F]."""
    x = tf.reshape(tf.convert_to_tensor(y, tf.float32), [-1, self.latent_dim, 1])
    log_det = tf.zeros(tf.shape(x)[:1])
    for _, bijector in self.steps():
      out = bijector.forward(x)
      log_det = log_det + bijector.forward_log_det_jacobian(x, event_ndims=2)
      x = out
    return tf.reshape(x, [-1, self.latent_dim]), log_det

  def flow_inverse(self, z):
    """Flow inputs y [N, F] of latents z [N, F]."""
    t, c = self._plan[-1]
    x = tf.reshape(tf.convert_to_tensor(z, tf.float32), [-1, t, c])
    for _, bijector in reversed(self.steps()):
      x = bijector.inverse(x)
    return tf.reshape(x, [-1, self.latent_dim])

  def initialize(self, v):
    """Data-dependent init (the per-bin step, then every ActNorm on its own input) from magnitude frames v [N, bins]
    (noised as in training). Sets `initialized`."""
    y = self.features(v)
    if self.noise_std > 0:
      y = y + self.noise_std * tf.random.normal(tf.shape(y))
    x = tf.reshape(y, [-1, self.latent_dim, 1])
    for layer, bijector in self.steps():
      if isinstance(layer, (ActNormLayer, FeatureNormLayer)):
        layer.initialize(x)
        bijector = layer.bijector()
      x = bijector.forward(x)
    self.initialized.assign(1.0)

  # --- the interface of SpectralPrior ---------------------------------------------------------------------
  def features(self, v):
    """The flow's input: the first F = n_fft / 2 normalised log-spectrum features of frames v [..., bins]."""
    return normalised_log_spectrum(v)[..., :self.latent_dim]

  def encode(self, v):
    """(mu, logvar), each [..., latent_dim], of magnitude frames v [..., bins]: mu = f(y) exactly, logvar =
    ENCODE_LOGVAR (module docstring)."""
    v = tf.convert_to_tensor(v, tf.float32)
    lead = tf.shape(v)[:-1]
    z, _ = self.flow_forward(tf.reshape(self.features(v), [-1, self.latent_dim]))
    z = tf.reshape(z, tf.concat([lead, [self.latent_dim]], 0))
    return z, tf.fill(tf.shape(z), ENCODE_LOGVAR)

  def log_shape(self, z):
    """log_softmax([f^-1(z), NYQUIST_FEATURE]): the log spectral shape [..., bins] of latents z [..., F]."""
    z = tf.convert_to_tensor(z, tf.float32)
    lead = tf.shape(z)[:-1]
    y = self.flow_inverse(tf.reshape(z, [-1, self.latent_dim]))
    y = tf.concat([y, tf.fill([tf.shape(y)[0], 1], NYQUIST_FEATURE)], axis=-1)
    return tf.reshape(tf.nn.log_softmax(y, axis=-1), tf.concat([lead, [self.bins]], 0))

  def call(self, inputs, training=False):
    """Magnitude frames [batch, bins] -> the shape of their own latent (the frame's shape, floor-blended)."""
    return tf.exp(self.log_shape(self.encode(inputs)[0]))

  def log_prob_features(self, y):
    """log p(y) [N] (nats) of flow inputs y [N, F]: (log N(z; 0, I) + log|det dz/dy|, log-det)."""
    z, log_det = self.flow_forward(y)
    log_base = -0.5 * tf.reduce_sum(tf.square(z), axis=-1) - self.latent_dim * _HALF_LOG_2PI
    return log_base + log_det, log_det

  def compute_losses(self, v, training=True):
    """Exact negative log-likelihood per frame [batch] (nats) of the features of magnitude frames v [batch, bins]
    (noised by noise_std when training; module docstring). Keys: total_loss (= nll), log_det, prior_nll."""
    y = self.features(tf.convert_to_tensor(v, tf.float32))
    if training and self.noise_std > 0:
      y = y + self.noise_std * tf.random.normal(tf.shape(y))
    log_p, log_det = self.log_prob_features(y)
    return {"total_loss": -log_p, "log_det": log_det, "prior_nll": -log_p - log_det}

  def sample(self, num, temperature=1.0, seed=None):
    """Shapes [num, bins] of latents drawn from N(0, temperature^2 I)."""
    z = temperature * tf.random.normal([num, self.latent_dim], seed=seed)
    return tf.exp(self.log_shape(z))

  def get_config(self):
    config = super().get_config()
    config.update(n_fft=self.n_fft, hop=self.hop, squeeze=self.squeeze, num_blocks=self.num_blocks,
                  flows_per_block=self.flows_per_block, width=self.width, num_layers=self.num_layers,
                  kernel_size=self.kernel_size, log_scale_clamp=self.log_scale_clamp, noise_std=self.noise_std,
                  concentration=self.concentration, seed=self.seed)
    return config


def build_spectral_flow_prior(n_fft: int = 1024, hop: int = 256, squeeze: int = 8, num_blocks: int = 2,
                              flows_per_block: int = 4, width: int = 32, num_layers: int = 4, kernel_size: int = 3,
                              log_scale_clamp: float = 2.0, noise_std: float = 0.05,
                              concentration: float = 300.0) -> SpectralFlowPrior:
  """Spectral flow prior factory (one flag per keyword: --spectral_flow.<name>; chosen by --spectral_prior=flow).

  n_fft / hop: the STFT whose frames are modelled. squeeze: adjacent bins per position of the first block; each
  further block (num_blocks) squeezes by 2 more. flows_per_block: Glow steps per block. width / num_layers /
  kernel_size: the coupling WaveNets (dilations 1 .. 2^(num_layers - 1) over frequency positions).
  log_scale_clamp: bound on each coupling's |log scale|. noise_std: dequantisation noise of the features (log
  units). concentration: the separator's frame-likelihood weight (as --spectral.concentration)."""
  return SpectralFlowPrior(n_fft=n_fft, hop=hop, squeeze=squeeze, num_blocks=num_blocks,
                           flows_per_block=flows_per_block, width=width, num_layers=num_layers,
                           kernel_size=kernel_size, log_scale_clamp=log_scale_clamp, noise_std=noise_std,
                           concentration=concentration)
