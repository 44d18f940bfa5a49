"""Keras 3 networks that parameterise the affine couplings of the flow prior.

  NoiseLevelEmbedding  sigma [batch] -> e [batch, E], an MLP on log(sigma + sigma_floor) (sigma = 0 allowed).
  NonCausalWaveNet     FloWaveNet's coupling network: x_a [batch, T, C_a], e -> (shift, raw log-scale), each
                       [batch, T, C_b]. Dilated 'same'-padded (non-causal) convolutions, gated tanh * sigmoid units,
                       residual + skip connections, the embedding added in every layer, zero-initialised output.
  SplitPriorNet        Glow's learned prior of a factored-out half: one zero-initialised convolution of the kept
                       half plus a zero-initialised projection of e -> (shift, raw log-scale).

Every network returns (shift, raw_log_scale) with zeros at initialisation, so the coupling that uses it starts as
the identity. All weights are Keras 3 weights: they appear in the owning model's trainable_variables.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from vsep_tf.bijectors.tracking import get_layer_list, set_layer_list


@keras.saving.register_keras_serializable(package="vsep_tf")
class NoiseLevelEmbedding(keras.layers.Layer):
  """Global conditioning on the noise level: sigma [batch] (>= 0) -> e [batch, embed_dim].

      u = 1 + log(sigma + sigma_floor) / (0.5 * log(1 / sigma_floor))    (u = -1 at sigma = 0, about 1 at sigma = 1)
      e = swish(W2 swish(W1 u + b1) + b2)
  """

  def __init__(self, embed_dim=32, sigma_floor=1e-4, **kwargs):
    super().__init__(**kwargs)
    self.embed_dim = int(embed_dim)
    self.sigma_floor = float(sigma_floor)
    self.hidden = keras.layers.Dense(self.embed_dim, activation="swish", name="hidden")
    self.project = keras.layers.Dense(self.embed_dim, activation="swish", name="project")
    self.build()

  def build(self, input_shape=None):
    """Builds the sublayers under this layer's name scope (weight paths '<name>/hidden/kernel', ...)."""
    self.hidden.build((None, 1))
    self.project.build((None, self.embed_dim))

  def call(self, sigma):
    sigma = tf.reshape(tf.cast(sigma, self.compute_dtype), [-1, 1])
    u = 1.0 + tf.math.log(sigma + self.sigma_floor) / (0.5 * math.log(1.0 / self.sigma_floor))
    return self.project(self.hidden(u))

  def get_config(self):
    config = super().get_config()
    config.update(embed_dim=self.embed_dim, sigma_floor=self.sigma_floor)
    return config


@keras.saving.register_keras_serializable(package="vsep_tf")
class NonCausalWaveNet(keras.layers.Layer):
  """Non-causal WaveNet: x_a [batch, T, in_channels], conditioning e [batch, cond_dim] ->
  (shift, raw_log_scale), each [batch, T, out_channels].

      h_0 = Conv_k(x_a)                                             (width channels)
      a_i = DilatedConv_{k, d_i}(h_i) + V_i e                       (2 * width, 'same' padding: sees past AND future)
      g_i = tanh(a_i[:width]) * sigmoid(a_i[width:])
      skip = sum_i S_i g_i ;  h_{i+1} = (h_i + R_i g_i) / sqrt(2)
      out = Z relu(O relu(skip / sqrt(L)))                          (Z zero-initialised: out = 0 at init)

  Dilations d_i = 2^(i mod dilation_cycle) (dilation_cycle defaults to num_layers: 1, 2, ..., 2^(L-1)).
  Receptive field: 1 + (k - 1) * (1 + sum_i d_i) steps (front conv included).
  """

  def __init__(self, in_channels, out_channels, width=32, num_layers=10, kernel_size=3, dilation_cycle=None,
               cond_dim=0, **kwargs):
    super().__init__(**kwargs)
    self.in_channels = int(in_channels)
    self.out_channels = int(out_channels)
    self.width = int(width)
    self.num_layers = int(num_layers)
    self.kernel_size = int(kernel_size)
    self.dilation_cycle = int(dilation_cycle) if dilation_cycle else self.num_layers
    self.cond_dim = int(cond_dim)
    if self.num_layers < 1:
      raise ValueError("NonCausalWaveNet needs num_layers >= 1.")
    w = self.width
    self.dilations = [2 ** (i % self.dilation_cycle) for i in range(self.num_layers)]
    self.front = keras.layers.Conv1D(w, self.kernel_size, padding="same", name="front")
    # Individually tracked attributes, not list attributes (see vsep_tf.bijectors.tracking).
    set_layer_list(self, "dilated", [keras.layers.Conv1D(2 * w, self.kernel_size, dilation_rate=d, padding="same",
                                                         name=f"dilated_{i}") for i, d in enumerate(self.dilations)])
    set_layer_list(self, "cond_proj", [keras.layers.Dense(2 * w, use_bias=False, name=f"cond_{i}")
                                       for i in range(self.num_layers)] if self.cond_dim else [])
    set_layer_list(self, "residual", [keras.layers.Conv1D(w, 1, name=f"residual_{i}")
                                      for i in range(self.num_layers - 1)])
    set_layer_list(self, "skip", [keras.layers.Conv1D(w, 1, name=f"skip_{i}") for i in range(self.num_layers)])
    self.out_hidden = keras.layers.Conv1D(w, 1, name="out_hidden")
    self.out = keras.layers.Conv1D(2 * self.out_channels, 1, kernel_initializer="zeros", bias_initializer="zeros",
                                   name="out_zero")
    self.build()

  def build(self, input_shape=None):
    """Builds every sublayer from the constructor's sizes, under this layer's name scope."""
    self.front.build((None, None, self.in_channels))
    for layer in self.dilated + self.residual + self.skip + [self.out_hidden, self.out]:
      layer.build((None, None, self.width))
    for layer in self.cond_proj:
      layer.build((None, self.cond_dim))

  dilated = property(lambda self: get_layer_list(self, "dilated"))
  cond_proj = property(lambda self: get_layer_list(self, "cond_proj"))
  residual = property(lambda self: get_layer_list(self, "residual"))
  skip = property(lambda self: get_layer_list(self, "skip"))

  @property
  def receptive_field(self):
    return 1 + (self.kernel_size - 1) * (1 + sum(self.dilations))

  def call(self, x, conditioning=None):
    if self.cond_dim and conditioning is None:
      raise ValueError(f"{self.name}: built with cond_dim={self.cond_dim} but called without conditioning "
                       "(check the conditional kwargs reach this coupling by its bijector name).")
    w = self.width
    dilated, cond_proj, residual, skips = self.dilated, self.cond_proj, self.residual, self.skip
    h = self.front(x)
    skip = 0.0
    for i in range(self.num_layers):
      a = dilated[i](h)
      if self.cond_dim:
        a = a + cond_proj[i](conditioning)[:, None, :]
      g = tf.tanh(a[..., :w]) * tf.sigmoid(a[..., w:])
      skip = skip + skips[i](g)
      if i < self.num_layers - 1:
        h = (h + residual[i](g)) * math.sqrt(0.5)
    out = self.out(tf.nn.relu(self.out_hidden(tf.nn.relu(skip * (1.0 / math.sqrt(self.num_layers))))))
    return out[..., :self.out_channels], out[..., self.out_channels:]

  def get_config(self):
    config = super().get_config()
    config.update(in_channels=self.in_channels, out_channels=self.out_channels, width=self.width,
                  num_layers=self.num_layers, kernel_size=self.kernel_size, dilation_cycle=self.dilation_cycle,
                  cond_dim=self.cond_dim)
    return config


@keras.saving.register_keras_serializable(package="vsep_tf")
class SplitPriorNet(keras.layers.Layer):
  """Learned conditional Gaussian of a factored-out half (Glow's split prior), as coupling parameters:
  x_a [batch, T, in_channels] (the kept half), e [batch, cond_dim] -> (shift, raw_log_scale) [batch, T, out_channels].

      (shift, raw) = Conv_k(x_a) + V e          (both zero-initialised: N(0, 1) at init)
  """

  def __init__(self, in_channels, out_channels, kernel_size=3, cond_dim=0, **kwargs):
    super().__init__(**kwargs)
    self.in_channels = int(in_channels)
    self.out_channels = int(out_channels)
    self.kernel_size = int(kernel_size)
    self.cond_dim = int(cond_dim)
    self.conv = keras.layers.Conv1D(2 * self.out_channels, self.kernel_size, padding="same",
                                    kernel_initializer="zeros", bias_initializer="zeros", name="conv_zero")
    self.cond_proj = None
    if self.cond_dim:
      self.cond_proj = keras.layers.Dense(2 * self.out_channels, use_bias=False, kernel_initializer="zeros",
                                          name="cond_zero")
    self.build()

  def build(self, input_shape=None):
    self.conv.build((None, None, self.in_channels))
    if self.cond_proj is not None:
      self.cond_proj.build((None, self.cond_dim))

  def call(self, x, conditioning=None):
    out = self.conv(x)
    if self.cond_proj is not None:
      if conditioning is None:
        raise ValueError(f"{self.name}: built with cond_dim={self.cond_dim} but called without conditioning.")
      out = out + self.cond_proj(conditioning)[:, None, :]
    return out[..., :self.out_channels], out[..., self.out_channels:]

  def get_config(self):
    config = super().get_config()
    config.update(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
                  cond_dim=self.cond_dim)
    return config
