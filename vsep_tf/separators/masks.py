"""Masks on the mixture's STFT: ratio (Wiener) masks and their inversion, shared by every mask separator
(the ideal ratio mask oracle, NMF, the spectral-prior separators)."""
from __future__ import annotations

import tensorflow as tf

from vsep_tf import signal as signal_lib
from vsep_tf.data import mixing

EPS = 1e-10


def to_sum_mix(mix, mix_name: str, num_sources: int):
  """The mixture as a plain sum of the sources: a 'mean' mix times N, a 'sum' mix unchanged."""
  mixing.check_mix(mix_name)
  return mix * float(num_sources) if mix_name == "mean" else mix


def ratio_masks(source_specs, power: float = 2.0):
  """M_k = |S_k|^p / sum_j |S_j|^p: complex or magnitude [..., N, frames, bins] -> float32, same shape.

  Bins where every source is 0 get 1 / N (no information: split evenly).
  """
  mags = tf.abs(tf.convert_to_tensor(source_specs))
  mags = tf.cast(mags, tf.float32)
  p = tf.pow(mags, float(power))
  total = tf.reduce_sum(p, axis=-3, keepdims=True)
  n = tf.cast(tf.shape(p)[-3], tf.float32)
  return tf.where(total > EPS, p / tf.maximum(total, EPS), tf.ones_like(p) / n)


def masks_to_sources(masks, spec_mix, n_fft: int, hop: int, length):
  """ISTFT(M_k * X): masks float [..., N, frames, bins], spec_mix complex [..., frames, bins] -> [..., N, T]."""
  masked = tf.cast(masks, tf.complex64) * tf.convert_to_tensor(spec_mix, tf.complex64)[..., None, :, :]
  return signal_lib.istft(masked, n_fft, hop, length=length)
