"""The mixing function f: sources -> mix, shared by every dataset family and separator.

The model of a mix is m = f(s_1, ..., s_N), a fixed linear map chosen per dataset:

  'sum':  m[t] = sum_k s_k[t]          (recorded multitracks: MUSDB18, the chorales)
  'mean': m[t] = (1 / N) sum_k s_k[t]  (the thesis's toy data)

Sources are stacked on axis -2 by convention, [..., N, T] -> [..., T]; stereo data keeps channels last,
[..., N, T, C] -> [..., T, C], with axis=-3. Works on numpy arrays (numpy ops, dtype kept) and on TF
tensors (TF ops, differentiable: the Langevin and variational separators take gradients through it).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

MIXES = ("sum", "mean")


def check_mix(mix: str) -> str:
  """Returns `mix` if it names a mixing function, else raises ValueError."""
  if mix not in MIXES:
    raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
  return mix


def mix_sources(sources, mix: str, axis: int = -2):
  """f(sources): sum or mean over the source axis. sources: [..., N, T] (numpy or TF) -> [..., T]."""
  check_mix(mix)
  if isinstance(sources, np.ndarray):
    return sources.sum(axis=axis) if mix == "sum" else sources.mean(axis=axis, dtype=sources.dtype)
  sources = tf.convert_to_tensor(sources)
  return tf.reduce_sum(sources, axis=axis) if mix == "sum" else tf.reduce_mean(sources, axis=axis)


def equal_split(mix, mix_name: str, num_sources: int):
  """The consistent guess that knows nothing: every source the same share of the mix, [batch, T] ->
  [batch, N, T] with f(split) = mix (sum: mix / N each; mean: the mix itself). TF tensors."""
  check_mix(mix_name)
  mix = tf.convert_to_tensor(mix, tf.float32)
  share = mix if mix_name == "mean" else mix / float(num_sources)
  return tf.repeat(share[:, None], num_sources, axis=1)


def get_mix_fn(mix: str, axis: int = -2) -> Callable:
  """The mixing function as a one-argument callable: fn(sources [..., N, T]) -> [..., T]."""
  check_mix(mix)

  def mix_fn(sources):
    return mix_sources(sources, mix, axis=axis)

  mix_fn.__name__ = f"mix_{mix}"
  return mix_fn
