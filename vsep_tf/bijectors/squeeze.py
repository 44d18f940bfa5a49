"""Squeeze: fold time into channels, the multi-scale step of Glow / FloWaveNet.

Direction convention of every bijector in this package: `forward` is the NORMALISING direction, data -> latent
(x -> z, as written in the Glow and FloWaveNet papers); `inverse` generates. Wrap in `tfb.Invert` to use one as the
bijector of a `tfd.TransformedDistribution` (which maps base -> data with `forward`).
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors


def _dims(x):
  """[..., T, C] -> (leading dims as a list of ints/scalar tensors, T, C); static Python ints where known."""
  static = x.shape.as_list()
  dynamic = tf.shape(x)
  dims = [s if s is not None else dynamic[i] for i, s in enumerate(static)]
  return dims[:-2], dims[-2], dims[-1]


class Squeeze(tfb.Bijector):
  """Time -> channels by `factor`: [batch, T, C] -> [batch, T / factor, factor * C].

      y[b, t, k * C + c] = x[b, factor * t + k, c],      k = 0 .. factor - 1

  i.e. a plain row-major reshape, so the first C output channels hold the samples at phase 0, the next C at phase 1,
  and so on. A permutation of the coordinates: log|det J| = 0. Event ndims 2 ([time, channels]); any leading batch
  dims. T must be divisible by `factor` (ValueError when the length is static, an assertion under validate_args).
  """

  def __init__(self, factor=2, validate_args=False, name="squeeze"):
    parameters = dict(locals())
    if int(factor) < 1:
      raise ValueError(f"Squeeze factor must be >= 1, got {factor}.")
    self._factor = int(factor)
    super().__init__(forward_min_event_ndims=2, inverse_min_event_ndims=2, is_constant_jacobian=True,
                     validate_args=validate_args, parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return {}

  @property
  def factor(self):
    return self._factor

  def _check_time(self, t):
    if isinstance(t, int):
      if t % self._factor:
        raise ValueError(f"Squeeze: time length {t} is not divisible by the squeeze factor {self._factor}.")
      return []
    if self.validate_args:
      return [tf.debugging.assert_equal(t % self._factor, 0,
                                        message=f"Squeeze: time length not divisible by {self._factor}.")]
    return []

  def _forward(self, x):
    lead, t, c = _dims(x)
    with tf.control_dependencies(self._check_time(t)):
      return tf.reshape(x, lead + [t // self._factor, c * self._factor])

  def _inverse(self, y):
    lead, t, c = _dims(y)
    if isinstance(c, int) and c % self._factor:
      raise ValueError(f"Squeeze inverse: {c} channels are not divisible by the squeeze factor {self._factor}.")
    return tf.reshape(y, lead + [t * self._factor, c // self._factor])

  def _forward_log_det_jacobian(self, x):
    return tf.zeros(tf.shape(x)[:-2], dtype=x.dtype)

  def _inverse_log_det_jacobian(self, y):
    return tf.zeros(tf.shape(y)[:-2], dtype=y.dtype)

  # Event shapes change ([T, C] -> [T/f, f*C]); TFP needs both static and dynamic versions.
  def _forward_event_shape(self, input_shape):
    t, c = input_shape[-2], input_shape[-1]
    return input_shape[:-2].concatenate([None if t is None else t // self._factor,
                                         None if c is None else c * self._factor])

  def _inverse_event_shape(self, output_shape):
    t, c = output_shape[-2], output_shape[-1]
    return output_shape[:-2].concatenate([None if t is None else t * self._factor,
                                          None if c is None else c // self._factor])

  def _forward_event_shape_tensor(self, input_shape):
    return tf.concat([input_shape[:-2], [input_shape[-2] // self._factor, input_shape[-1] * self._factor]], 0)

  def _inverse_event_shape_tensor(self, output_shape):
    return tf.concat([output_shape[:-2], [output_shape[-2] * self._factor, output_shape[-1] // self._factor]], 0)
