"""One-pass evaluation of a `tfb.Chain` together with its log-det.

`chain.forward(x)` followed by `chain.forward_log_det_jacobian(x)` walks the chain twice; TFP's cache holds the
intermediate outputs only weakly, so in eager mode they are gone by the second walk and every coupling network runs
twice. These helpers walk once, keeping each intermediate alive while its log-det is read from the cache, with the
same per-bijector conditional kwargs as the Chain: `{bijector.name: {"conditioning": e}}`.
"""
from __future__ import annotations

import tensorflow_probability as tfp

tfb = tfp.bijectors


def forward_and_log_det(chain, x, **kwargs_by_name):
  """(chain.forward(x), chain.forward_log_det_jacobian(x, event_ndims=2)) in one pass.

  chain: a tfb.Chain whose bijectors all have event ndims 2 ([time, channels]); x: [batch, T, C].
  Returns (y [batch, T', C'], log_det [batch])."""
  log_det = 0.0
  for b in reversed(chain.bijectors):  # a Chain applies its last bijector first
    kw = kwargs_by_name.get(b.name, {})
    y = b.forward(x, **kw)
    log_det = log_det + b.forward_log_det_jacobian(x, event_ndims=2, **kw)
    x = y
  return x, log_det


def inverse_and_log_det(chain, y, **kwargs_by_name):
  """(chain.inverse(y), chain.inverse_log_det_jacobian(y, event_ndims=2)) in one pass: (x, log_det [batch])."""
  log_det = 0.0
  for b in chain.bijectors:
    kw = kwargs_by_name.get(b.name, {})
    x = b.inverse(y, **kw)
    log_det = log_det + b.inverse_log_det_jacobian(y, event_ndims=2, **kw)
    y = x
  return y, log_det
