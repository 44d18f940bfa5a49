"""Random crops and whole tracks from recorded multitracks: the machinery StemFolder and MusdbData share.

A subclass lists tracks per split (records with `.name` and `.length` T at the model rate) and reads
audio; this class turns that into the `SourceDataset` streams.

Audio is [T] per source when mono, [T, C] when the dataset keeps C channels (`channels`); batches add the
batch axis in front and the source axis N before time: solo {name: [batch, L(, C)]}, mixtures
{'mix': [batch, L(, C)], 'sources': [batch, N, L(, C)]}.

Two storage modes, same streams:

* in memory: a split's stems are decoded once, on first use, into one flat float32 tensor per source
  (tracks concatenated); crops are tf.gather's in the graph.
* streaming (`streaming=True`, or automatically when a split's decoded stems exceed `max_memory_mb`): each
  crop is read from disk by the subclass in a tf.numpy_function (`read_excerpt` seeks to the excerpt).

Both modes draw the same (track, offset) pairs from the same stateless keys: example j of a stream keyed by
(seed, split) is the same in either mode (up to resampling round-off at excerpt edges).

Sampling: a crop picks a track uniformly, then an offset uniformly in [0, T - L] (a track shorter than the
crop L gives offset 0 and zeros after its end). With `min_rms` > 0, a SOLO crop whose RMS (before any gain)
is below min_rms is redrawn (new track and offset) up to `min_rms_tries` draws; if all are quieter the
loudest draw is kept, so a class that is mostly silence cannot stall the stream. Recorded stems have
silences (rests, instruments that stop, vocals absent for a verse): without this a prior sees many all-zero
crops, and the zero signal is a known degenerate optimum of separation by priors.

Augmentation (`augment`; default: on for split 'train' only, so held-out streams stay clean): each crop /
source is scaled by a random gain uniform in dB (`gain_db`: x for [-x, x] dB, or (lo, hi)).
mixtures(remix=True) draws every source from its own track and offset: mixes that never occur in the data.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from vsep_tf import audio
from vsep_tf.data import base
from vsep_tf.data import mixing


# Samples of the slower rate read beyond each side of an excerpt before resampling: 4x the reach of
# audio.resample's filter today, so a longer filter there does not silently break excerpt parity.
EXCERPT_MARGIN = 128


def model_length(frames: int, file_rate: int, sample_rate: int) -> int:
  """Samples of a file at the model rate: ceil(frames * sample_rate / file_rate), as audio.resample gives."""
  return -(-int(frames) * int(sample_rate) // int(file_rate))


def read_excerpt(read_frames: Callable[[int, int], np.ndarray], frames: int, file_rate: int, sample_rate: int,
                 start: int, length: int, track_length: Optional[int] = None,
                 channels: Optional[int] = None) -> np.ndarray:
  """Samples [start, start + length) at `sample_rate` of a file at `file_rate`: float32 [length(, channels)].

  Equals the same slice of the whole file resampled by audio.resample (zeros past the file's end, or past
  `track_length`), but reads only the excerpt: read_frames(first_frame, num_frames) -> [n] or [n, C] float32
  (n may be short at the file's end). With g = gcd(file_rate, sample_rate), model sample p0 = q * R/g sits
  exactly on file frame q * r/g, so reading from there and resampling puts output m on model sample p0 + m.
  A margin of EXCERPT_MARGIN samples of the slower rate on both sides covers the resampling filter
  (audio.resample's FIR reaches 32 samples of the slower rate each side), so the excerpt matches the
  whole-file resampling to float round-off (tested).
  """
  start, length = int(start), int(length)
  out = np.zeros([length] if channels is None else [length, channels], np.float32)
  end = start + length if track_length is None else min(start + length, int(track_length))
  if end <= start:
    return out
  if file_rate == sample_rate:
    if start >= frames:
      return out
    x = read_frames(start, min(end, frames) - start)
    out[:min(len(x), end - start)] = x[:end - start]
    return out
  g = math.gcd(file_rate, sample_rate)
  block_model, block_file = sample_rate // g, file_rate // g
  margin = EXCERPT_MARGIN * max(1, -(-sample_rate // file_rate))  # model samples
  p0 = max(start - margin, 0) // block_model * block_model
  f0 = p0 // block_model * block_file
  if f0 >= frames:
    return out
  f1 = min(-(-(end + margin) * file_rate // sample_rate), frames)
  x = read_frames(f0, f1 - f0)
  y = audio.resample(x, file_rate, sample_rate)[start - p0:end - p0]
  out[:len(y)] = y
  return out


class RecordedData(base.SourceDataset):
  """Base of the recorded families. Subclasses call `_init_sampling(...)` and implement the hooks below."""

  channels: Optional[int] = None  # None: mono [T]; C: [T, C]

  def _init_sampling(self, mix, min_rms, min_rms_tries, gain_db, streaming, max_memory_mb):
    self.mix = mixing.check_mix(mix)
    self.min_rms = float(min_rms or 0.0)
    if self.min_rms < 0:
      raise ValueError(f"min_rms must be >= 0, got {min_rms}")
    self.min_rms_tries = max(int(min_rms_tries), 1)
    self.gain_range = base.gain_range(gain_db)
    self.streaming = streaming
    self.max_memory_mb = float(max_memory_mb)
    self._memory: Dict[str, Dict[str, object]] = {}

  # --- hooks ---------------------------------------------------------------------------------------------

  def track_list(self, split: str) -> List:
    """Records with .name and .length (T at the model rate) of a split, in a fixed order."""
    raise NotImplementedError

  def read_source(self, split: str, index: int, source: int, start: int = 0,
                  length: Optional[int] = None) -> np.ndarray:
    """Source `source` of track `index`, samples [start, start + length) at the model rate, zeros past T
    (length None: the whole track, [T]): float32 [length(, C)]."""
    raise NotImplementedError

  def read_mixture(self, split: str, index: int) -> Optional[np.ndarray]:
    """The track's mixture file at the model rate, [T(, C)], or None if it has none."""
    return None

  # --- shared --------------------------------------------------------------------------------------------

  def mix_fn(self, sources):
    """f(sources [..., N, T(, C)]) -> [..., T(, C)]."""
    return mixing.mix_sources(sources, self.mix, axis=-2 if self.channels is None else -3)

  def _frame_shape(self, length: int) -> List[int]:
    return [length] if self.channels is None else [length, self.channels]

  def decoded_megabytes(self, split: str) -> float:
    """Size of a split's stems decoded to float32 at the model rate, in MB."""
    per_sample = self.num_sources * 4 * (self.channels or 1)
    return sum(t.length for t in self.track_list(split)) * per_sample / 2**20

  def is_streaming(self, split: str) -> bool:
    if self.streaming is not None:
      return bool(self.streaming)
    return self.decoded_megabytes(split) > self.max_memory_mb

  def _in_memory(self, split: str):
    """Flat per-source buffers of a split, decoded once: {'flat': N tensors [sum T(, C)], 'starts',
    'lengths': [num_tracks] int64}."""
    if split not in self._memory:
      tracks = self.track_list(split)
      logging.info("%s: decoding %d %s tracks into memory (%.0f MB)", type(self).__name__, len(tracks),
                   split, self.decoded_megabytes(split))
      per_source = [[self.read_source(split, i, k) for i in range(len(tracks))]
                    for k in range(self.num_sources)]
      lengths = np.array([t.length for t in tracks], np.int64)
      self._memory[split] = {
          "flat": [tf.constant(np.concatenate(chunks)) for chunks in per_source],
          "starts": tf.constant(np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)),
          "lengths": tf.constant(lengths),
      }
    return self._memory[split]

  def _gather(self, mem, k: int, track, offset, length: int) -> tf.Tensor:
    """Samples [offset, offset + length) of `track`, source k, from memory; zeros past the track's end."""
    flat = mem["flat"][k]
    pos = offset + tf.range(length, dtype=tf.int64)
    valid = pos < mem["lengths"][track]
    idx = tf.minimum(mem["starts"][track] + pos, tf.cast(tf.shape(flat)[0], tf.int64) - 1)
    if self.channels is not None:
      valid = valid[:, None]
    return tf.where(valid, tf.gather(flat, idx), 0.0)

  @staticmethod
  def _draw(key, lengths, n_tracks: int, length: int, track=None):
    """(track, offset): track ~ U{0..n-1} unless given, offset ~ U{0 .. max(T_track - length, 0)}."""
    if track is None:
      track = base.uniform_int(base.example_key(key, 0), n_tracks)
    max_offset = tf.maximum(tf.gather(lengths, track) - length, 0)
    return track, base.uniform_int(base.example_key(key, 1), max_offset + 1)

  @staticmethod
  def _permutations(stream, n: int, count: int) -> tf.Tensor:
    """count seeded permutations of range(n): int64 [count, n]."""
    return tf.cast(tf.stack([
        tf.argsort(tf.random.stateless_uniform([n], seed=base.example_key(stream, -1 - k)))
        for k in range(count)]), tf.int64)

  def _solo_reader(self, split: str, length: int):
    """numpy (source k, tracks [M], offsets [M]) -> [length(, C)]: the first draw whose RMS reaches
    min_rms, else the loudest."""
    def read(k, track_ids, offsets):
      best, best_rms = None, -1.0
      for t, o in zip(track_ids, offsets):
        x = self.read_source(split, int(t), int(k), int(o), length)
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
        if rms > best_rms:
          best, best_rms = x, rms
        if rms >= self.min_rms:
          return x
      return best
    return read

  def _augment(self, split: str, augment: Optional[bool]) -> bool:
    return (split == "train") if augment is None else bool(augment)

  # --- datasets ------------------------------------------------------------------------------------------

  def solo(self, split: str, crop_length: int, batch_size: int, seed: int, repeat: bool = True,
           augment: Optional[bool] = None):
    """{name: float32 [batch, crop_length(, C)]}: per class an independent crop (own track and offset).

    repeat=False: one pass of len(tracks) examples, class k's example j from track perm_k[j] (a seeded
    permutation per class). augment (default: split == 'train'): the gain_db augmentation. Silent crops are
    redrawn when min_rms > 0 (module docstring).
    """
    tracks = self.track_list(split)
    n_tracks, crop_length = len(tracks), int(crop_length)
    lengths = tf.constant(np.array([t.length for t in tracks], np.int64))
    stream = base.stream_key(seed, "recorded-solo", split)
    tries = self.min_rms_tries if self.min_rms > 0 else 1
    gain = self._augment(split, augment)
    streaming = self.is_streaming(split)
    mem = None if streaming else self._in_memory(split)
    reader = self._solo_reader(split, crop_length) if streaming else None
    perms = None if repeat else self._permutations(stream, n_tracks, self.num_sources)
    shape = self._frame_shape(crop_length)

    def rms(x):
      return tf.sqrt(tf.reduce_mean(tf.square(x)))

    def from_memory(k, draw):
      def fetch(m):
        t, o = draw(m)
        return self._gather(mem, k, t, o, crop_length)

      x0 = fetch(0)
      if tries == 1:
        return x0

      def cond(m, x, best, best_rms):
        return tf.logical_and(m < tries, rms(x) < self.min_rms)

      def body(m, x, best, best_rms):
        x = fetch(m)
        r = rms(x)
        better = r > best_rms
        return m + 1, x, tf.where(better, x, best), tf.where(better, r, best_rms)

      _, x, best, _ = tf.while_loop(cond, body, (tf.constant(1, tf.int64), x0, x0, rms(x0)))
      return tf.where(rms(x) >= self.min_rms, x, best)

    def example(j):
      key_j = base.example_key(stream, j)
      out = {}
      for k, name in enumerate(self.source_names):
        key_jk = base.example_key(key_j, k)
        fixed = None if repeat else perms[k, j]

        def draw(m, key_jk=key_jk, fixed=fixed):
          return self._draw(base.example_key(key_jk, m), lengths, n_tracks, crop_length, fixed)

        if streaming:
          cands = [draw(m) for m in range(tries)]
          x = tf.numpy_function(reader, [tf.constant(k, tf.int64), tf.stack([c[0] for c in cands]),
                                         tf.stack([c[1] for c in cands])], tf.float32, stateful=False)
        else:
          x = from_memory(k, draw)
        if gain:
          x = x * base.random_gain(base.example_key(key_jk, -1), [], self.gain_range)
        out[name] = tf.ensure_shape(x, shape)
      return out

    ds = base.index_stream(repeat, n_tracks).map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return base.finalize(ds, batch_size, repeat)

  def mixtures(self, split: str, length: int, batch_size: int, seed: int, repeat: bool = True,
               augment: Optional[bool] = None, remix: bool = False):
    """{'mix': [batch, length(, C)], 'sources': [batch, N, length(, C)]}, mix = mix_fn(sources).

    repeat=True: a random track and offset per example; repeat=False: one pass, example j from track j.
    remix: every source from its own random track and offset (repeat=False: a seeded permutation per
    source). augment (default: split == 'train'): a random gain per source before mixing.
    """
    tracks = self.track_list(split)
    n_tracks, length = len(tracks), int(length)
    lengths = tf.constant(np.array([t.length for t in tracks], np.int64))
    stream = base.stream_key(seed, "recorded-mixtures", split)
    gain = self._augment(split, augment)
    streaming = self.is_streaming(split)
    mem = None if streaming else self._in_memory(split)
    perms = self._permutations(stream, n_tracks, self.num_sources) if (remix and not repeat) else None

    def read(track_ids, offsets):
      return np.stack([self.read_source(split, int(t), k, int(o), length)
                       for k, (t, o) in enumerate(zip(track_ids, offsets))])

    def example(j):
      key_j = base.example_key(stream, j)
      draws = []
      for k in range(self.num_sources):
        key = base.example_key(key_j, k) if remix else key_j
        fixed = None if repeat else (perms[k, j] if remix else j)
        draws.append(self._draw(key, lengths, n_tracks, length, fixed))
      ts = tf.stack([d[0] for d in draws])
      offs = tf.stack([d[1] for d in draws])
      if streaming:
        sources = tf.numpy_function(read, [ts, offs], tf.float32, stateful=False)
      else:
        sources = tf.stack([self._gather(mem, k, ts[k], offs[k], length) for k in range(self.num_sources)])
      if gain:
        g = base.random_gain(base.example_key(key_j, -1), [self.num_sources], self.gain_range)
        sources = sources * tf.reshape(g, [self.num_sources] + [1] * (len(self._frame_shape(1))))
      sources = tf.ensure_shape(sources, [self.num_sources] + self._frame_shape(length))
      return {"mix": self.mix_fn(sources), "sources": sources}

    ds = base.index_stream(repeat, n_tracks).map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return base.finalize(ds, batch_size, repeat)

  def tracks(self, split: str) -> Iterator[Tuple[str, np.ndarray, np.ndarray]]:
    """(name, mix float32 [T(, C)], sources float32 [N, T(, C)]) per track, in the split's order.

    mix is the track's mixture FILE when it has one (at the model rate, cut to T), else mix_fn(sources).
    """
    for i, t in enumerate(self.track_list(split)):
      mem = self._memory.get(split)
      if mem is not None:
        s0 = int(mem["starts"][i])
        sources = np.stack([f[s0:s0 + t.length].numpy() for f in mem["flat"]])
      else:
        sources = np.stack([self.read_source(split, i, k) for k in range(self.num_sources)])
      mix = self.read_mixture(split, i)
      if mix is None:
        mix = self.mix_fn(sources)
      yield t.name, mix, sources
