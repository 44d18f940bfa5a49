"""Solo audio of each source class and its non-silent magnitude STFT frames: what the per-class models
(NMF dictionaries, spectral priors) learn from. Mixtures are never read here."""
from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf

from vsep_tf import signal as signal_lib

SILENCE_DB = 60.0  # training frames this far below the loudest frame of their class are left out


def solo_audio(dataset, split: str, max_seconds: float) -> Dict[str, list]:
  """{class: [stem [T], ...]}: each class's solo audio from the split's tracks, read in order until every
  class has `max_seconds` (the mixtures are not used)."""
  limit = int(max_seconds * dataset.sample_rate)
  out = {name: [] for name in dataset.source_names}
  have = 0
  for _, _, sources in dataset.tracks(split):
    sources = np.asarray(sources, np.float32)
    if sources.ndim == 3:  # [N, T, C]: mono for the dictionaries
      sources = sources.mean(axis=-1)
    for k, name in enumerate(dataset.source_names):
      out[name].append(sources[k])
    have += sources.shape[-1]
    if have >= limit:
      break
  if not have:
    raise ValueError(f"{dataset!r} has no {split!r} tracks to learn NMF dictionaries from")
  return out


def magnitude_spectrogram(x, n_fft: int, hop: int) -> np.ndarray:
  """|STFT(x)| of vsep_tf.signal: [..., T] -> float32 [..., bins, frames] (bins first, as NMF wants)."""
  spec = signal_lib.stft(tf.convert_to_tensor(x, tf.float32), n_fft, hop)
  return np.swapaxes(np.abs(spec.numpy()), -1, -2)


def drop_silent_frames(v, silence_db: float = SILENCE_DB) -> np.ndarray:
  """Keeps the frames (columns) of v [bins, frames] whose energy is within silence_db of the loudest."""
  energy = np.sum(np.square(v, dtype=np.float64), axis=0)
  if energy.size == 0 or energy.max() <= 0:
    return v[:, :0]
  return v[:, energy > energy.max() * 10.0 ** (-silence_db / 10.0)]


def solo_frames(signals, n_fft: int, hop: int) -> np.ndarray:
  """The non-silent magnitude STFT frames of solo signals, concatenated: float32 [bins, frames] (signals
  shorter than half a window are skipped)."""
  specs = [drop_silent_frames(magnitude_spectrogram(x, n_fft, hop)) for x in signals if len(x) >= n_fft // 2]
  return np.concatenate(specs, axis=1) if specs else np.zeros([n_fft // 2 + 1, 0], np.float32)
