"""ToyData: the thesis's synthetic four-source set, generated in TensorFlow with stateless randomness.

The recipe (REFERENCES.md, "ToyData"), exactly:

  sources, in this order:  sine, square, sawtooth, triangle
  sample rate:             14,700 Hz; items of 48,000 samples (5,000 train, 1,500 test)
  per source and item:     key ~ U[0.1, 64.9],  f = 440 * 2^((key - 49) / 12) Hz   (about 26 Hz to 1.1 kHz)
                           phase phi ~ U[0, 1) of one period
                           amplitude a ~ U[0.8, 1.0]
  mix:                     mean of the four sources

A source is a periodic function of its cycle position u[t] = frac(phi + f * t / sample_rate) in [0, 1),
t = 0, 1, ... the sample index (computed in float64, then cast to float32):

  sine:     a * sin(2 pi u)
  square:   a * (+1 if u < 1/2 else -1)   = a * sign(sin(2 pi u)) wherever sin != 0; never 0-valued
  sawtooth: a * (2u - 1)                  rising ramp in [-a, a), jumps down once per period
  triangle: a * (1 - 4 |frac(u + 1/4) - 1/2|)   in [-a, a], in phase with the sine (peak at u = 1/4)

The waveforms are naive (not band-limited; square and sawtooth alias above Nyquist), as in the thesis.

Determinism: item i of split `split` under data seed s has parameters drawn by
tf.random.stateless_uniform keyed by fold_in([s, crc32('toy/' + split)], i): a pure function of (s, split, i),
whatever the batching or parallelism. Splits are disjoint streams of the same seed; an evaluation may use any
other seed (ToyData(seed=...)) to get items no model was trained on.

Crops: a crop of samples [o, o + L) of an item is the same closed-form signal evaluated at t = o .. o + L - 1,
so crops are rendered directly at their length, never by materialising the 48,000-sample item. (In
distribution, a crop of a random-phase periodic signal is just a fresh item of length L; rendering the
exact samples of a stored item also keeps the thesis's finite training set of num_items items.)
"""
from __future__ import annotations

import math
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf

from vsep_tf.data import base
from vsep_tf.data import mixing

TOY_SOURCES = ("sine", "square", "sawtooth", "triangle")
TOY_SAMPLE_RATE = 14700
TOY_ITEM_LENGTH = 48000
KEY_RANGE = (0.1, 64.9)
AMPLITUDE_RANGE = (0.8, 1.0)
DEFAULT_NUM_ITEMS = {"train": 5000, "valid": 500, "test": 1500}


def key_to_frequency(key):
  """Piano-key number -> Hz: f = 440 * 2^((key - 49) / 12) (key 49 = A4). numpy or TF."""
  if isinstance(key, (np.ndarray, float, int)):
    return 440.0 * 2.0 ** ((np.asarray(key, np.float64) - 49.0) / 12.0)
  return 440.0 * tf.pow(tf.constant(2.0, key.dtype), (key - 49.0) / 12.0)


def frequency_to_key(f):
  """Inverse of key_to_frequency (numpy): key = 49 + 12 * log2(f / 440)."""
  return 49.0 + 12.0 * np.log2(np.asarray(f, np.float64) / 440.0)


def waveform(name: str, u):
  """Unit-amplitude waveform of cycle position u in [0, 1): float32 [...] -> [...] in [-1, 1]."""
  if name == "sine":
    return tf.sin(2.0 * math.pi * u)
  if name == "square":
    return tf.where(u < 0.5, tf.ones_like(u), -tf.ones_like(u))
  if name == "sawtooth":
    return 2.0 * u - 1.0
  if name == "triangle":
    return 1.0 - 4.0 * tf.abs(tf.math.floormod(u + 0.25, 1.0) - 0.5)
  raise ValueError(f"unknown toy waveform {name!r}; choose from {TOY_SOURCES}")


def item_parameters(key) -> Dict[str, tf.Tensor]:
  """The recipe's random parameters of one item, one per source: {name: float32 [N]}.

  key: int64 [2] stateless RNG key of the item. Returns 'key' (piano key), 'frequency' (Hz),
  'phase' (fraction of a period, [0, 1)) and 'amplitude'.
  """
  u = tf.random.stateless_uniform([3, len(TOY_SOURCES)], seed=key, dtype=tf.float32)
  piano_key = KEY_RANGE[0] + (KEY_RANGE[1] - KEY_RANGE[0]) * u[0]
  return {
      "key": piano_key,
      "frequency": key_to_frequency(piano_key),
      "phase": u[1],
      "amplitude": AMPLITUDE_RANGE[0] + (AMPLITUDE_RANGE[1] - AMPLITUDE_RANGE[0]) * u[2],
  }


def render(name: str, frequency, phase, amplitude, start, length: int, sample_rate: int) -> tf.Tensor:
  """Samples t = start .. start + length - 1 of one source: float32 [length].

  frequency, phase, amplitude: float32 scalars; start: int scalar. The cycle position
  u = frac(phase + frequency * t / sample_rate) is computed in float64 (at t ~ 5e4 and f ~ 1 kHz float32
  would lose ~1e-3 of a period), then the waveform in float32.
  """
  t = tf.cast(start, tf.float64) + tf.range(length, dtype=tf.float64)
  cycles = tf.cast(phase, tf.float64) + tf.cast(frequency, tf.float64) * t / float(sample_rate)
  u = tf.cast(cycles - tf.floor(cycles), tf.float32)
  u = tf.minimum(u, np.float32(1.0 - 2.0**-24))  # float64 -> float32 may round 0.99999999 up to 1.0
  return tf.cast(amplitude, tf.float32) * waveform(name, u)


class ToyData(base.SourceDataset):
  """The thesis's toy data (sine, square, sawtooth, triangle at 14.7 kHz; mix = mean), generated on the fly.

  Args:
    seed: data seed; item i of a split is a pure function of (seed, split, i). Train and evaluate on
      different seeds (or different splits) to keep evaluation items unseen.
    sample_rate: Hz (the recipe: 14700). Frequencies stay in Hz, so another rate changes samples per period.
    mix: 'mean' (the recipe) or 'sum'.
    item_length: samples per item (48000).
    num_items: {split: count} overriding DEFAULT_NUM_ITEMS (5000 train, 500 valid, 1500 test).
  """

  def __init__(self, seed: int = 0, sample_rate: int = TOY_SAMPLE_RATE, mix: str = "mean",
               item_length: int = TOY_ITEM_LENGTH, num_items: Optional[Dict[str, int]] = None):
    self.seed = int(seed)
    base.stream_key(self.seed)  # validates the seed
    self.sample_rate = int(sample_rate)
    if self.sample_rate <= 0:
      raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    self.mix = mixing.check_mix(mix)
    self.source_names = TOY_SOURCES
    self.item_length = int(item_length)
    if self.item_length <= 0:
      raise ValueError(f"item_length must be positive, got {item_length}")
    self.num_items = dict(DEFAULT_NUM_ITEMS)
    for split, n in (num_items or {}).items():
      base.check_split(split)
      if int(n) <= 0:
        raise ValueError(f"num_items[{split!r}] must be positive, got {n}")
      self.num_items[split] = int(n)

  # --- items ---------------------------------------------------------------------------------------------

  def item_key(self, split: str, index) -> tf.Tensor:
    """Stateless RNG key of item `index` of `split`: fold_in([seed, crc32('toy/<split>')], index)."""
    return base.example_key(base.stream_key(self.seed, "toy", split), index)

  def parameters(self, split: str, indices) -> Dict[str, np.ndarray]:
    """The recipe parameters of items `indices` (ints): {'key'|'frequency'|'phase'|'amplitude': [n, N]}."""
    base.check_split(split)
    indices = np.asarray(list(indices), np.int64)
    if indices.size == 0:
      return {k: np.zeros([0, self.num_sources], np.float32) for k in ("key", "frequency", "phase", "amplitude")}
    ds = tf.data.Dataset.from_tensor_slices(indices).map(lambda i: item_parameters(self.item_key(split, i)))
    return {k: v.numpy() for k, v in ds.batch(max(len(indices), 1)).get_single_element().items()}

  def _render_sources(self, split, index, start, length) -> tf.Tensor:
    """Samples [start, start + length) of every source of item `index`: float32 [N, length]."""
    p = item_parameters(self.item_key(split, index))
    return tf.stack([
        render(name, p["frequency"][k], p["phase"][k], p["amplitude"][k], start, length, self.sample_rate)
        for k, name in enumerate(self.source_names)])

  def _max_offset(self, length: int) -> int:
    """Crop offsets are uniform in [0, max_offset]. Longer than an item: offset 0, the signal continues."""
    return max(self.item_length - int(length), 0)

  # --- datasets ------------------------------------------------------------------------------------------

  def solo(self, split: str, crop_length: int, batch_size: int, seed: int, repeat: bool = True):
    """{name: float32 [batch, crop_length]}: per class an independent crop of a random item of `split`.

    Example j, class k: item idx ~ U{0 .. num_items - 1} (repeat=True) or the j-th item of a seeded
    permutation per class (repeat=False: one pass, every item once per class), offset o ~ U{0 .. item_length
    - crop_length}; the crop is source k of that item at samples [o, o + crop_length). `seed` picks items and
    offsets; the items themselves come from the data seed.
    """
    base.check_split(split)
    crop_length = int(crop_length)
    n_items = self.num_items[split]
    stream = base.stream_key(seed, "toy-solo", split)
    max_offset = self._max_offset(crop_length)
    if not repeat:  # one seeded permutation of the items per class
      perms = tf.cast(tf.stack([
          tf.argsort(tf.random.stateless_uniform([n_items], seed=base.example_key(stream, -1 - k)))
          for k in range(self.num_sources)]), tf.int64)

    def example(j):
      key_j = base.example_key(stream, j)
      out = {}
      for k, name in enumerate(self.source_names):
        key_jk = base.example_key(key_j, k)
        if repeat:
          index = base.uniform_int(base.example_key(key_jk, 0), n_items)
        else:
          index = perms[k, j]
        offset = base.uniform_int(base.example_key(key_jk, 1), max_offset + 1)
        p = item_parameters(self.item_key(split, index))
        out[name] = render(name, p["frequency"][k], p["phase"][k], p["amplitude"][k], offset, crop_length,
                           self.sample_rate)
        out[name].set_shape([crop_length])
      return out

    ds = base.index_stream(repeat, n_items).map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return base.finalize(ds, batch_size, repeat)

  def mixtures(self, split: str, length: int, batch_size: int, seed: int, repeat: bool = True):
    """{'mix': [batch, length], 'sources': [batch, N, length]}: excerpts of items, mix = mix_fn(sources).

    Example j: item idx ~ U{0 .. num_items - 1} (repeat=True) or idx = j (repeat=False: one pass over the
    split in order), offset o ~ U{0 .. item_length - length}, all sources at samples [o, o + length).
    """
    base.check_split(split)
    length = int(length)
    n_items = self.num_items[split]
    stream = base.stream_key(seed, "toy-mixtures", split)
    max_offset = self._max_offset(length)

    def example(j):
      key_j = base.example_key(stream, j)
      index = base.uniform_int(base.example_key(key_j, 0), n_items) if repeat else j
      offset = base.uniform_int(base.example_key(key_j, 1), max_offset + 1)
      sources = self._render_sources(split, index, offset, length)
      sources.set_shape([self.num_sources, length])
      return {"mix": self.mix_fn(sources), "sources": sources}

    ds = base.index_stream(repeat, n_items).map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return base.finalize(ds, batch_size, repeat)

  def item_name(self, index: int) -> str:
    return f"item_{index:05d}"

  def tracks(self, split: str, limit: Optional[int] = None) -> Iterator[Tuple[str, np.ndarray, np.ndarray]]:
    """(name, mix float32 [item_length], sources float32 [N, item_length]) for items 0 .. num_items - 1
    (or the first `limit`), named item_00000, item_00001, ..."""
    base.check_split(split)
    n = self.num_items[split] if limit is None else min(int(limit), self.num_items[split])

    def item(i):
      sources = self._render_sources(split, i, 0, self.item_length)
      return self.mix_fn(sources), sources

    ds = tf.data.Dataset.range(n).map(item, num_parallel_calls=tf.data.AUTOTUNE).prefetch(4)
    for i, (mix, sources) in enumerate(ds.as_numpy_iterator()):
      yield self.item_name(i), mix, sources
