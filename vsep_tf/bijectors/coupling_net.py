"""Keras 3 networks that parameterise the affine couplings of the flow prior.

  CouplingWaveNet  FloWaveNet's coupling network: x_a [batch, T, C_a], e -> (shift, raw log-scale), each
                   [batch, T, C_b]. An adapter over `vsep_tf.layers.wavenet.WaveNet` (non-causal, conditional,
                   zero-initialised output); e comes from `vsep_tf.layers.wavenet.NoiseLevelEmbedding`.
  SplitPriorNet    Glow's learned prior of a factored-out half: one zero-initialised convolution of the kept
                   half plus a zero-initialised projection of e -> (shift, raw log-scale).

Every network returns (shift, raw_log_scale) with zeros at initialisation, so the coupling that uses it starts as
the identity. All weights are Keras 3 weights: they appear in the owning model's trainable_variables.
"""
from __future__ import annotations

import keras

from vsep_tf.layers.wavenet import WaveNet


@keras.saving.register_keras_serializable(package="vsep_tf")
class CouplingWaveNet(keras.layers.Layer):
  """Non-causal WaveNet coupling network: x_a [batch, T, in_channels], conditioning e [batch, cond_dim] ->
  (shift, raw_log_scale), each [batch, T, out_channels].

  The computation is `WaveNet(causal=False, conditional=True, zero_init_output=True)` of vsep_tf.layers.wavenet with a
  kernel_size-tap input convolution (FloWaveNet's front conv), residual = skip = head channels = width and
  2 * out_channels outputs split into (shift, raw_log_scale):

      h_0 = Conv_k(x_a);  [a_f, a_g] = DilatedConv_{k, d_i}(h_i) + V_i e     ('same' padding: sees past AND future)
      out = Z relu(O relu(sqrt(1/L) sum_i S_i g_i))                         (Z zero-initialised: out = 0 at init)

  Dilations d_i = 2^(i mod dilation_cycle), i < num_layers (dilation_cycle = 0: no cycle, 1, 2, ..., 2^(L-1));
  dilation_cycle must divide num_layers (the cycles are the WaveNet's blocks).
  Receptive field: 1 + (k - 1) * (1 + sum_i d_i) steps (front conv included).
  """

  def __init__(self, in_channels, out_channels, width=32, num_layers=10, kernel_size=3, dilation_cycle=0,
               cond_dim=0, **kwargs):
    super().__init__(**kwargs)
    self.in_channels = int(in_channels)
    self.out_channels = int(out_channels)
    self.width = int(width)
    self.num_layers = int(num_layers)
    self.kernel_size = int(kernel_size)
    self.dilation_cycle = int(dilation_cycle or 0)
    self.cond_dim = int(cond_dim)
    cycle = self.dilation_cycle or self.num_layers
    if self.num_layers < 1 or self.num_layers % cycle:
      raise ValueError(f"CouplingWaveNet needs num_layers >= 1 and a multiple of dilation_cycle, got "
                       f"num_layers={num_layers}, dilation_cycle={dilation_cycle}.")
    self.wavenet = WaveNet(num_blocks=self.num_layers // cycle, num_layers=cycle, residual_channels=self.width,
                           skip_channels=self.width, out_channels=2 * self.out_channels,
                           kernel_size=self.kernel_size, causal=False, conditional=bool(self.cond_dim),
                           zero_init_output=True, input_kernel_size=self.kernel_size, name="wavenet")
    self.build()

  def build(self, input_shape=None):
    """Builds the WaveNet from the constructor's sizes, under this layer's name scope."""
    self.wavenet.build((None, None, self.in_channels), (None, self.cond_dim) if self.cond_dim else None)

  @property
  def dilations(self):
    return self.wavenet.dilations

  @property
  def receptive_field(self):
    return self.wavenet.receptive_field

  @property
  def cond_proj(self):
    """The per-layer projections V_i of the conditioning (one per layer: sigma reaches every layer)."""
    return [block.cond_proj for block in self.wavenet.blocks] if self.cond_dim else []

  def call(self, x, conditioning=None):
    if self.cond_dim and conditioning is None:
      raise ValueError(f"{self.name}: built with cond_dim={self.cond_dim} but called without conditioning "
                       "(check the conditional kwargs reach this coupling by its bijector name).")
    out = self.wavenet(x, conditioning if self.cond_dim else None)
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
