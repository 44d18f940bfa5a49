r"""STFT / ISTFT as real-valued matrix products: the same transforms as `signal.stft` / `signal.istft`, written
with ops that TFLite runs as builtins (no complex tensors, no FFT op). Used by the TFLite form of the spectral
separators (vsep_tf.export.tflite); tested equal to signal.stft / istft (tests/test_tflite_spectral.py).

A spectrum is a pair (re, im) of float32 [..., frames, bins], bins = fft_length // 2 + 1.

Real DFT by half-size bases. With N = fft_length (even), H = N / 2 and a frame f[0 .. N-1]:

    e[n] = f[n] + f[N - n]  (0 < n < H),  e[0] = f[0],  e[H] = f[H]        (even part, [H + 1])
    o[n] = f[n] - f[N - n]  (0 < n < H)                                       (odd part, [H - 1])
    Re X = e C,   Im X[1 .. H-1] = -o S,   Im X[0] = Im X[H] = 0

with C[n, k] = cos(2 pi n k / N) (n, k = 0 .. H) and S[n, k] = sin(2 pi n k / N) (n, k = 1 .. H-1): half the
multiply-adds of a full [N, N + 2] DFT matrix. Both matrices are symmetric, so the inverse uses the same two:

    a = (g Re X) C,  b = (2 Im X[1 .. H-1]) S,  g = (1, 2, ..., 2, 1)
    y[n] = (a[n] - b[n]) / N  (n = 0 .. H, b[0] = b[H] = 0),   y[N - n] = (a[n] + b[n]) / N  (0 < n < H)

(irfft's convention: the imaginary parts of bins 0 and H are ignored). C and S are computed in the graph from
integer ranges, cos / sin of 2 pi ((n k) mod N) / N, not stored: a model file does not carry them (band: 2 x 4 M
floats), TFLite's quantisers do not touch them (they are not weights), and they are exact to float32 rounding.

Framing and overlap-add with hop | frame_length (every shipped model: 4096 / 1024, 1024 / 256) are slices,
concatenations, pads and reshapes; otherwise tf.signal.frame / overlap_and_add (not every TFLite runtime has
their ops).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from vsep_tf import signal as signal_lib


def _check(frame_length, frame_step, fft_length):
  signal_lib._check_stft_args(frame_length, frame_step, fft_length)  # pylint: disable=protected-access
  if fft_length % 2:
    raise ValueError(f"the real-DFT STFT needs an even fft_length, got {fft_length}")


def hann(frame_length: int) -> np.ndarray:
  """signal._hann as numpy float32 (computed in float64): sin^2(pi n / N)."""
  return (np.sin(np.pi * np.arange(frame_length) / frame_length) ** 2).astype(np.float32)


def dft_bases(fft_length: int, zero=None):
  """(C [H + 1, H + 1], S [H - 1, H - 1]) float32 (module docstring), computed by ops from integer ranges.

  zero: an int32 scalar tensor that is 0 when the graph runs but that a converter cannot evaluate (e.g.
  min(dynamic batch size, 0)), added to the ranges. Without it a graph converter folds the bases into constants
  (TFLite's did: a model file 4 x larger for n_fft = 4096, whose dynamic-range variant then quantised the DFT
  to int8); with it they are computed on every call (cos / sin of H^2 + (H - 1)^2 angles, milliseconds)."""
  n, h = int(fft_length), int(fft_length) // 2
  k = tf.range(h + 1, dtype=tf.int32)
  if zero is not None:
    k = k + tf.cast(zero, tf.int32)
  phase = tf.math.floormod(k[:, None] * k[None, :], n)             # exact: (n k) mod N, H^2 < 2^31
  angle = tf.cast(phase, tf.float32) * (2.0 * math.pi / n)
  return tf.cos(angle), tf.sin(angle[1:h, 1:h])


def _matmul_last(x, m):
  """x [..., a] @ m [a, b] -> [..., b] (one 2-D matmul: TFLite's FULLY_CONNECTED / BATCH_MATMUL)."""
  shape = tf.shape(x)
  y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), m)
  return tf.reshape(y, tf.concat([shape[:-1], [m.shape[-1]]], 0))


def frame(x, frame_length: int, hop: int):
  """x [..., T] -> [..., 1 + (T - frame_length) // hop, frame_length] (no padding: tf.signal.frame's)."""
  if frame_length % hop:
    return tf.signal.frame(x, frame_length, hop, pad_end=False)
  r = frame_length // hop
  t = x.shape[-1]
  if t is None:
    raise ValueError("frame: the time axis must be static")
  frames = 1 + (t - frame_length) // hop
  blocks = tf.reshape(x[..., :(frames + r - 1) * hop], tf.concat([tf.shape(x)[:-1], [frames + r - 1, hop]], 0))
  return tf.concat([blocks[..., i:i + frames, :] for i in range(r)], axis=-1)


def overlap_add(frames, hop: int):
  """frames [..., F, N] -> [..., (F - 1) hop + N] (signal.overlap_and_add; F static when hop divides N)."""
  if frames.shape[-1] % hop == 0 and frames.shape[-2] is None:
    raise ValueError("overlap_add: the frames axis must be static")
  return signal_lib.overlap_and_add(frames, hop)


def rdft(frames, fft_length: int, bases=None):
  """Real DFT of frames [..., N] (N = fft_length) -> (re, im) [..., N / 2 + 1]."""
  n, h = int(fft_length), int(fft_length) // 2
  c, s = dft_bases(n) if bases is None else bases
  rev = tf.reverse(frames[..., h + 1:], axis=[-1])                            # f[N - n], n = H-1 .. 1 -> 1 .. H-1
  mid = frames[..., 1:h]
  even = tf.concat([frames[..., :1], mid + rev, frames[..., h:h + 1]], axis=-1)
  odd = mid - rev
  re = _matmul_last(even, c)
  im_mid = -_matmul_last(odd, s)
  zero = tf.zeros_like(re[..., :1])
  return re, tf.concat([zero, im_mid, zero], axis=-1)


def irdft(re, im, fft_length: int, bases=None):
  """Inverse real DFT (tf.signal.irfft's): (re, im) [..., N / 2 + 1] -> [..., N]."""
  n, h = int(fft_length), int(fft_length) // 2
  c, s = dft_bases(n) if bases is None else bases
  gain = np.full([h + 1], 2.0 / n, np.float32)
  gain[0] = gain[h] = 1.0 / n
  a = _matmul_last(re * gain, c)                                               # [..., H + 1]
  b = _matmul_last(im[..., 1:h] * (2.0 / n), s)                                # [..., H - 1]
  zero = tf.zeros_like(a[..., :1])
  first = a - tf.concat([zero, b, zero], axis=-1)                              # y[0 .. H]
  second = tf.reverse(a[..., 1:h] + b, axis=[-1])                              # y[H+1 .. N-1]
  return tf.concat([first, second], axis=-1)


def stft(x, frame_length: int = 1024, frame_step: int = 256, fft_length=None, center: bool = True, bases=None):
  """signal.stft as (re, im), float32 [..., frames, bins]. x [..., T] needs a static T."""
  fft_length = frame_length if fft_length is None else fft_length
  _check(frame_length, frame_step, fft_length)
  x = tf.convert_to_tensor(x, tf.float32)
  t = x.shape[-1]
  if t is None:
    raise ValueError("signal_dft.stft: the time axis must be static")
  rank = len(x.shape)
  if center:
    half = frame_length // 2
    padded = t + 2 * half
    extra = (-(padded - frame_length)) % frame_step
    x = tf.pad(x, [[0, 0]] * (rank - 1) + [[half, half + extra]])
  frames = frame(x, frame_length, frame_step) * hann(frame_length)
  if fft_length > frame_length:
    frames = tf.pad(frames, [[0, 0]] * rank + [[0, fft_length - frame_length]])
  return rdft(frames, fft_length, bases)


def istft(re, im, frame_length: int = 1024, frame_step: int = 256, fft_length=None, center: bool = True,
          length=None, bases=None):
  """signal.istft of (re, im) [..., frames, bins] (static frames) -> float32 [..., time]."""
  fft_length = frame_length if fft_length is None else fft_length
  _check(frame_length, frame_step, fft_length)
  num_frames = re.shape[-2]
  if num_frames is None:
    raise ValueError("signal_dft.istft: the frames axis must be static")
  w = hann(frame_length)
  frames = irdft(re, im, fft_length, bases)[..., :frame_length] * w
  y = overlap_add(frames, frame_step)
  # The normaliser sum_m w^2(t - m hop) is fixed by the (static) number of frames: a constant.
  den = np.zeros([(num_frames - 1) * frame_step + frame_length], np.float64)
  for m in range(num_frames):
    den[m * frame_step:m * frame_step + frame_length] += w.astype(np.float64) ** 2
  den = den.astype(np.float32).astype(np.float64)  # as signal.istft sums it: in float32
  inv = np.where(den > 0, 1.0 / np.maximum(den, 1e-30), 0.0).astype(np.float32)
  start = frame_length // 2 if center else 0
  if length is None:
    length = (num_frames - 1) * frame_step if center else den.shape[0]
  stop = min(start + int(length), den.shape[0])
  return y[..., start:stop] * inv[start:stop]
