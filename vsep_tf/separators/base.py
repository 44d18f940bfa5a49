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


def channels_batch(mix) -> np.ndarray:
  """mix as float32 numpy [batch, channels, time], the input of Separator.separate_channels (ValueError if not
  3-D)."""
  mix = np.asarray(mix, np.float32)
  if mix.ndim != 3:
    raise ValueError(f"separate_channels takes [batch, channels, time], got shape {mix.shape}")
  return mix


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

  def separate_channels(self, mix) -> np.ndarray:
    """mix [batch, channels, time] -> [batch, channels, N, time]: every channel on its own here; mask
    separators override it to use what the channels share (one set of masks from the mid channel)."""
    mix = channels_batch(mix)
    b, c, t = mix.shape
    return np.asarray(self.separate(mix.reshape(b * c, t))).reshape(b, c, self.num_sources, t)

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

  def separate_stream(self, blocks, total: int, chunk_length: Optional[int] = None,
                      overlap: Optional[int] = None, batch_size: int = 4, progress=None):
    """separate_long for a (multichannel) signal that arrives in blocks; a generator of finished estimates.

    blocks: iterable of float arrays [n_i, C] (or [n_i] for one channel), sum n_i = total (more is ignored).
      The channels of a chunk go to `separate_channels` together.
    Yields float32 [N, m_j, C] (or [N, m_j]) in order, sum m_j = total, as soon as no later chunk can change
    them. Where channels are separated on their own, channel c of the concatenated yields equals
    separate_long(mix[:, c], chunk_length, overlap): the same chunks, cross-fade weights and normalisation. Memory: about (chunk + batch_size * hop) samples of
    input and of the two running sums, whatever `total`: what long files need (vsep_tf.inference streams
    files through it). `batch_size` counts rows passed to `separate` (chunks x channels).
    """
    total = int(total)
    chunk = int(chunk_length or self.chunk_length)
    overlap = int(self.chunk_overlap if overlap is None else overlap)
    source_iter = iter(blocks)
    state = {"buf": None, "start": 0, "squeeze": False}  # input samples [start, start + len(buf)), [n, C]

    def need(stop):
      while state["buf"] is None or state["start"] + state["buf"].shape[0] < stop:
        try:
          b = np.asarray(next(source_iter), np.float32)
        except StopIteration:
          have = 0 if state["buf"] is None else state["start"] + state["buf"].shape[0]
          raise ValueError(f"separate_stream: the blocks ended after {have} of {total} samples") from None
        if b.ndim == 1:
          state["squeeze"] = True
          b = b[:, None]
        if b.ndim != 2:
          raise ValueError(f"separate_stream takes blocks [time] or [time, channels], got shape {b.shape}")
        state["buf"] = b if state["buf"] is None else np.concatenate([state["buf"], b], axis=0)

    def shaped(est):  # [N, n, C] -> [N, n] for 1-D blocks
      return est[..., 0] if state["squeeze"] else est

    if total <= 0:
      return
    if total <= chunk:
      need(total)
      x = state["buf"][:total]
      est = self.separate_channels(np.ascontiguousarray(x.T)[None])[0]  # [C, N, total]
      if progress is not None:
        progress(1, 1)
      yield shaped(np.transpose(est, [1, 2, 0]).astype(np.float32))
      return
    hop = chunk - overlap
    if hop <= 0:
      raise ValueError(f"overlap {overlap} must be smaller than the chunk length {chunk}")
    window = signal_lib.chunk_weights(chunk, hop).numpy()  # float32, as in separate_long (same sums)
    starts = [s for s in range(0, max(total - chunk, 0) + hop, hop) if s < total]
    need(1)
    channels = state["buf"].shape[1]
    per_call = max(1, batch_size // channels)
    acc_start = 0
    num = np.zeros([self.num_sources, channels, 0], np.float64)
    den = np.zeros([0], np.float64)
    for i in range(0, len(starts), per_call):
      group = starts[i:i + per_call]
      stop = min(group[-1] + chunk, total)
      need(stop)
      grow = stop - acc_start - den.shape[0]
      if grow > 0:
        num = np.concatenate([num, np.zeros([self.num_sources, channels, grow])], axis=2)
        den = np.concatenate([den, np.zeros([grow])])
      frames = np.zeros([len(group), channels, chunk], np.float32)
      for j, s in enumerate(group):
        piece = state["buf"][s - state["start"]:min(s + chunk, total) - state["start"]]
        frames[j, :, :piece.shape[0]] = piece.T
      est = self.separate_channels(frames)  # [b, C, N, chunk]
      for j, s in enumerate(group):
        n = min(chunk, total - s)
        a = s - acc_start
        num[:, :, a:a + n] += np.transpose(est[j, :, :, :n], [1, 0, 2]) * window[:n]
        den[a:a + n] += window[:n]
      if progress is not None:
        progress(min(i + per_call, len(starts)), len(starts))
      done = starts[i + per_call] if i + per_call < len(starts) else total  # no later chunk reaches below
      k = done - acc_start
      out = num[:, :, :k] / np.maximum(den[:k], 1e-12)
      yield shaped(np.transpose(out, [0, 2, 1]).astype(np.float32))
      num, den, acc_start = num[:, :, k:], den[k:], done
      state["buf"] = state["buf"][done - state["start"]:]
      state["start"] = done

  def mix_fn(self, sources):
    """f(sources [..., N, T]) -> [..., T]."""
    return mixing.mix_sources(sources, self.mix)

  def describe(self) -> dict:
    return {"method": self.method, "source_names": list(self.source_names), "sample_rate": int(self.sample_rate),
            "mix": self.mix}


def separate_fixed_rows(run_chunk, mix, chunk_length: int, num_sources: int) -> np.ndarray:
  """Separates [batch, time <= chunk_length] row by row with a model of FIXED input [1, chunk_length]
  (TFLite, TF-Serving's separate_chunk): each row zero-padded to the chunk, the estimates cut back.
  run_chunk(padded float32 [1, chunk]) -> [1, N, chunk]. Returns numpy [batch, N, time]."""
  mix = np.asarray(mix, np.float32)
  if mix.ndim != 2:
    raise ValueError(f"mix must be [batch, time], got shape {mix.shape}")
  time = mix.shape[1]
  if time > chunk_length:
    raise ValueError(f"this model takes at most {chunk_length} samples per row, got {time}; use separate_long")
  out = np.zeros([mix.shape[0], num_sources, time], np.float32)
  row = np.zeros([1, chunk_length], np.float32)
  for i in range(mix.shape[0]):
    row[:] = 0.0
    row[0, :time] = mix[i]
    out[i] = np.asarray(run_chunk(row))[0, :, :time]
  return out


def consistency_projection(estimates, mix, mix_name: str):
  """Adds the same correction to every source so that f(estimates) == mix exactly (mixture consistency).

  estimates [..., N, T], mix [..., T]. For f = mean: s_k + (m - mean(s)); for f = sum: s_k + (m - sum(s)) / N.
  """
  estimates = tf.convert_to_tensor(estimates, tf.float32)
  residual = tf.convert_to_tensor(mix, tf.float32) - mixing.mix_sources(estimates, mix_name)
  if mix_name == "sum":
    residual = residual / tf.cast(tf.shape(estimates)[-2], tf.float32)
  return estimates + residual[..., None, :]
