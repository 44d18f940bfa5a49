"""Conditional affine coupling (RealNVP / Glow / FloWaveNet) on [batch, time, channels].

Split the channels: x = [x_a, x_b] with x_a the first `num_masked` channels (default C // 2). A network sees x_a
and the conditioning (the noise-level embedding) and returns (shift, raw) [batch, T, C - num_masked]:

    log_s = clamp * tanh(raw / clamp)                       (soft clamp, |log_s| < clamp)
    y_a = x_a,   y_b = x_b * exp(log_s) + shift
    log|det dy/dx| = sum_{t, c} log_s[b, t, c]               ([batch])
    inverse: x_b = (y_b - shift) * exp(-log_s)

Choice of scale: exp(soft-clamped log_s), not Glow's sigmoid(h + 2).
  * With a zero-initialised last layer, raw = 0 gives scale exactly 1 and shift 0: the coupling starts as the EXACT
    identity (sigmoid(0 + 2) = 0.88 would start as a contraction).
  * It can expand as well as contract; sigmoid only contracts (log-det <= 0 per coupling). Sharp (low-noise) audio
    densities need couplings that expand some directions.
  * Bounded: every coupling changes the log-density by at most `clamp` nats per coordinate, both directions are
    Lipschitz with constant <= e^clamp, so neither training (forward) nor sampling (inverse) can overflow; tanh has
    slope 1 at 0, so near the identity it behaves like the plain exp parameterisation.

Conditioning goes through TFP's conditional-bijector kwargs: `b.forward(x, conditioning=e)`, or inside a
`tfb.Chain`: `chain.forward(x, **{b.name: {"conditioning": e}})`.

The network is evaluated once per forward (or inverse) and input: forward and its log-det are computed together and
stored in TFP's bijector cache (the mechanism TFP's own FFJORD uses), so `forward` followed by
`forward_log_det_jacobian` on the same tensor, by the same instance, runs the network once (log-det first, then
forward, runs it twice). A `tfb.Chain` loses its intermediates between the two calls in eager mode: use
`vsep_tf.bijectors.forward_and_log_det` for one pass. Each instance is its own transform for TFP's cache (the
network's weights are mutable), so a coupling built after a weight update never returns stale cached values.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

tfb = tfp.bijectors


class AffineCoupling(tfb.Bijector):
  """Conditional affine coupling; see the module docstring for the maths.

  Args:
    shift_and_log_scale_fn: callable (x_a [batch, T, num_masked], conditioning) -> (shift, raw_log_scale), each
      [batch, T, C - num_masked]. A Keras 3 layer (its weights stay owned by the Keras model), e.g.
      `CouplingWaveNet` or `SplitPriorNet`. Its last layer should be zero-initialised (identity at init).
    num_masked: channels passed through unchanged (x_a); default C // 2 of the input.
    log_scale_clamp: bound on |log_s| (see above); None or 0 disables the clamp (plain exp).
  Event ndims 2 ([time, channels]); conditional kwarg `conditioning` (anything the network accepts).
  """

  _cache = cache_util.BijectorCacheWithGreedyAttrs(forward_name="_augmented_forward",
                                                   inverse_name="_augmented_inverse")

  def __init__(self, shift_and_log_scale_fn, num_masked=None, log_scale_clamp=2.0, validate_args=False,
               name="affine_coupling"):
    parameters = dict(locals())
    self._fn = shift_and_log_scale_fn
    self._num_masked = None if num_masked is None else int(num_masked)
    self._clamp = float(log_scale_clamp) if log_scale_clamp else None
    super().__init__(forward_min_event_ndims=2, validate_args=validate_args, parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return {}

  def _get_parameterization(self):
    # TFP compares (and caches across) bijectors with equal parameters. The network is mutable state: the same
    # callable computes another function once its weights are updated, so every instance is its own transform.
    return id(self)

  @property
  def shift_and_log_scale_fn(self):
    return self._fn

  def _split(self, x):
    c = x.shape[-1]
    if c is None:
      raise ValueError("AffineCoupling needs a static channel dimension.")
    k = c // 2 if self._num_masked is None else self._num_masked
    if not 0 < k < c:
      raise ValueError(f"AffineCoupling: cannot mask {k} of {c} channels.")
    return x[..., :k], x[..., k:]

  def _params(self, x_a, conditioning):
    shift, raw = self._fn(x_a, conditioning)
    log_s = raw if self._clamp is None else self._clamp * tf.tanh(raw / self._clamp)
    return shift, log_s

  def _augmented_forward(self, x, conditioning=None):
    """(y, {'fldj': [batch], 'ildj': [batch]}) in one network evaluation."""
    x_a, x_b = self._split(x)
    shift, log_s = self._params(x_a, conditioning)
    y = tf.concat([x_a, x_b * tf.exp(log_s) + shift], axis=-1)
    fldj = tf.reduce_sum(log_s, axis=[-2, -1])
    return y, {"fldj": fldj, "ildj": -fldj}

  def _augmented_inverse(self, y, conditioning=None):
    y_a, y_b = self._split(y)
    shift, log_s = self._params(y_a, conditioning)
    x = tf.concat([y_a, (y_b - shift) * tf.exp(-log_s)], axis=-1)
    fldj = tf.reduce_sum(log_s, axis=[-2, -1])
    return x, {"fldj": fldj, "ildj": -fldj}

  def _forward(self, x, conditioning=None):
    return self._augmented_forward(x, conditioning)[0]

  def _inverse(self, y, conditioning=None):
    return self._augmented_inverse(y, conditioning)[0]

  def _forward_log_det_jacobian(self, x, conditioning=None):
    cached = self._cache.forward_attributes(x, **_kwargs(conditioning))
    if "fldj" not in cached:
      cached.update(self._augmented_forward(x, conditioning)[1])
    return cached["fldj"]

  def _inverse_log_det_jacobian(self, y, conditioning=None):
    cached = self._cache.inverse_attributes(y, **_kwargs(conditioning))
    if "ildj" not in cached:
      cached.update(self._augmented_inverse(y, conditioning)[1])
    return cached["ildj"]


def _kwargs(conditioning):
  """The kwargs TFP keyed its cache entry with (none when the bijector was called without conditioning)."""
  return {} if conditioning is None else {"conditioning": conditioning}
