"""Pure TF signal functions (float32): mu-law, STFT/ISTFT, framing and overlap-add, SI-SDR.

Waveforms have time on the LAST axis: `[..., time]` (e.g. `[batch, time]`), linear amplitude in [-1, 1].
Spectrograms are `[..., frames, bins]` with bins = fft_length // 2 + 1.
"""
from __future__ import annotations

import math

import tensorflow as tf

# ---------------------------------------------------------------------------------------------------------
# mu-law
# ---------------------------------------------------------------------------------------------------------


def mu_law_encode(x, mu: int = 255, quantize: bool = False):
  """mu-law companding. x: [...] float, clipped to [-1, 1].

  Continuous:  y = sign(x) * log(1 + mu |x|) / log(1 + mu), in [-1, 1], float32 [...].
  quantize:    q = floor((y + 1) / 2 * mu + 1/2), int32 [...] in {0, ..., mu} (mu + 1 levels; 0 -> mu / 2
               rounded up).
  Note: for separation by sampling, priors must model linear amplitude (mu-law breaks x = sum of sources).
  """
  x = tf.clip_by_value(tf.convert_to_tensor(x, tf.float32), -1.0, 1.0)
  mu_f = tf.constant(float(mu), tf.float32)
  y = tf.sign(x) * tf.math.log1p(mu_f * tf.abs(x)) / tf.math.log1p(mu_f)
  if not quantize:
    return y
  return tf.cast(tf.floor((y + 1.0) / 2.0 * mu_f + 0.5), tf.int32)


def mu_law_decode(y, mu: int = 255, quantized: bool = False):
  """Inverse of mu_law_encode: x = sign(y) * ((1 + mu)^|y| - 1) / mu, float32 [...] in [-1, 1].

  quantized: y holds integer levels q in {0, ..., mu}, first mapped to y = 2 q / mu - 1.
  The quantised round trip is off by at most half a level: |dx| <= (1 + mu)^|y| log(1 + mu) / mu^2.
  """
  mu_f = tf.constant(float(mu), tf.float32)
  if quantized:
    y = 2.0 * tf.cast(y, tf.float32) / mu_f - 1.0
  y = tf.clip_by_value(tf.convert_to_tensor(y, tf.float32), -1.0, 1.0)
  return tf.sign(y) * tf.math.expm1(tf.abs(y) * tf.math.log1p(mu_f)) / mu_f


# ---------------------------------------------------------------------------------------------------------
# Framing and overlap-add
# ---------------------------------------------------------------------------------------------------------


def num_frames(time, frame_length: int, hop: int):
  """Frames that `frame` cuts from `time` samples: 1 + ceil(max(time - frame_length, 0) / hop)."""
  return 1 + (tf.maximum(time - frame_length, 0) + hop - 1) // hop


def frame(x, frame_length: int, hop: int):
  """Cuts [..., time] into overlapping frames [..., frames, frame_length], frame i = x[i hop : i hop + N].

  The end is zero-padded so that every sample lies in a frame (frames = num_frames(time, N, hop)) and no
  frame is all padding. Inverse: overlap_add(frames, hop, window, length=time).
  """
  _check_hop(frame_length, hop)
  x = tf.convert_to_tensor(x, tf.float32)
  time = tf.shape(x)[-1]
  n = num_frames(time, frame_length, hop)
  pad = (n - 1) * hop + frame_length - time
  paddings = tf.concat([tf.zeros([tf.rank(x) - 1, 2], tf.int32), [[0, pad]]], axis=0)
  return tf.signal.frame(tf.pad(x, paddings), frame_length, hop, pad_end=False)


def chunk_weights(frame_length: int, hop: int):
  """Cross-fade window for chunked processing, float32 [frame_length], all weights > 0.

  Flat 1 in the middle, raised-sine ramps of r = min(frame_length - hop, frame_length // 2) samples at
  both ends: ramp[i] = sin^2(pi / 2 * (i + 1/2) / r). Ramps of consecutive chunks cross-fade to a constant
  (sin^2 + cos^2 = 1) when r = frame_length - hop, and the weights never reach 0, so overlap_add's
  normalisation by the summed weights is defined everywhere, also at the ends of the signal.
  """
  _check_hop(frame_length, hop)
  r = min(frame_length - hop, frame_length // 2)
  if r <= 0:
    return tf.ones([frame_length], tf.float32)
  ramp = tf.sin(0.5 * math.pi * (tf.range(r, dtype=tf.float32) + 0.5) / r) ** 2
  return tf.concat([ramp, tf.ones([frame_length - 2 * r], tf.float32), ramp[::-1]], axis=0)


def overlap_and_add(frames, hop: int):
  """frames [..., F, N] -> [..., (F - 1) hop + N]: sum_m frames[m] placed at m hop (tf.signal.overlap_and_add's
  result). When hop divides N (every STFT here: 4096 / 1024, 1024 / 256) each frame is r = N / hop blocks and
  the sum is r shifted pads of them: pads, adds and reshapes, 2-3x faster on a CPU than tf.signal.overlap_and_add
  (which it calls otherwise) and made of ops TFLite runs as builtins."""
  frames = tf.convert_to_tensor(frames)
  n = frames.shape[-1]
  if n is None or n % hop:
    return tf.signal.overlap_and_add(frames, hop)
  r = n // hop
  f = frames.shape[-2] if frames.shape[-2] is not None else tf.shape(frames)[-2]
  lead = tf.shape(frames)[:-2]
  blocks = tf.reshape(frames, tf.concat([lead, [f, r, hop]], 0))
  rank = len(frames.shape) + 1
  total = None
  for i in range(r):  # block i of frame m lands in output block m + i
    part = tf.pad(blocks[..., i, :], [[0, 0]] * (rank - 3) + [[i, r - 1 - i], [0, 0]])
    total = part if total is None else total + part
  return tf.reshape(total, tf.concat([lead, [(f + r - 1) * hop]], 0))


def _weighted_overlap_add(frames, hop, synthesis, normaliser, length):
  """sum_i synthesis(t - i hop) frames_i(t - i hop) / sum_i normaliser(t - i hop), 0 where the sum is 0."""
  frames = tf.convert_to_tensor(frames, tf.float32)
  num = overlap_and_add(frames * synthesis, hop)
  n = tf.shape(frames)[-2]
  den = overlap_and_add(tf.tile(normaliser[None, :], [n, 1]), hop)
  y = tf.math.divide_no_nan(num, den)
  if length is not None:
    y = y[..., :length]
  return y


def overlap_add(frames, hop: int, window=None, length=None):
  """Weighted overlap-add normalised by the summed weights. frames: [..., frames, N] -> [..., time].

    y(t) = sum_i w(t - i hop) frames_i(t - i hop) / sum_i w(t - i hop)

  with w = window ([N], default all ones: a plain average of the overlapping frames); samples whose weights
  sum to 0 are 0. If all frames agree on a sample (they were cut by `frame`), y reproduces it exactly,
  whatever the window, wherever some weight on it is > 0 (chunk_weights: everywhere). For chunked
  inference pass chunk_weights(N, hop): seams are cross-faded. All frames are held at once (in memory);
  a streaming separator accumulates the same two sums chunk by chunk.
  time = (frames - 1) * hop + N, or `length` (output cut to the first `length` samples).
  """
  frames = tf.convert_to_tensor(frames, tf.float32)
  frame_length = frames.shape[-1]
  if frame_length is None:
    raise ValueError("frames need a static last dimension (frame length)")
  _check_hop(frame_length, hop)
  w = tf.ones([frame_length], tf.float32) if window is None else tf.convert_to_tensor(window, tf.float32)
  w.shape.assert_is_compatible_with([frame_length])
  return _weighted_overlap_add(frames, hop, w, w, length)


def _check_hop(frame_length, hop):
  if not (isinstance(frame_length, int) and isinstance(hop, int) and 0 < hop <= frame_length):
    raise ValueError(f"need integers 0 < hop <= frame_length, got hop={hop!r}, frame_length={frame_length!r}")


# ---------------------------------------------------------------------------------------------------------
# STFT / ISTFT
# ---------------------------------------------------------------------------------------------------------


def _hann(frame_length, dtype=tf.float32):
  """Periodic Hann window [frame_length]: w[n] = sin^2(pi n / N), n = 0..N-1 (scipy's get_window('hann')).

  Built here because tf.signal.hann_window(periodic=True) is periodic only for even N.
  """
  n = tf.range(frame_length, dtype=tf.float64)  # frame_length may come as a tensor (tf.signal.stft)
  return tf.cast(tf.sin(math.pi * n / tf.cast(frame_length, tf.float64)) ** 2, dtype)


def stft(x, frame_length: int = 1024, frame_step: int = 256, fft_length=None, center: bool = True):
  """Short-time Fourier transform with a periodic Hann window (tf.signal.stft, unscaled).

    X[..., m, k] = sum_n x_pad[..., m * frame_step + n] w[n] exp(-2 pi i k n / fft_length)

  x: [..., time] float -> complex64 [..., frames, fft_length // 2 + 1].
  center=True zero-pads frame_length // 2 samples at both ends (frame m is centred on sample
  m * frame_step) and the end further so the frames cover every sample, giving
  frames = 1 + ceil((time + 2 (frame_length // 2) - frame_length) / frame_step): the frames of
  scipy.signal.stft(boundary='zeros', padded=True), whose values are X / sum(w).
  center=False: frames = 1 + floor((time - frame_length) / frame_step), no padding.
  Needs frame_step <= frame_length // 2 (istft reconstructs exactly then).
  """
  fft_length = frame_length if fft_length is None else fft_length
  _check_stft_args(frame_length, frame_step, fft_length)
  x = tf.convert_to_tensor(x, tf.float32)
  if center:
    half = frame_length // 2
    time = tf.shape(x)[-1] + 2 * half
    extra = (-(time - frame_length)) % frame_step
    paddings = tf.concat([tf.zeros([tf.rank(x) - 1, 2], tf.int32), [[half, half + extra]]], axis=0)
    x = tf.pad(x, paddings)
  return tf.signal.stft(x, frame_length, frame_step, fft_length=fft_length, window_fn=_hann,
                        pad_end=False)


def istft(spec, frame_length: int = 1024, frame_step: int = 256, fft_length=None, center: bool = True,
          length=None):
  """Inverse of `stft` (same arguments): complex [..., frames, bins] -> float32 [..., time].

  Weighted overlap-add with the synthesis window w / sum_m w^2(t - m frame_step) (the window pair of
  least-squares ISTFT, Griffin & Lim 1984):

    x(t) = sum_m w(t - m s) frame_m(t - m s) / sum_m w^2(t - m s),  frame_m = irfft(X[m])[:frame_length]

  Exact up to float32 rounding (< 1e-6 for |x| <= 1) wherever all overlapping frames exist: with
  center=True that is every sample, edges included. With center=False the first and last
  frame_length - frame_step samples see fewer frames; there sum w^2 gets tiny (w[0] = 0) and dividing by it
  amplifies rounding, so only the interior is reliable.
  length: the original time (center=True gives back (frames - 1) * frame_step, plus end padding, otherwise).
  """
  fft_length = frame_length if fft_length is None else fft_length
  _check_stft_args(frame_length, frame_step, fft_length)
  spec = tf.convert_to_tensor(spec, tf.complex64)
  frames = tf.signal.irfft(spec, fft_length=[fft_length])[..., :frame_length]
  w = _hann(frame_length)
  y = _weighted_overlap_add(frames, frame_step, w, w * w, None)
  if center:
    y = y[..., frame_length // 2:]
    if length is None:
      length = (tf.shape(spec)[-2] - 1) * frame_step
  if length is not None:
    y = y[..., :length]
  return y


def _check_stft_args(frame_length, frame_step, fft_length):
  if not (isinstance(frame_length, int) and isinstance(frame_step, int) and isinstance(fft_length, int)):
    raise ValueError("frame_length, frame_step and fft_length must be Python ints")
  if not 0 < frame_step <= frame_length // 2:
    raise ValueError(f"need 0 < frame_step <= frame_length // 2 for reconstruction, got "
                     f"frame_step={frame_step}, frame_length={frame_length}")
  if fft_length < frame_length:
    raise ValueError(f"fft_length ({fft_length}) must be >= frame_length ({frame_length})")


def magnitude(spec):
  """|X|: complex [...] -> float32 [...]."""
  return tf.abs(tf.convert_to_tensor(spec, tf.complex64))


def magphase(spec):
  """(|X|, angle X), both float32 [...]; polar(*magphase(X)) == X."""
  spec = tf.convert_to_tensor(spec, tf.complex64)
  return tf.abs(spec), tf.math.angle(spec)


def polar(mag, phase):
  """mag * exp(i phase): float [...] x float [...] -> complex64 [...] (e.g. a masked magnitude with the
  mixture's phase)."""
  mag = tf.convert_to_tensor(mag, tf.float32)
  phase = tf.convert_to_tensor(phase, tf.float32)
  return tf.complex(mag * tf.cos(phase), mag * tf.sin(phase))


# ---------------------------------------------------------------------------------------------------------
# SI-SDR
# ---------------------------------------------------------------------------------------------------------


def si_sdr(reference, estimate, eps: float = 1e-8, zero_mean: bool = True):
  """Scale-invariant SDR in dB (Le Roux et al., 2019). reference, estimate: [..., time] -> [...].

    a = <s, s_hat> / (|s|^2 + eps),  e = s_hat - a s,
    SI-SDR = 10 log10((|a s|^2 + eps) / (|e|^2 + eps))

  zero_mean: remove each signal's mean over time first (as in the paper). eps keeps silent references
  and perfect estimates finite. Broadcasts over leading axes.
  """
  s = tf.convert_to_tensor(reference, tf.float32)
  s_hat = tf.convert_to_tensor(estimate, tf.float32)
  if zero_mean:
    s = s - tf.reduce_mean(s, axis=-1, keepdims=True)
    s_hat = s_hat - tf.reduce_mean(s_hat, axis=-1, keepdims=True)
  a = tf.reduce_sum(s * s_hat, axis=-1, keepdims=True) / (tf.reduce_sum(s * s, axis=-1, keepdims=True) + eps)
  target = a * s
  noise = s_hat - target
  ratio = (tf.reduce_sum(target * target, axis=-1) + eps) / (tf.reduce_sum(noise * noise, axis=-1) + eps)
  return 10.0 * tf.math.log(ratio) / math.log(10.0)


def si_sdr_improvement(reference, estimate, mixture, eps: float = 1e-8, zero_mean: bool = True):
  """SI-SDRi in dB: si_sdr(reference, estimate) - si_sdr(reference, mixture). [..., time] -> [...]."""
  return (si_sdr(reference, estimate, eps, zero_mean) - si_sdr(reference, mixture, eps, zero_mean))
