"""The contract every separator follows, and chunked (memory-flat) separation of long signals.

    separate(mix [batch, time] float32 at `sample_rate`) -> sources [batch, N, time], in `source_names` order

A separator knows its source names, sample rate and mixing function f (sum or mean, the one its training data
used). `separate` takes excerpts of any length the model accepts; `separate_long` cuts a long signal into
cross-faded chunks (signal.chunk_weights), separates them in small batches and overlap-adds the estimates
normalised by the summed weights, so memory depends on the chunk size, not on the track length.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from vsep_tf import signal as signal_lib
from vsep_tf.data import mixing


class Separator:
  """Base class. Subclasses set the attributes below and implement `separate`."""

  method: str = "base"          # short name used in result tables: "variational", "langevin", "nmf", ...
  source_names: Sequence[str] = ()
  sample_rate: int = 0
  mix: str = "sum"              # the mixing function f the model assumes
  chunk_length: int = 2 ** 16   # preferred chunk for separate_long (samples)
  chunk_overlap: int = 2 ** 12  # cross-fade length between chunks (samples)

  @property
  def num_sources(self) -> int:
    return len(self.source_names)

  def separate(self, mix) -> tf.Tensor:
    """mix [batch, time] float32 -> [batch, N, time] float32."""
    raise NotImplementedError

  def separate_long(self, mix, chunk_length: Optional[int] = None, overlap: Optional[int] = None,
                    batch_size: int = 4, progress=None) -> np.ndarray:
    """Chunked overlap-add separation of one long signal. mix [time] (numpy/TF) -> numpy [N, time].

    Chunks of `chunk_length` samples every chunk_length - overlap samples, cross-faded with
    signal.chunk_weights and normalised by the summed weights (no seams, exact where the model is local).
    Only `batch_size` chunks and the two running sums are held at once. `progress(done, total)` is called
    after every batch.
    """
    mix = np.asarray(mix, np.float32)
    if mix.ndim != 1:
      raise ValueError(f"separate_long takes one mono signal [time], got shape {mix.shape}")
    total = mix.shape[0]
    chunk = int(chunk_length or self.chunk_length)
    overlap = int(self.chunk_overlap if overlap is None else overlap)
    if total <= chunk:
      return np.asarray(self.separate(mix[None]))[0]
    hop = chunk - overlap
    if hop <= 0:
      raise ValueError(f"overlap {overlap} must be smaller than the chunk length {chunk}")
    window = signal_lib.chunk_weights(chunk, hop).numpy()
    starts = list(range(0, max(total - chunk, 0) + hop, hop))
    starts = [s for s in starts if s < total]
    num = np.zeros([self.num_sources, total], np.float64)
    den = np.zeros([total], np.float64)
    for i in range(0, len(starts), batch_size):
      group = starts[i:i + batch_size]
      frames = np.zeros([len(group), chunk], np.float32)
      for j, s in enumerate(group):
        piece = mix[s:s + chunk]
        frames[j, :len(piece)] = piece
      est = np.asarray(self.separate(frames))  # [b, N, chunk]
      for j, s in enumerate(group):
        n = min(chunk, total - s)
        num[:, s:s + n] += est[j, :, :n] * window[:n]
        den[s:s + n] += window[:n]
      if progress is not None:
        progress(min(i + batch_size, len(starts)), len(starts))
    return (num / np.maximum(den, 1e-12)).astype(np.float32)

  def mix_fn(self, sources):
    """f(sources [..., N, T]) -> [..., T]."""
    return mixing.mix_sources(sources, self.mix)

  def describe(self) -> dict:
    return {"method": self.method, "source_names": list(self.source_names), "sample_rate": int(self.sample_rate),
            "mix": self.mix}


def consistency_projection(estimates, mix, mix_name: str):
  """Adds the same correction to every source so that f(estimates) == mix exactly (mixture consistency).

  estimates [..., N, T], mix [..., T]. For f = mean: s_k + (m - mean(s)); for f = sum: s_k + (m - sum(s)) / N.
  """
  estimates = tf.convert_to_tensor(estimates, tf.float32)
  residual = tf.convert_to_tensor(mix, tf.float32) - mixing.mix_sources(estimates, mix_name)
  if mix_name == "sum":
    residual = residual / tf.cast(tf.shape(estimates)[-2], tf.float32)
  return estimates + residual[..., None, :]
