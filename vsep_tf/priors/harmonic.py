r"""Harmonic frame prior: one class of steady harmonic tones, modelled over magnitude STFT frames.

A frame of the class at fundamental f (Hz) and gain g is a COMB: at every harmonic h = 1 .. H, folded into
[0, rate / 2] as sampling folds it, the analysis window's response (periodic Hann, 2 x `taps` bins wide)
scaled by g * a_h:

    |X(b)| ~= g * sum_h a_h * (n_fft / 4) * |W(b - p_h(f))|,    p_h(f) = fold(h * f) * n_fft / rate

(n_fft / 4: the unscaled STFT peak of a unit sinusoid under a periodic Hann window). The class is its harmonic
amplitudes a_h (the spectral envelope over harmonic NUMBER, one per class), its pitch range and its level range,
all learnt from the class's SOLO audio by `fit_harmonic_prior` (below); the latents per frame are f and g.

ASSUMPTION, named: each frame of a source is one harmonic tone whose harmonic amplitudes do not depend on pitch
(the toy data's waveforms; a rough model of a sustained instrument note, none of noise or drums). A `sample` of
the prior renders complex STFT frames with independent random harmonic phases, which is what the pitch encoder
is trained on (separators/harmonic.py).
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from vsep_tf import signal as signal_lib

SEMITONE = 2.0 ** (1.0 / 12.0)


def window_response(d):
  """The periodic Hann window's DFT at d bins from a partial, normalised to 1 at d = 0 (real, signed; TF)."""
  ad = tf.abs(d)
  zero, one = ad < 1e-6, tf.abs(ad - 1.0) < 1e-4
  safe = tf.where(zero | one, tf.fill(tf.shape(ad), 0.5), ad)
  w = tf.sin(math.pi * safe) / (math.pi * safe) / (1.0 - tf.square(safe))
  return tf.where(zero, tf.ones_like(w), tf.where(one, tf.fill(tf.shape(w), 0.5), w))


class HarmonicPrior(tf.Module):
  """One class's harmonic comb model over STFT frames (module docstring). Fit it with `fit_harmonic_prior`.

  Args:
    sample_rate: Hz of the audio it models.
    n_fft, hop: the STFT (periodic Hann) whose frames it models; steady tones want long windows (4096 at
      14.7 kHz: 3.6 Hz bins).
    harmonics: H, harmonics per comb (those above rate / 2 fold back, as in non-band-limited audio).
    taps: window-response bins each side of a partial.
  """

  def __init__(self, sample_rate: int, n_fft: int = 4096, hop: int = 1024, harmonics: int = 300, taps: int = 4,
               name=None):
    super().__init__(name=name)
    self.sample_rate, self.n_fft, self.hop = int(sample_rate), int(n_fft), int(hop)
    self.harmonics, self.taps = int(harmonics), int(taps)
    if self.n_fft <= 0 or self.hop <= 0 or self.harmonics <= 0 or self.taps <= 0:
      raise ValueError(f"n_fft, hop, harmonics and taps must be positive, got {self.get_config()}")
    self.bins = self.n_fft // 2 + 1
    # Learnt by fit_harmonic_prior: amplitude per harmonic (waveform units), pitch range (Hz) and the range of
    # the frames' level (a multiplier of `amplitudes`), as the solo audio showed them.
    self.amplitudes = tf.Variable(tf.zeros([self.harmonics]), trainable=False, name="amplitudes")
    self.hz_range = tf.Variable([20.0, 2000.0], trainable=False, name="hz_range")
    self.gain_range = tf.Variable([1.0, 1.0], trainable=False, name="gain_range")

  def get_config(self) -> dict:
    return {"sample_rate": self.sample_rate, "n_fft": self.n_fft, "hop": self.hop, "harmonics": self.harmonics,
            "taps": self.taps}

  def _partials(self, hz):
    """hz [R] -> (tap bins int32 [R, H, 2 taps] in [0, bins), signed window response [R, H, 2 taps], offset d)."""
    h = tf.range(1, self.harmonics + 1, dtype=tf.float32)
    f = tf.math.floormod(tf.convert_to_tensor(hz, tf.float32)[:, None] * h[None], float(self.sample_rate))
    pos = tf.where(f > self.sample_rate / 2, self.sample_rate - f, f) * (self.n_fft / self.sample_rate)
    taps = tf.floor(pos)[..., None] + tf.range(-self.taps + 1, self.taps + 1, dtype=tf.float32)
    d = taps - pos[..., None]
    taps = tf.abs(taps)                                                    # mirror images at 0 and at rate / 2
    taps = tf.where(taps > self.bins - 1, 2.0 * (self.bins - 1) - taps, taps)
    return tf.cast(taps, tf.int32), window_response(d), d

  def _scatter(self, values, taps):
    rows = tf.shape(values)[0]
    ids = tf.reshape(taps + (tf.range(rows) * self.bins)[:, None, None], [-1])
    out = tf.math.unsorted_segment_sum(tf.reshape(values, [-1]), ids, rows * self.bins)
    return tf.reshape(out, [rows, self.bins])

  def comb(self, hz, gains=None):
    """Magnitude frames float32 [R, bins] at fundamentals hz [R] (gains [R], default 1): magnitudes of the
    partials added (the frame model)."""
    taps, w, _ = self._partials(hz)
    scale = self.amplitudes * (self.n_fft / 4.0)
    values = tf.abs(scale[None, :, None] * w)
    if gains is not None:
      values = values * tf.convert_to_tensor(gains, tf.float32)[:, None, None]
    return self._scatter(values, taps)

  def shapes(self, hz):
    """The comb at hz [R] normalised to unit mass: float32 [R, bins]."""
    v = self.comb(hz)
    return v / (tf.reduce_sum(v, axis=-1, keepdims=True) + 1e-12)

  def render(self, hz, gains, phases):
    """Complex frames [R, bins] of tones at hz [R], gains [R], harmonic phases [R, H]: the zero-phase DFT of the
    windowed frame (time origin at its centre, where harmonic h has phase phases[:, h]). tf.signal.stft's frames
    differ by the factor (-1)^bin, the same for every source, so mixture magnitudes are alike."""
    taps, w, _ = self._partials(hz)
    value = (self.amplitudes * (self.n_fft / 4.0))[None, :, None] * w * tf.convert_to_tensor(gains)[:, None, None]
    phase = tf.convert_to_tensor(phases, tf.float32)[..., None]
    return tf.complex(self._scatter(value * tf.cos(phase), taps), self._scatter(value * tf.sin(phase), taps))

  def sample(self, rows: int, seed):
    """`rows` frames of the prior: (complex STFT frames [rows, bins], fundamentals Hz [rows]). Pitch log-uniform
    and level uniform over the learnt ranges, harmonic phases uniform; `seed` an int32 [2] stateless seed."""
    u = tf.random.stateless_uniform([rows, 2 + self.harmonics], seed=seed)
    lo, hi = tf.math.log(self.hz_range[0]), tf.math.log(self.hz_range[1])
    hz = tf.exp(lo + (hi - lo) * u[:, 0])
    gains = self.gain_range[0] + (self.gain_range[1] - self.gain_range[0]) * u[:, 1]
    return self.render(hz, gains, 2.0 * math.pi * u[:, 2:]), hz


def build_harmonic_prior(sample_rate: int, n_fft: int = 4096, hop: int = 1024, harmonics: int = 300,
                         taps: int = 4) -> HarmonicPrior:
  """Harmonic prior factory (one flag per keyword with a default: --harmonic.<name>; the sample rate is the
  data's)."""
  return HarmonicPrior(sample_rate=sample_rate, n_fft=n_fft, hop=hop, harmonics=harmonics, taps=taps)


# --------------------------------------------------------------------------------------------- learning


def _long_spectrum(x, pad: int = 4):
  """|rfft| of a Hann-windowed signal zero-padded `pad` x (numpy float64 [bins]), and its bins per Hz factor."""
  n = len(x)
  size = 1 << int(math.ceil(math.log2(n * pad)))
  w = np.sin(np.pi * np.arange(n) / n) ** 2
  return np.abs(np.fft.rfft(x * w, size)), size


def _fold(f, rate):
  f = np.mod(f, rate)
  return np.where(f > rate / 2, rate - f, f)


def _read(spectrum, hz, size, rate):
  """Linear interpolation of spectrum [bins] at frequencies hz [...] (folded)."""
  pos = _fold(hz, rate) * size / rate
  lo = np.clip(np.floor(pos).astype(np.int64), 0, len(spectrum) - 2)
  frac = np.clip(pos - lo, 0.0, 1.0)
  return spectrum[lo] * (1 - frac) + spectrum[lo + 1] * frac


def estimate_pitch(x, sample_rate: int, min_hz: float, max_hz: float, harmonics: int,
                   coarse_harmonics: int = 16, coarse_length: int = 8192) -> float:
  """The fundamental (Hz) of one steady harmonic tone x [T] (numpy), or 0.0 if x is silent.

  Coarse: on a 1/64-semitone grid over [min_hz, max_hz], the power of a short excerpt's spectrum found at the
  first `coarse_harmonics` harmonics below rate / 2; every sub-octave of the fundamental explains as much as the
  fundamental, any multiple less, so the estimate is the top of the HIGHEST peak explaining at least 80% of the
  best. Fine: the summed power of the whole signal's spectrum at the harmonics below rate / 2, maximised
  locally to a small fraction of 1 / (duration x harmonics)."""
  x = np.asarray(x, np.float64)
  if not np.any(x):
    return 0.0
  x = x - x.mean()
  spectrum, size = _long_spectrum(x[:coarse_length])
  power = spectrum ** 2
  grid = min_hz * SEMITONE ** (np.arange(int(12 * 64 * math.log2(max_hz / min_hz)) + 1) / 64.0)
  h = np.arange(1, coarse_harmonics + 1)
  f = grid[:, None] * h[None]
  share = (_read(power, f, size, sample_rate) * (f < sample_rate / 2)).sum(1)  # unfolded: a folded harmonic
  # of a candidate can land anywhere, on the fundamental too
  i = np.nonzero(share >= 0.8 * share.max())[0][-1]
  while i > 0 and share[i - 1] >= share[i]:                                # up to that peak's top
    i -= 1
  best = grid[i]
  spectrum, size = _long_spectrum(x)
  h = np.arange(1, harmonics + 1)
  span = best * (SEMITONE ** (1 / 32) - 1)
  for _ in range(3):
    cand = best + np.linspace(-span, span, 201)
    f = cand[:, None] * h[None]
    best = cand[np.argmax((np.square(_read(spectrum, f, size, sample_rate)) * (f < sample_rate / 2)).sum(1))]
    span /= 50.0
  return float(best)


def harmonic_readings(x, hz: float, prior: HarmonicPrior) -> np.ndarray:
  """Amplitude (waveform units) of every harmonic of a steady tone x [T] at fundamental hz: the least-squares
  fit of the window response to the median magnitude frame of x's STFT at each partial. float64 [H]."""
  spec = np.abs(signal_lib.stft(tf.constant(np.asarray(x, np.float32)[None]), prior.n_fft, prior.hop)[0].numpy())
  frames = spec.shape[0]
  frame = np.median(spec[1:-1] if frames > 2 else spec, axis=0)              # edge frames see the padding
  taps, w, _ = (t.numpy() for t in prior._partials(tf.constant([hz], tf.float32)))  # pylint: disable=protected-access
  w = np.abs(w[0])
  return (frame[taps[0]] * w).sum(-1) / (w * w).sum(-1) / (prior.n_fft / 4.0)


def fit_harmonic_prior(prior: HarmonicPrior, signals: Sequence[np.ndarray], crop_length: int = 0,
                       min_hz: float = 20.0, max_hz: float = 0.0, max_crops: int = 400) -> Dict[str, float]:
  """Learns `prior`'s amplitudes and ranges from a class's solo signals [T] (numpy), in place.

  Each signal is cut into crops of `crop_length` samples (0: whole signals); per crop, the fundamental
  (`estimate_pitch` over [min_hz, max_hz]; max_hz 0: 0.45 x rate), the harmonic readings and the crop's level.
  The amplitudes are the per-harmonic MEDIAN of the readings over crops divided by the crop's level (robust to
  the crops where two harmonics fold onto the same bins); pitch range: the crops' min / max widened by a
  semitone; level range: the crops' min / max. Silent crops are skipped. Returns summary figures.
  """
  rate = prior.sample_rate
  max_hz = max_hz or 0.45 * rate
  crops = []
  for x in signals:
    x = np.asarray(x, np.float32)
    step = crop_length or len(x)
    crops += [x[i:i + step] for i in range(0, len(x) - step + 1, step)]
  crops = [c for c in crops if len(c) >= prior.n_fft and np.sqrt(np.mean(np.square(c))) > 1e-4][:max_crops]
  if not crops:
    raise ValueError(f"no non-silent solo crop of at least n_fft={prior.n_fft} samples to fit a harmonic prior")
  pitches, readings = [], []
  for c in crops:
    hz = estimate_pitch(c, rate, min_hz, max_hz, prior.harmonics)
    pitches.append(hz)
    readings.append(harmonic_readings(c, hz, prior))
  readings = np.stack(readings)                                          # [crops, H]
  # A crop's level sqrt(sum_h a_h^2) from its power (a harmonic tone's mean square is sum_h a_h^2 / 2), not from
  # the readings, which count twice whatever folds onto another partial's bins.
  levels = np.array([np.sqrt(2.0 * np.mean(np.square(c, dtype=np.float64))) for c in crops])
  profile = np.median(readings / levels[:, None], axis=0)
  level = float(np.median(levels))
  prior.amplitudes.assign((profile * level).astype(np.float32))
  prior.hz_range.assign([min(pitches) / SEMITONE, max(pitches) * SEMITONE])
  prior.gain_range.assign([float(levels.min()) / level, float(levels.max()) / level])
  return {"crops": len(crops), "min_hz": float(min(pitches)), "max_hz": float(max(pitches)), "level": level}
