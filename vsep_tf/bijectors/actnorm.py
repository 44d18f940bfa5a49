"""ActNorm (Glow): a per-channel affine map with data-dependent initialisation.

The TFP bijector holds no variables: it is built from the current values of the weights owned by the Keras 3 layer
`ActNormLayer` (call `layer.bijector()` inside the function that needs gradients; it is a cheap Python object).
"""
from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors


class ActNorm(tfb.Bijector):
  """Per-channel affine normalisation on [batch, time, channels]:

      y[b, t, c] = (x[b, t, c] + loc[c]) * exp(log_scale[c])
      log|det dy/dx| = T * sum_c log_scale[c]          (per example: [batch])

  loc, log_scale: [C] tensors, or [T, C] for a per-element affine map (log|det| = sum_{t,c} log_scale[t, c]).
  Event ndims 2 ([time, channels]). Forward is data -> latent.
  """

  def __init__(self, loc, log_scale, validate_args=False, name="act_norm"):
    parameters = dict(locals())
    self._loc = tf.convert_to_tensor(loc, dtype_hint=tf.float32)
    self._log_scale = tf.convert_to_tensor(log_scale, dtype=self._loc.dtype)
    super().__init__(forward_min_event_ndims=2, is_constant_jacobian=True, validate_args=validate_args,
                     parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return {}

  @property
  def loc(self):
    return self._loc

  @property
  def log_scale(self):
    return self._log_scale

  def _forward(self, x):
    return (x + self._loc) * tf.exp(self._log_scale)

  def _inverse(self, y):
    return y * tf.exp(-self._log_scale) - self._loc

  def _log_det(self, x):
    """sum of log_scale broadcast over one event [T, C] (T * sum for per-channel parameters)."""
    return tf.reduce_sum(tf.broadcast_to(self._log_scale, tf.shape(x)[-2:]))

  def _forward_log_det_jacobian(self, x):
    return tf.fill(tf.shape(x)[:-2], self._log_det(x))

  def _inverse_log_det_jacobian(self, y):
    return tf.fill(tf.shape(y)[:-2], -self._log_det(y))


def actnorm_init_values(x, min_std=1e-3):
  """Data-dependent ActNorm parameters: loc = -mean, log_scale = -log(max(std, min_std)), per channel over
  batch and time, so that ActNorm(loc, log_scale) maps the batch x [batch, time, C] to zero mean and unit variance
  in every channel (min_std keeps a silent channel from getting an enormous scale). Returns (loc, log_scale): [C]."""
  x = tf.convert_to_tensor(x)
  mean, var = tf.nn.moments(x, axes=list(range(x.shape.rank - 1)))
  std = tf.maximum(tf.sqrt(var), min_std)
  return -mean, -tf.math.log(std)


@keras.saving.register_keras_serializable(package="vsep_tf")
class ActNormLayer(keras.layers.Layer):
  """Owns ActNorm's weights loc [C] and log_scale [C] (both start at 0: identity until `initialize`)."""

  def __init__(self, channels, min_std=1e-3, **kwargs):
    super().__init__(**kwargs)
    self.channels = int(channels)
    self.min_std = float(min_std)
    self.loc = self.add_weight(shape=(self.channels,), initializer="zeros", name="loc")
    self.log_scale = self.add_weight(shape=(self.channels,), initializer="zeros", name="log_scale")
    self.built = True

  def bijector(self, name="act_norm"):
    """An ActNorm bijector on the weights' current values (gradients flow to the weights)."""
    return ActNorm(tf.convert_to_tensor(self.loc), tf.convert_to_tensor(self.log_scale), name=name)

  def initialize(self, x):
    """Data-dependent init on the batch x [batch, time, C]; assigns and returns (loc, log_scale)."""
    loc, log_scale = actnorm_init_values(x, self.min_std)
    self.loc.assign(loc)
    self.log_scale.assign(log_scale)
    return loc, log_scale

  def call(self, x):
    return self.bijector().forward(x)

  def get_config(self):
    config = super().get_config()
    config.update(channels=self.channels, min_std=self.min_std)
    return config
