"""WaveNet layers (Keras 3): dilated convolution, gated residual block, the block stack, a noise-level embedding.

Shapes are [batch, time, channels] throughout. Every layer has get_config and is registered for serialisation
(package 'vsep_tf.layers').

Dilated convolution with kernel size k and dilation d:

    y[t] = b + sum_{i=0}^{k-1} W[i] x[t - p + i d]          (x = 0 outside [0, T))

  causal:      p = (k - 1) d                (y[t] sees x[t - (k-1)d .. t] only)
  non-causal:  p = floor((k - 1) d / 2)     ('same' padding; centred, as in FloWaveNet's coupling nets)

Residual block (gated activation unit, optional conditioning c added to both gate pre-activations):

    [a_f, a_g] = DilatedConv(x) + V c
    h = tanh(a_f) * sigmoid(a_g)
    skip = W_s h,        out = x + W_r h        (1x1 projections)

Stack of num_blocks x num_layers blocks with dilations 1, 2, ..., 2^(num_layers-1) in every block:

    h_0 = W_in x (1x1, or k_in taps);  h_{l+1}, s_l = Block_l(h_l, c);  y = W_2 relu(W_1 relu(sqrt(1/N) sum_l s_l))

Receptive field (causal): output t depends on inputs t - R + 1 .. t,
R = (k - 1) num_blocks (2^num_layers - 1) + k_in (k_in = input_kernel_size, 1 by default).

Causal stacks also run incrementally, one time step at a time, with one input queue per layer holding its last
(k - 1) d inputs (Fast WaveNet, Paine et al. 2016): `init_queues`, `step_conditioning`, `step`.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from vsep_tf.layers.tracking import get_layer_list, set_layer_list

# Registered as 'vsep_tf.layers>Name' (Keras silently lets a later registration of the same name replace the earlier
# one, so every package keeps its own prefix).
_PACKAGE = "vsep_tf.layers"


def _get_initializer(name_or_obj):
  return keras.initializers.get(name_or_obj)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DilatedConv1D(keras.layers.Layer):
  """Dilated 1-D convolution, causal or 'same'. x [batch, time, C_in] -> [batch, time, filters].

  kernel: [k, C_in, filters], tap i reads x[t - pad_left + i d] (see the module docstring).
  Computed as one matmul of the k shifted copies of x concatenated on channels (faster than tf.nn.convolution's
  space-to-batch dilation on CPU). With k = 1 any rank [..., C_in] is accepted (a pointwise projection).
  """

  def __init__(self, filters: int, kernel_size: int = 2, dilation_rate: int = 1, causal: bool = True,
               use_bias: bool = True, kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
    super().__init__(**kwargs)
    self.filters = int(filters)
    self.kernel_size = int(kernel_size)
    self.dilation_rate = int(dilation_rate)
    self.causal = bool(causal)
    self.use_bias = bool(use_bias)
    self.kernel_initializer = _get_initializer(kernel_initializer)
    self.bias_initializer = _get_initializer(bias_initializer)

  @property
  def span(self) -> int:
    """(k - 1) d: how many samples the kernel reaches beyond one."""
    return (self.kernel_size - 1) * self.dilation_rate

  @property
  def pad_left(self) -> int:
    return self.span if self.causal else self.span // 2

  def build(self, input_shape):
    in_channels = int(input_shape[-1])
    self.kernel = self.add_weight(name="kernel", shape=(self.kernel_size, in_channels, self.filters),
                                  initializer=self.kernel_initializer)
    self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
                 if self.use_bias else None)

  def call(self, x):
    k, d = self.kernel_size, self.dilation_rate
    in_channels = self.kernel.shape[1]
    if k == 1:
      taps = x
    else:
      length = tf.shape(x)[1]
      xp = tf.pad(x, [[0, 0], [self.pad_left, self.span - self.pad_left], [0, 0]])
      taps = tf.concat([xp[:, i * d:i * d + length] for i in range(k)], axis=-1)
    # tensordot, not einsum("...c,cf->...f"): the ellipsis einsum's gradient is ~100x slower on CPU (TF 2.21).
    y = tf.tensordot(taps, tf.reshape(self.kernel, [k * in_channels, self.filters]), axes=1)
    if self.use_bias:
      y = y + self.bias
    return y

  def step(self, taps):
    """One output step from its k inputs, oldest first: taps [batch, k, C_in] -> [batch, filters]."""
    y = tf.einsum("bkc,kcf->bf", taps, self.kernel)
    if self.use_bias:
      y = y + self.bias
    return y

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.filters,)

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, kernel_size=self.kernel_size, dilation_rate=self.dilation_rate,
                  causal=self.causal, use_bias=self.use_bias,
                  kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                  bias_initializer=keras.initializers.serialize(self.bias_initializer))
    return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualBlock(keras.layers.Layer):
  """Gated residual block. call(x [batch, time, R], cond=None) -> (out [batch, time, R], skip [batch, time, S]).

  cond: global [batch, C] (broadcast over time) or local [batch, time, C]; required iff `conditional`.
  With residual_output=False (the last block of a stack, whose residual output nobody reads) there is no W_r and
  `out` is x itself, so every weight receives a gradient.
  """

  def __init__(self, residual_channels: int, skip_channels: int, kernel_size: int = 2, dilation_rate: int = 1,
               causal: bool = True, gate_channels: int = 0, conditional: bool = False,
               residual_output: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.residual_channels = int(residual_channels)
    self.skip_channels = int(skip_channels)
    self.kernel_size = int(kernel_size)
    self.dilation_rate = int(dilation_rate)
    self.causal = bool(causal)
    self.gate_channels = int(gate_channels) or self.residual_channels
    self.conditional = bool(conditional)
    self.residual_output = bool(residual_output)
    self.conv = DilatedConv1D(2 * self.gate_channels, self.kernel_size, self.dilation_rate, self.causal,
                              name="dilated_conv")
    self.cond_proj = (keras.layers.Dense(2 * self.gate_channels, use_bias=False, name="cond_proj")
                      if self.conditional else None)
    self.skip_proj = DilatedConv1D(self.skip_channels, 1, name="skip_proj")
    self.res_proj = (DilatedConv1D(self.residual_channels, 1, name="res_proj")
                     if self.residual_output else None)

  def build(self, x_shape, cond_shape=None):
    self.conv.build(x_shape)
    if self.conditional:
      if cond_shape is None:
        raise ValueError(f"{self.name}: conditional block built without a conditioning shape")
      self.cond_proj.build(cond_shape)
    gate_shape = tuple(x_shape[:-1]) + (self.gate_channels,)
    self.skip_proj.build(gate_shape)
    if self.residual_output:
      self.res_proj.build(gate_shape)

  def _gate(self, a):
    a_f, a_g = tf.split(a, 2, axis=-1)
    return tf.tanh(a_f) * tf.sigmoid(a_g)

  def cond_term(self, cond):
    """V c, shaped to add to the conv output: [batch, 1, 2G] (global) or [batch, time, 2G] (local)."""
    if not self.conditional:
      return None
    if cond is None:
      raise ValueError(f"{self.name}: conditional block called without cond")
    v = self.cond_proj(cond)
    return v[:, None, :] if len(cond.shape) == 2 else v

  def call(self, x, cond=None):
    a = self.conv(x)
    if self.conditional:
      a = a + self.cond_term(cond)
    h = self._gate(a)
    out = x + self.res_proj(h) if self.residual_output else x
    return out, self.skip_proj(h)

  @property
  def queue_length(self) -> int:
    return (self.kernel_size - 1) * self.dilation_rate

  def step(self, x_t, queue, cond_t=None):
    """One causal step. x_t [batch, R]; queue [batch, (k-1)d, R] = inputs t-(k-1)d .. t-1 (oldest first);
    cond_t [batch, 2G] (V c, precomputed) or None. Returns (out_t [batch, R], skip_t [batch, S], new queue)."""
    d, k = self.dilation_rate, self.kernel_size
    taps = tf.stack([queue[:, i * d] for i in range(k - 1)] + [x_t], axis=1)
    a = self.conv.step(taps)
    if cond_t is not None:
      a = a + cond_t
    h = self._gate(a)
    out = x_t + self.res_proj.step(h[:, None]) if self.residual_output else x_t
    new_queue = tf.concat([queue[:, 1:], x_t[:, None]], axis=1)
    return out, self.skip_proj.step(h[:, None]), new_queue

  def get_config(self):
    config = super().get_config()
    config.update(residual_channels=self.residual_channels, skip_channels=self.skip_channels,
                  kernel_size=self.kernel_size, dilation_rate=self.dilation_rate, causal=self.causal,
                  gate_channels=self.gate_channels, conditional=self.conditional,
                  residual_output=self.residual_output)
    return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WaveNet(keras.layers.Layer):
  """WaveNet stack. call(x [batch, time, C_in], cond=None) -> [batch, time, out_channels].

  num_blocks x num_layers gated residual blocks, dilations 2^0 .. 2^(num_layers-1) per block, a 1x1 input
  projection, the skip sum scaled by sqrt(1/N) and a ReLU-1x1-ReLU-1x1 head. causal=False gives the 'same'-padded
  non-causal net of flow coupling layers; zero_init_output=True starts the last 1x1 at zero (identity couplings).
  gate_channels=0 means residual_channels, head_channels=0 means skip_channels. input_kernel_size > 1 makes the
  input projection a k_in-tap convolution (FloWaveNet's front conv; full-sequence `call` only, no `step`).
  """

  def __init__(self, num_blocks: int = 2, num_layers: int = 10, residual_channels: int = 32,
               skip_channels: int = 64, out_channels: int = 1, kernel_size: int = 2, causal: bool = True,
               gate_channels: int = 0, head_channels: int = 0, conditional: bool = False,
               zero_init_output: bool = False, input_kernel_size: int = 1, **kwargs):
    super().__init__(**kwargs)
    self.num_blocks = int(num_blocks)
    self.num_layers = int(num_layers)
    self.residual_channels = int(residual_channels)
    self.skip_channels = int(skip_channels)
    self.out_channels = int(out_channels)
    self.kernel_size = int(kernel_size)
    self.causal = bool(causal)
    self.gate_channels = int(gate_channels) or self.residual_channels
    self.head_channels = int(head_channels) or self.skip_channels
    self.conditional = bool(conditional)
    self.zero_init_output = bool(zero_init_output)
    self.input_kernel_size = int(input_kernel_size)

    self.input_proj = DilatedConv1D(self.residual_channels, self.input_kernel_size, causal=self.causal,
                                    name="input_proj")
    n = self.num_blocks * self.num_layers
    # Attributes block_0, block_1, ..., not a list attribute (see vsep_tf.layers.tracking).
    set_layer_list(self, "block", [ResidualBlock(
        self.residual_channels, self.skip_channels, self.kernel_size, d, self.causal, self.gate_channels,
        self.conditional, residual_output=(i < n - 1), name=f"block_{i}") for i, d in enumerate(self.dilations)])
    self.head_1 = DilatedConv1D(self.head_channels, 1, name="head_1")
    self.head_2 = DilatedConv1D(self.out_channels, 1, name="head_2",
                                kernel_initializer="zeros" if self.zero_init_output else "glorot_uniform")
    self.skip_scale = math.sqrt(1.0 / n)

  @property
  def blocks(self):
    """The residual blocks, input side first."""
    return get_layer_list(self, "block")

  @property
  def dilations(self):
    return [2 ** l for _ in range(self.num_blocks) for l in range(self.num_layers)]

  @property
  def receptive_field(self) -> int:
    """Number of input samples one output sees: (k - 1) * sum(dilations) + input_kernel_size."""
    return (self.kernel_size - 1) * sum(self.dilations) + self.input_kernel_size

  def build(self, x_shape, cond_shape=None):
    if self.conditional and cond_shape is None:
      raise ValueError(f"{self.name}: conditional WaveNet built without a conditioning shape")
    self.input_proj.build(x_shape)
    h_shape = tuple(x_shape[:-1]) + (self.residual_channels,)
    for block in self.blocks:
      block.build(h_shape, cond_shape if self.conditional else None)
    self.head_1.build(tuple(x_shape[:-1]) + (self.skip_channels,))
    self.head_2.build(tuple(x_shape[:-1]) + (self.head_channels,))

  def _head(self, skip_sum):
    return self.head_2(tf.nn.relu(self.head_1(tf.nn.relu(skip_sum * self.skip_scale))))

  def call(self, x, cond=None):
    if self.conditional and cond is None:
      raise ValueError(f"{self.name}: conditional WaveNet called without cond")
    h = self.input_proj(x)
    skip_sum = 0.0
    for block in self.blocks:
      h, skip = block(h, cond if self.conditional else None)
      skip_sum = skip_sum + skip
    return self._head(skip_sum)

  def compute_output_shape(self, x_shape, cond_shape=None):
    return tuple(x_shape[:-1]) + (self.out_channels,)

  # --- incremental (Fast WaveNet) generation, causal stacks only ---

  def init_queues(self, batch_size):
    """Zero queues (the causal zero padding), one [batch, (k-1)d, R] per block."""
    return [tf.zeros([batch_size, block.queue_length, self.residual_channels]) for block in self.blocks]

  def step_conditioning(self, cond):
    """Per-block V c for a global cond [batch, C]: a list of [batch, 2G] (None entries if unconditional)."""
    if not self.conditional:
      return [None] * len(self.blocks)
    return [block.cond_proj(cond) for block in self.blocks]

  def step(self, x_t, queues, cond_terms):
    """One time step. x_t [batch, C_in], queues from init_queues/step, cond_terms from step_conditioning.
    Returns (y_t [batch, out_channels], new queues). Equals call(...)[:, t] for the same past inputs."""
    if not self.causal or self.input_kernel_size != 1:
      raise ValueError("incremental generation needs a causal WaveNet with input_kernel_size=1")
    h = self.input_proj.step(x_t[:, None])
    skip_sum = 0.0
    new_queues = []
    for block, queue, cond_t in zip(self.blocks, queues, cond_terms):
      h, skip, queue = block.step(h, queue, cond_t)
      skip_sum = skip_sum + skip
      new_queues.append(queue)
    return self._head(skip_sum), new_queues

  def get_config(self):
    config = super().get_config()
    config.update(num_blocks=self.num_blocks, num_layers=self.num_layers,
                  residual_channels=self.residual_channels, skip_channels=self.skip_channels,
                  out_channels=self.out_channels, kernel_size=self.kernel_size, causal=self.causal,
                  gate_channels=self.gate_channels, head_channels=self.head_channels,
                  conditional=self.conditional, zero_init_output=self.zero_init_output,
                  input_kernel_size=self.input_kernel_size)
    return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoiseLevelEmbedding(keras.layers.Layer):
  """Embedding of the noise level: sigma [batch] -> [batch, channels].

    c = 1 + log(sigma + s_0) / (0.5 log(1 / s_0))    (s_0 = sigma_floor; sigma = 0 -> c = -1, sigma = 1 -> c ~ +1;
                                                      s_0 = 1e-4: c = (log(sigma + 1e-4) - log(1e-2)) / 4.605)
    f = [c, sin(pi 2^j c), cos(pi 2^j c)]_{j < num_frequencies}       (num_frequencies = 0: f = [c])
    e = silu(W_2 silu(W_1 f + b_1) + b_2)

  sigma = 0 (noiseless) is a valid input: log(s_0) is finite.
  """

  def __init__(self, channels: int = 32, num_frequencies: int = 4, sigma_floor: float = 1e-4, **kwargs):
    super().__init__(**kwargs)
    self.channels = int(channels)
    self.num_frequencies = int(num_frequencies)
    self.sigma_floor = float(sigma_floor)
    if not 0.0 < self.sigma_floor < 1.0:
      raise ValueError(f"NoiseLevelEmbedding: sigma_floor must be in (0, 1), got {sigma_floor}")
    self.dense_1 = keras.layers.Dense(self.channels, activation="silu", name="dense_1")
    self.dense_2 = keras.layers.Dense(self.channels, activation="silu", name="dense_2")

  def build(self, sigma_shape=None):
    self.dense_1.build((None, 1 + 2 * self.num_frequencies))
    self.dense_2.build((None, self.channels))

  def features(self, sigma):
    sigma = tf.reshape(tf.cast(sigma, tf.float32), [-1])
    c = 1.0 + tf.math.log(sigma + self.sigma_floor) / (0.5 * math.log(1.0 / self.sigma_floor))
    c = c[:, None]
    freqs = math.pi * 2.0 ** tf.range(self.num_frequencies, dtype=tf.float32)
    return tf.concat([c, tf.sin(c * freqs), tf.cos(c * freqs)], axis=-1)

  def call(self, sigma):
    return self.dense_2(self.dense_1(self.features(sigma)))

  def compute_output_shape(self, sigma_shape):
    return (sigma_shape[0], self.channels)

  def get_config(self):
    config = super().get_config()
    config.update(channels=self.channels, num_frequencies=self.num_frequencies, sigma_floor=self.sigma_floor)
    return config
