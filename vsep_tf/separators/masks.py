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


def misi(masks, spec_mix, mix, n_fft: int, hop: int, length, iterations: int):
  """Masked estimates refined by multiple input spectrogram inversion (MISI; Gunawan & Sen 2010): [..., N, T].

  Starts from masks_to_sources; each of `iterations` rounds shares the mixture error equally among the N
  sources, takes the STFT of every source and keeps its phase but sets its magnitude back to the masked one,
  |M_k X|, then inverts. The masked STFTs M_k X are not consistent (no signal has them as its STFT); the rounds
  move each estimate towards a signal whose STFT has the masked magnitude. A last error share makes the
  estimates add up to `mix` exactly. masks [..., N, frames, bins], spec_mix complex [..., frames, bins] (the STFT
  of `mix`), mix [..., T] (a sum of the sources: to_sum_mix). iterations=0: masks_to_sources."""
  estimates = masks_to_sources(masks, spec_mix, n_fft, hop, length)
  if int(iterations) <= 0:
    return estimates
  mix = tf.convert_to_tensor(mix, tf.float32)[..., None, :]
  num_sources = tf.cast(tf.shape(estimates)[-2], tf.float32)
  target = tf.abs(tf.cast(masks, tf.complex64) * tf.convert_to_tensor(spec_mix, tf.complex64)[..., None, :, :])

  def share_error(y):
    return y + (mix - tf.reduce_sum(y, axis=-2, keepdims=True)) / num_sources

  def body(i, y):
    spec = signal_lib.stft(share_error(y), n_fft, hop)
    scale = target / tf.maximum(tf.abs(spec), EPS)
    out = signal_lib.istft(spec * tf.cast(scale, tf.complex64), n_fft, hop, length=length)
    out.set_shape(y.shape)  # a static length (an export's chunk) stays static through the loop
    return i + 1, out

  _, estimates = tf.while_loop(lambda i, _: i < int(iterations), body, (tf.constant(0), estimates))
  return share_error(estimates)
