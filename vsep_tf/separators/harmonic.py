r"""Harmonic separator: per-class harmonic priors, an amortised pitch encoder, Wiener masks; one TF graph.

For mixes of steady harmonic tones (the toy data): every class k has a harmonic prior (priors/harmonic.py: a
frame is gain x comb(fundamental), the comb's harmonic amplitudes learnt from the class's solo audio). A mix frame
is the sum of one such frame per class, so separating it means finding each class's fundamental and gain:

1. Pitch encoder (amortised, one forward pass): the mix frame's normalised log-spectrum read at m x f for every
   f of a log-frequency grid (`resolution` points per semitone over the priors' pitch range) and every m in
   MULTIPLES (a harmonic stack, as in deep-salience pitch trackers), 1-D convolutions over the grid, a softmax
   over the grid per class. Trained by a SLEEP phase (training/harmonic_trainer.py): on mixes of the priors' own
   samples with their known fundamentals (cross-entropy), never on a data set's mixes or sources. Read out per
   frame: the argmax and a parabola through its neighbours' logits; then a running median over `median_frames`
   frames (a tone's pitch holds for a while; an isolated jump is an error), or with median_frames 0 one pitch
   per class for the whole excerpt (steady tones: the toy).
2. Refinement (`refine_sweeps`, a search under the same priors): each class's pitch in turn moves to the offset,
   on a fine grid around it, whose comb explains most of what the other classes leave of the mix frames.
3. Combs at those fundamentals (unit mass), the gains by `nmf_iterations` multiplicative KL-NMF updates (the
   combs are the dictionary, one atom per class and frame).
4. Wiener masks |V_k|^p / sum_j |V_j|^p on the mixture's STFT, inverted (masks.py): the estimates add up to it.

Everything is TensorFlow ops on [batch, time] inputs, so the separator exports as a SavedModel
(export/saved_model.py). ASSUMPTION (the priors'): one harmonic tone per class and frame.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import keras
import numpy as np
import tensorflow as tf

from vsep_tf import signal as signal_lib
from vsep_tf.layers.tracking import get_layer_list, set_layer_list
from vsep_tf.priors.harmonic import SEMITONE, HarmonicPrior
from vsep_tf.priors.spectral import normalised_log_spectrum
from vsep_tf.separators.base import Separator
from vsep_tf.separators.masks import masks_to_sources, ratio_masks, to_sum_mix

MULTIPLES = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)


def harmonic_search_hyperparameters(median_frames: int = 5, refine_sweeps: int = 2, refine_semitones: float = 0.06,
                                    refine_points: int = 41, nmf_iterations: int = 50,
                                    mask_power: float = 2.0) -> Dict:
  """The separator's settings (flags --harmonic_search.<name>).

  median_frames: the running median over frames of each class's pitch (odd; 1: none); 0: ONE pitch per class for
    the whole excerpt (the median over its non-silent frames: voiced_median), for steady tones (the toy).
  refine_sweeps / refine_semitones / refine_points: sweeps of the pitch refinement (0: none), each class in turn on
    a grid of refine_points offsets within +-refine_semitones (module docstring).
  nmf_iterations: KL-NMF updates of the gains. mask_power: p of the Wiener masks."""
  median_frames = int(median_frames)
  if median_frames < 0 or (median_frames and median_frames % 2 == 0):
    raise ValueError(f"median_frames must be 0 or odd, got {median_frames}")
  if int(nmf_iterations) < 1 or int(refine_sweeps) < 0 or int(refine_points) < 1 or refine_semitones < 0:
    raise ValueError(f"need nmf_iterations >= 1, refine_sweeps >= 0, refine_points >= 1, refine_semitones >= 0; "
                     f"got {nmf_iterations}, {refine_sweeps}, {refine_points}, {refine_semitones}")
  return {"median_frames": median_frames, "refine_sweeps": int(refine_sweeps),
          "refine_semitones": float(refine_semitones), "refine_points": int(refine_points),
          "nmf_iterations": int(nmf_iterations), "mask_power": float(mask_power)}


def build_pitch_encoder(resolution: int = 8, channels: int = 64, widths: tuple = (9, 9, 25, 9)) -> Dict:
  """The pitch encoder's settings (flags --harmonic_encoder.<name>); the priors fill the rest:
  PitchEncoder.for_priors(priors, **build_pitch_encoder(...)). resolution: grid points per semitone;
  channels / widths: the 1-D convolutions over the grid (one per width, GELU)."""
  if int(resolution) < 1 or int(channels) < 1 or not widths:
    raise ValueError(f"resolution and channels must be >= 1 and widths non-empty, got {resolution}, {channels}, "
                     f"{widths}")
  return {"resolution": int(resolution), "channels": int(channels), "widths": tuple(int(w) for w in widths)}


@keras.saving.register_keras_serializable(package="vsep_tf")
class PitchEncoder(keras.Model):
  """Magnitude frames [R, bins] -> logits [R, num_sources, grid] over a log-frequency grid (module docstring)."""

  def __init__(self, num_sources: int, sample_rate: int, n_fft: int, min_hz: float, max_hz: float,
               resolution: int = 8, channels: int = 64, widths: Sequence[int] = (9, 9, 25, 9), **kwargs):
    super().__init__(**kwargs)
    self.num_sources, self.sample_rate, self.n_fft = int(num_sources), int(sample_rate), int(n_fft)
    self.min_hz, self.max_hz = float(min_hz), float(max_hz)
    self.resolution, self.channels, self.widths = int(resolution), int(channels), tuple(int(w) for w in widths)
    if not 0 < self.min_hz < self.max_hz:
      raise ValueError(f"pitch range must be 0 < min_hz < max_hz, got {min_hz}, {max_hz}")
    self.grid_size = int(math.ceil(12 * self.resolution * math.log2(self.max_hz / self.min_hz))) + 1
    bins = self.n_fft // 2 + 1
    grid_hz = self.min_hz * SEMITONE ** (np.arange(self.grid_size) / self.resolution)
    pos = np.stack([np.clip(grid_hz * m * self.n_fft / self.sample_rate, 0, bins - 1.001) for m in MULTIPLES], -1)
    self._low = np.floor(pos).astype(np.int32)                               # [grid, multiples]
    self._frac = (pos - np.floor(pos)).astype(np.float32)
    # Attributes conv_0, conv_1, ..., not a list attribute: a list's layers would be missing from checkpoints.
    set_layer_list(self, "conv", [keras.layers.Conv1D(self.channels, w, padding="same", activation="gelu",
                                                      name=f"conv_{i}") for i, w in enumerate(self.widths)])
    self.head = keras.layers.Conv1D(self.num_sources, 1, name="head")

  @classmethod
  def for_priors(cls, priors: Dict[str, HarmonicPrior], **kwargs) -> "PitchEncoder":
    """An encoder for these priors (built): their STFT and rate, a grid spanning all their pitch ranges."""
    first = next(iter(priors.values()))
    lo = min(float(p.hz_range[0].numpy()) for p in priors.values())
    hi = max(float(p.hz_range[1].numpy()) for p in priors.values())
    encoder = cls(len(priors), first.sample_rate, first.n_fft, lo, hi, **kwargs)
    encoder(tf.zeros([1, first.bins]))
    return encoder

  def get_config(self):
    return {**super().get_config(), "num_sources": self.num_sources, "sample_rate": self.sample_rate,
            "n_fft": self.n_fft, "min_hz": self.min_hz, "max_hz": self.max_hz, "resolution": self.resolution,
            "channels": self.channels, "widths": list(self.widths)}

  def harmonic_stack(self, x):
    """Magnitude frames [R, bins] -> [R, grid, multiples]: the normalised log-spectrum at m x every grid pitch."""
    feat = normalised_log_spectrum(x)
    return tf.gather(feat, self._low, axis=1) * (1 - self._frac) + tf.gather(feat, self._low + 1, axis=1) * self._frac

  def call(self, x, training=False):
    h = self.harmonic_stack(x)
    for conv in get_layer_list(self, "conv"):
      h = conv(h)
    return tf.transpose(self.head(h), [0, 2, 1])

  def labels(self, hz):
    """Grid index (int32) nearest to fundamentals hz [...]."""
    idx = tf.round(tf.math.log(tf.convert_to_tensor(hz, tf.float32) / self.min_hz) / math.log(SEMITONE)
                   * self.resolution)
    return tf.cast(tf.clip_by_value(idx, 0, self.grid_size - 1), tf.int32)

  def pitches(self, logits):
    """logits [R, N, grid] -> fundamentals Hz [R, N]: the argmax refined by a parabola through its neighbours."""
    top = tf.clip_by_value(tf.argmax(logits, axis=-1, output_type=tf.int32), 1, self.grid_size - 2)
    l0, l1, l2 = (tf.gather(logits, top + o, batch_dims=2) for o in (-1, 0, 1))
    offset = tf.clip_by_value(0.5 * (l0 - l2) / tf.minimum(l0 - 2 * l1 + l2, -1e-9), -0.5, 0.5)
    steps = (tf.cast(top, tf.float32) + offset) / self.resolution
    return self.min_hz * tf.exp(steps * math.log(SEMITONE))


def running_median(x, width: int):
  """Median over `width` (odd) consecutive entries along axis 1 of x [B, F, ...], edges repeated."""
  if width == 1:
    return x
  half = width // 2
  padded = tf.concat([tf.repeat(x[:, :1], half, axis=1), x, tf.repeat(x[:, -1:], half, axis=1)], axis=1)
  windows = tf.signal.frame(padded, width, 1, axis=1)                      # [B, F, width, ...]
  return tf.sort(windows, axis=2)[:, :, half]


def voiced_median(values, x, floor: float = 1e-3):
  """The lower median over the frames axis 1 of values [B, F, N] taken over the frames of x [B, F, bins] that
  are not silent (summed magnitude above `floor` times the loudest frame's; all frames if every one is): [B, N].
  Zero padding (a fixed-length graph's) then does not move it."""
  mass = tf.reduce_sum(x, axis=-1)                                                      # [B, F]
  voiced = mass > floor * tf.reduce_max(mass, axis=1, keepdims=True)
  weights = tf.where(tf.reduce_any(voiced, axis=1, keepdims=True), tf.cast(voiced, tf.float32), 1.0)
  v = tf.transpose(values, [0, 2, 1])                                                   # [B, N, F]
  order = tf.argsort(v, axis=-1)
  w = tf.gather(tf.broadcast_to(weights[:, None], tf.shape(v)), order, batch_dims=2)
  counted = tf.cumsum(w, axis=-1)          # integers: exact, so equal weights give the plain lower median
  first = tf.argmax(tf.cast(counted >= 0.5 * counted[..., -1:], tf.int32), axis=-1, output_type=tf.int32)
  return tf.gather(tf.gather(v, order, batch_dims=2), first, batch_dims=2)


def kl_gains(x, shapes, iterations: int):
  """Gains g [N, ..., F, 1] >= 0 of unit-mass atoms shapes [N, ..., F or 1, bins] for frames x [..., F, bins]:
  multiplicative updates of the generalised KL divergence D(x || sum_k g_k shapes_k), from an equal split of each
  frame's mass (an atom with one frame serves every frame)."""
  shapes = shapes + tf.zeros_like(x)[None]                                  # one atom per frame
  n = tf.cast(tf.shape(shapes)[0], tf.float32)
  g = tf.ones_like(shapes[..., :1]) * tf.reduce_sum(x, -1, keepdims=True)[None] / n
  for _ in range(iterations):
    model = tf.reduce_sum(g * shapes, 0) + 1e-8
    g = g * tf.reduce_sum(shapes * (x / model)[None], -1, keepdims=True) / (
        tf.reduce_sum(shapes, -1, keepdims=True) + 1e-8)
  return g


class HarmonicSeparator(Separator):
  """Pitch encoder -> harmonic combs -> KL gains -> Wiener masks (module docstring), as one tf.function."""

  method = "harmonic"

  def __init__(self, priors: Dict[str, HarmonicPrior], encoder: PitchEncoder, sample_rate: int, mix: str,
               median_frames: int = 5, refine_sweeps: int = 2, refine_semitones: float = 0.06,
               refine_points: int = 41, nmf_iterations: int = 50, mask_power: float = 2.0,
               chunk_length: int = 2 ** 18):
    self.priors = dict(priors)
    self.encoder = encoder
    self.source_names = tuple(self.priors)
    self.sample_rate, self.mix = int(sample_rate), mix
    first = next(iter(self.priors.values()))
    self.n_fft, self.hop = first.n_fft, first.hop
    if any((p.n_fft, p.hop, p.sample_rate) != (self.n_fft, self.hop, self.sample_rate)
           for p in self.priors.values()):
      raise ValueError("the harmonic priors must share one STFT and the separator's sample rate")
    if encoder.num_sources != len(self.priors):
      raise ValueError(f"the pitch encoder has {encoder.num_sources} outputs for {len(self.priors)} priors")
    self.settings = harmonic_search_hyperparameters(median_frames, refine_sweeps, refine_semitones, refine_points,
                                                    nmf_iterations, mask_power)
    self.chunk_length = int(chunk_length)
    self.chunk_overlap = self.chunk_length // 16
    self._fn = tf.function(self._separate, input_signature=[tf.TensorSpec([None, None], tf.float32)])

  def describe(self) -> dict:
    return {"method": self.method, "n_fft": self.n_fft, "hop": self.hop, **self.settings,
            "encoder": self.encoder.get_config()}

  def separate(self, mix) -> tf.Tensor:
    return self._fn(tf.convert_to_tensor(mix, tf.float32))

  def fundamentals(self, x):
    """Magnitude STFT [B, F, bins] -> each class's fundamental, Hz [B, F, N] (or [B, 1, N]: one per excerpt,
    median_frames 0): the encoder's per frame, then the median."""
    b, f = tf.shape(x)[0], tf.shape(x)[1]
    hz = self.encoder.pitches(self.encoder(tf.reshape(x, [-1, x.shape[-1]])))
    hz = tf.reshape(hz, [b, f, self.num_sources])
    width = self.settings["median_frames"]
    if width == 0:
      return voiced_median(hz, x)[:, None]
    return running_median(hz, width)

  def shapes(self, hz):
    """Unit-mass combs [N, B, F', bins] of the classes at fundamentals hz [B, F', N]."""
    b, f = tf.shape(hz)[0], tf.shape(hz)[1]
    return tf.stack([tf.reshape(prior.shapes(tf.reshape(hz[..., k], [-1])), [b, f, -1])
                     for k, prior in enumerate(self.priors.values())])

  def refine(self, x, hz):
    """Each class's fundamentals hz [B, F', N] re-chosen in turn on a grid of offsets (refine_points within
    +-refine_semitones), the other classes fixed at their KL gains: the offset whose comb, at its least-squares
    gain, explains most of what the others leave of the magnitudes x [B, F, bins] (summed over the frames it
    serves). The encoder's grid and parabola leave ~0.01 semitone, which a high harmonic multiplies."""
    factors = tf.pow(2.0, tf.linspace(-1.0, 1.0, self.settings["refine_points"])
                     * self.settings["refine_semitones"] / 12.0)
    steady = hz.shape[1] == 1
    for _ in range(self.settings["refine_sweeps"]):
      for k, prior in enumerate(self.priors.values()):
        shapes = self.shapes(hz)
        g = kl_gains(x, shapes, self.settings["nmf_iterations"])
        rest = x - (tf.reduce_sum(g * shapes, 0) - g[k] * shapes[k])          # [B, F, bins]
        cand = hz[None, ..., k] * factors[:, None, None]                       # [P, B, F']
        v = tf.reshape(prior.comb(tf.reshape(cand, [-1])), tf.concat([tf.shape(cand), [-1]], 0))
        dot = tf.reduce_sum(v * rest[None], -1)                                # [P, B, F]
        explained = tf.where(dot > 0, tf.square(dot), 0.0) / (tf.reduce_sum(v * v, -1) + 1e-12)
        if steady:
          explained = tf.reduce_sum(explained, axis=2, keepdims=True)
        best = tf.gather(factors, tf.argmax(explained, axis=0, output_type=tf.int32))  # [B, F']
        hz = tf.concat([hz[..., :k], (hz[..., k] * best)[..., None], hz[..., k + 1:]], axis=-1)
    return hz

  def source_models(self, x, hz):
    """Magnitude models [B, N, F, bins] of the classes at fundamentals hz [B, F or 1, N] for the mix frames x."""
    shapes = self.shapes(hz)
    model = kl_gains(x, shapes, self.settings["nmf_iterations"]) * shapes   # [N, B, F, bins]
    return tf.transpose(model, [1, 0, 2, 3])

  def frame_models(self, x):
    """Magnitude frames x [B, F, bins] of mixes -> the classes' magnitude models [B, N, F, bins]: the encoder's
    pitches, their median and refinement, the combs at their KL gains (what the Wiener masks are made of)."""
    hz = self.fundamentals(x)
    if self.settings["refine_sweeps"]:
      hz = self.refine(x, hz)
    return self.source_models(x, hz)

  def _separate(self, mix):
    total = to_sum_mix(mix, self.mix, self.num_sources)  # the sources add up to it
    spec = signal_lib.stft(total, self.n_fft, self.hop)
    models = self.frame_models(tf.abs(spec))
    return masks_to_sources(ratio_masks(models, self.settings["mask_power"]), spec, self.n_fft, self.hop,
                            tf.shape(mix)[-1])
