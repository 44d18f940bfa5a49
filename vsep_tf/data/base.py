"""The interface every dataset family follows, and the tf.data plumbing they share.

A dataset family (toy, stems, musdb) is a `SourceDataset`:

  source_names: tuple of N class names, in a fixed order (the order of axis N below).
  sample_rate:  the MODEL rate in Hz (data is resampled to it).
  mix:          'sum' or 'mean'; mix_fn(sources [..., N, T]) -> [..., T] (see `mixing`).

  solo(split, crop_length, batch_size, seed, repeat=True)
      -> tf.data.Dataset of {source_name: float32 [batch, crop_length]}: independent random crops per
         class (each class may come from a different track). Feeds prior training, one prior per class.
  mixtures(split, length, batch_size, seed, repeat=True)
      -> tf.data.Dataset of {'mix': float32 [batch, length], 'sources': float32 [batch, N, length]},
         mix = mix_fn(sources). Feeds variational training and quick validation.
  tracks(split) -> iterator of (name, mix float32 [T], sources float32 [N, T]): whole tracks, evaluation.

Randomness is stateless: example j of a stream is a function of (seed, stream tag, j) only, through
`tf.random.stateless_*` ops keyed by `example_key(stream_key(seed, tag...), j)`. So a stream is the same
whatever the batching, the parallelism of `map`, or the number of workers reading it.

batch_size is the GLOBAL batch: the trainer hands the dataset to `strategy.experimental_distribute_dataset`,
which splits each batch over replicas. The auto-shard policy is DATA (each worker keeps every k-th batch of
the same deterministic stream); FILE sharding cannot work for generated or in-memory data.

repeat=True gives an endless stream with static batch shapes (drop_remainder); repeat=False one finite pass
(see each family for what a pass is), the last batch possibly smaller.
"""
from __future__ import annotations

import zlib
from typing import Iterator, Sequence, Tuple

import numpy as np
import tensorflow as tf

from vsep_tf.data import mixing

SPLITS = ("train", "valid", "test")


def check_split(split: str, available: Sequence[str] = SPLITS) -> str:
  if split not in available:
    raise ValueError(f"split must be one of {tuple(available)}, got {split!r}")
  return split


def stream_key(seed: int, *tags: str) -> tf.Tensor:
  """The stateless RNG key of one random stream: int64 [2] = [seed, crc32('tag/tag/...')].

  Different tags (e.g. 'solo', 'train') give unrelated streams for the same seed.
  """
  seed = int(seed)
  if not 0 <= seed < 2**63:
    raise ValueError(f"seed must be a non-negative 64-bit integer, got {seed}")
  tag = zlib.crc32("/".join(tags).encode("utf-8"))
  return tf.constant([seed, tag], tf.int64)


def example_key(key, index) -> tf.Tensor:
  """Key of item `index` of a stream: stateless_fold_in(key, index), int64 [2]. Nest for sub-streams."""
  return tf.random.experimental.stateless_fold_in(
      tf.cast(key, tf.int64), tf.cast(index, tf.int64))


def uniform_int(key, maxval, shape=()) -> tf.Tensor:
  """Stateless integers uniform in [0, maxval), int64 of `shape`; maxval broadcasts with shape.

  Drawn as floor(u * maxval) with u ~ U[0, 1) in float64 (maxval may be a tensor of per-track counts).
  """
  maxval = tf.cast(maxval, tf.int64)
  u = tf.random.stateless_uniform(shape, seed=key, dtype=tf.float64)
  n = tf.cast(maxval, tf.float64)
  return tf.minimum(tf.cast(tf.floor(u * n), tf.int64), tf.maximum(maxval - 1, 0))


def gain_range(gain_db) -> Tuple[float, float]:
  """gain_db: None/0 (off), x (uniform in [-x, +x] dB) or (lo, hi) dB -> (lo, hi)."""
  if gain_db is None:
    return (0.0, 0.0)
  if isinstance(gain_db, (tuple, list)):
    lo, hi = (float(g) for g in gain_db)
  else:
    lo, hi = -abs(float(gain_db)), abs(float(gain_db))
  if lo > hi:
    raise ValueError(f"gain_db range must have lo <= hi, got {gain_db!r}")
  return (lo, hi)


def random_gain(key, shape, db_range: Tuple[float, float]) -> tf.Tensor:
  """Linear gains 10^(g / 20) with g ~ U[lo, hi] dB, float32 of `shape` (all 1 when lo == hi == 0)."""
  lo, hi = db_range
  if lo == hi == 0.0:
    return tf.ones(shape, tf.float32)
  g = tf.random.stateless_uniform(shape, seed=key, minval=lo, maxval=hi, dtype=tf.float32)
  return tf.pow(10.0, g / 20.0)


def finalize(ds: tf.data.Dataset, batch_size: int, repeat: bool) -> tf.data.Dataset:
  """Batches (GLOBAL batch), sets DATA auto-sharding and deterministic order, prefetches."""
  batch_size = int(batch_size)
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  ds = ds.batch(batch_size, drop_remainder=repeat)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  options.deterministic = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def index_stream(repeat: bool, count: int) -> tf.data.Dataset:
  """Example indices j: 0, 1, 2, ... (endless) when repeat, else 0 .. count - 1."""
  if repeat:
    return tf.data.Dataset.range(2**62)
  return tf.data.Dataset.range(int(count))


class SourceDataset:
  """Base class of the dataset families. Subclasses set source_names, sample_rate, mix in __init__."""

  source_names: Tuple[str, ...] = ()
  sample_rate: int = 0
  mix: str = "sum"

  @property
  def num_sources(self) -> int:
    return len(self.source_names)

  def mix_fn(self, sources):
    """f(sources [..., N, T]) -> [..., T] with this dataset's mixing function (numpy or TF)."""
    return mixing.mix_sources(sources, self.mix)

  def solo(self, split: str, crop_length: int, batch_size: int, seed: int, repeat: bool = True):
    raise NotImplementedError

  def mixtures(self, split: str, length: int, batch_size: int, seed: int, repeat: bool = True):
    raise NotImplementedError

  def tracks(self, split: str) -> Iterator[Tuple[str, np.ndarray, np.ndarray]]:
    raise NotImplementedError

  def __repr__(self):
    return (f"{type(self).__name__}(sources={self.source_names}, sample_rate={self.sample_rate}, "
            f"mix={self.mix!r})")


def to_channels(x, channels, what: str = "audio") -> np.ndarray:
  """Decoded audio [n] or [n, C_file] as a data set's layout: [n] (channels None: the channels' mean) or
  [n, channels] (a mono file duplicated; any other count is an error naming `what`)."""
  x = np.asarray(x, np.float32)
  if x.ndim == 1:
    x = x[:, None]
  if channels is None:
    return x.mean(axis=1, dtype=np.float32)
  if x.shape[1] == 1:
    return np.repeat(x, channels, axis=1)
  if x.shape[1] != channels:
    raise ValueError(f"{what}: {x.shape[1]} channels; expected mono or {channels}")
  return x
