"""Invertible 1x1 convolution (Glow) in the LU parameterisation, on [batch, time, channels].

    W = P L (U + diag(sign_s * exp(log_s)))

P: a fixed permutation matrix; L: unit lower triangular (learned strictly-lower entries); U: strictly upper
triangular (learned); sign_s: fixed signs; log_s: learned log|diagonal|. Then log|det W| = sum(log_s) exactly, and
the inverse needs only two triangular solves. Initialised from a random orthogonal matrix (log|det| = 0).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors


def lu_decompose(a):
  """LU with partial pivoting of a square float64 matrix: a = P @ L @ U.

  Returns (P [n, n] permutation matrix, L [n, n] unit lower triangular, U [n, n] upper triangular)."""
  a = np.asarray(a, dtype=np.float64)
  n = a.shape[0]
  u = a.copy()
  lower = np.eye(n)
  perm = np.arange(n)
  for k in range(n - 1):
    pivot = k + int(np.argmax(np.abs(u[k:, k])))
    if pivot != k:
      u[[k, pivot], :] = u[[pivot, k], :]
      lower[[k, pivot], :k] = lower[[pivot, k], :k]
      perm[[k, pivot]] = perm[[pivot, k]]
    for j in range(k + 1, n):
      lower[j, k] = u[j, k] / u[k, k]
      u[j, k:] -= lower[j, k] * u[k, k:]
      u[j, k] = 0.0
  # Row i of L @ U is row perm[i] of a, so a = P @ L @ U with P[perm[i], i] = 1.
  p = np.eye(n)[:, perm]
  return p, lower, u


def random_orthogonal_lu(channels, seed=None):
  """Glow's initialisation: a random orthogonal matrix [C, C], LU-decomposed.

  Returns float32 numpy arrays (P [C, C], lower [C, C] unit lower, upper [C, C] strictly upper, sign_s [C],
  log_s [C]) with P @ lower @ (upper + diag(sign_s * exp(log_s))) orthogonal."""
  rng = np.random.default_rng(seed)
  q, r = np.linalg.qr(rng.standard_normal((channels, channels)))
  q = q * np.sign(np.diag(r))[None, :]  # Haar-distributed orthogonal
  p, lower, upper = lu_decompose(q)
  s = np.diag(upper)
  return (p.astype(np.float32), lower.astype(np.float32), np.triu(upper, 1).astype(np.float32),
          np.sign(s).astype(np.float32), np.log(np.abs(s)).astype(np.float32))


class InvertibleConv1x1(tfb.Bijector):
  """Channel mixing y[b, t, :] = W x[b, t, :] with W = P L (U + diag(sign_s * exp(log_s))) [C, C].

      log|det dy/dx| = T * sum(log_s)          (per example: [batch])

  Args (tensors): permutation [C, C]; lower [C, C] (only the strictly-lower part is used, unit diagonal implied);
  upper [C, C] (only the strictly-upper part is used); sign_s [C]; log_s [C]. Event ndims 2 ([time, channels]).
  """

  def __init__(self, permutation, lower, upper, sign_s, log_s, validate_args=False, name="invertible_conv1x1"):
    parameters = dict(locals())
    self._permutation = tf.convert_to_tensor(permutation, dtype_hint=tf.float32)
    dtype = self._permutation.dtype
    self._lower = tf.convert_to_tensor(lower, dtype=dtype)
    self._upper = tf.convert_to_tensor(upper, dtype=dtype)
    self._sign_s = tf.convert_to_tensor(sign_s, dtype=dtype)
    self._log_s = tf.convert_to_tensor(log_s, dtype=dtype)
    super().__init__(forward_min_event_ndims=2, is_constant_jacobian=True, validate_args=validate_args,
                     parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return {}

  @property
  def log_s(self):
    return self._log_s

  def _factors(self):
    """(L unit lower, U' = U + diag(sign_s exp(log_s)) upper), both [C, C]."""
    eye = tf.eye(tf.shape(self._log_s)[0], dtype=self._log_s.dtype)
    lower = tf.linalg.band_part(self._lower, -1, 0) * (1.0 - eye) + eye
    upper = (tf.linalg.band_part(self._upper, 0, -1) * (1.0 - eye)
             + tf.linalg.diag(self._sign_s * tf.exp(self._log_s)))
    return lower, upper

  def weight(self):
    """W [C, C]."""
    lower, upper = self._factors()
    return self._permutation @ lower @ upper

  def inverse_weight(self):
    """W^-1 = U'^-1 L^-1 P^T [C, C], by two triangular solves."""
    lower, upper = self._factors()
    eye = tf.eye(tf.shape(self._log_s)[0], dtype=self._log_s.dtype)
    inv_lower = tf.linalg.triangular_solve(lower, eye, lower=True)
    inv_upper = tf.linalg.triangular_solve(upper, eye, lower=False)
    return inv_upper @ inv_lower @ tf.transpose(self._permutation)

  def _forward(self, x):
    return tf.einsum("...tc,dc->...td", x, self.weight())

  def _inverse(self, y):
    return tf.einsum("...tc,dc->...td", y, self.inverse_weight())

  def _forward_log_det_jacobian(self, x):
    t = tf.cast(tf.shape(x)[-2], x.dtype)
    return tf.fill(tf.shape(x)[:-2], t * tf.reduce_sum(self._log_s))

  def _inverse_log_det_jacobian(self, y):
    t = tf.cast(tf.shape(y)[-2], y.dtype)
    return tf.fill(tf.shape(y)[:-2], -t * tf.reduce_sum(self._log_s))


@keras.saving.register_keras_serializable(package="vsep_tf")
class InvertibleConv1x1Layer(keras.layers.Layer):
  """Owns the LU weights of one 1x1 convolution over `channels` (>= 2).

  Trainable: lower_entries [C(C-1)/2], upper_entries [C(C-1)/2], log_s [C]. Fixed (non-trainable, saved):
  permutation [C, C], sign_s [C]. Initialised from a random orthogonal matrix drawn with `seed`."""

  def __init__(self, channels, seed=0, **kwargs):
    super().__init__(**kwargs)
    self.channels = int(channels)
    self.seed = int(seed)
    if self.channels < 2:
      raise ValueError(f"InvertibleConv1x1Layer needs >= 2 channels, got {channels}.")
    c = self.channels
    p, lower, upper, sign_s, log_s = random_orthogonal_lu(c, self.seed)
    self._lower_idx = np.stack(np.tril_indices(c, -1), axis=1).astype(np.int32)
    self._upper_idx = np.stack(np.triu_indices(c, 1), axis=1).astype(np.int32)
    n = c * (c - 1) // 2
    self.permutation = self.add_weight(shape=(c, c), initializer="zeros", trainable=False, name="permutation")
    self.sign_s = self.add_weight(shape=(c,), initializer="zeros", trainable=False, name="sign_s")
    self.lower_entries = self.add_weight(shape=(n,), initializer="zeros", name="lower_entries")
    self.upper_entries = self.add_weight(shape=(n,), initializer="zeros", name="upper_entries")
    self.log_s = self.add_weight(shape=(c,), initializer="zeros", name="log_s")
    self.permutation.assign(p)
    self.sign_s.assign(sign_s)
    self.lower_entries.assign(lower[tuple(self._lower_idx.T)])
    self.upper_entries.assign(upper[tuple(self._upper_idx.T)])
    self.log_s.assign(log_s)
    self.built = True

  def bijector(self, name="invertible_conv1x1"):
    """An InvertibleConv1x1 bijector on the weights' current values (gradients flow to the weights)."""
    c = self.channels
    lower = tf.scatter_nd(self._lower_idx, tf.convert_to_tensor(self.lower_entries), [c, c])
    upper = tf.scatter_nd(self._upper_idx, tf.convert_to_tensor(self.upper_entries), [c, c])
    return InvertibleConv1x1(tf.convert_to_tensor(self.permutation), lower, upper,
                             tf.convert_to_tensor(self.sign_s), tf.convert_to_tensor(self.log_s), name=name)

  def call(self, x):
    return self.bijector().forward(x)

  def get_config(self):
    config = super().get_config()
    config.update(channels=self.channels, seed=self.seed)
    return config
