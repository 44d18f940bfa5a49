"""Oracle baselines that need no model: the ideal ratio mask (IRM) from the true sources, and the mixture.

Ideal ratio mask (an upper bound for methods that mask the mixture's STFT with its phase):

  M_k = |S_k|^p / sum_j |S_j|^p      (p = 1: magnitude ratio; p = 2: the Wiener / power ratio)
  s^_k = ISTFT(M_k * STFT(m_sum))

S_k = STFT(s_k) of the TRUE sources, m_sum = sum_j s_j the mixture as a sum (a 'mean' mix is multiplied by
N first), so the estimates are on the sources' scale and sum back to m_sum. The STFT is vsep_tf.signal's
(periodic Hann, centred frames; hop = n_fft // 4 by default). Long windows matter for low fundamentals: on
the toy data a 4096-point STFT beats a 1024-point one by 7 to 15 dB SI-SDR (REFERENCES.md).

The mixture baseline hands back the mixture as every source's estimate, scaled to m_sum / N so that the
estimates add up to the mixture (a 'mean' mix as is, a 'sum' mix divided by N). SI-SDR does not see the
scale, but BSSEval's SDR does (bss_eval_images scores est - s with no gain): for N equal-power sources m_sum / N
scores 10 log10(N / (N - 1)) ~ +1.2 dB for N = 4, the raw sum 10 log10(1 / (N - 1)) ~ -4.8 dB.
REFERENCES.md's 1.2 dB for the chorales mixture baseline is the m_sum / N convention.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from vsep_tf import signal as signal_lib
from vsep_tf.data import mixing
from vsep_tf.separators.base import Separator
from vsep_tf.separators.masks import masks_to_sources, ratio_masks, to_sum_mix

def ideal_ratio_mask(mix, sources, mix_name: str, n_fft: int = 4096, hop: int = 0, power: float = 2.0):
  """IRM estimates from the true sources. mix [..., T], sources [..., N, T] -> float32 [..., N, T]."""
  hop = int(hop) or int(n_fft) // 4
  n_fft = int(n_fft)
  sources = tf.convert_to_tensor(sources, tf.float32)
  mix = tf.convert_to_tensor(mix, tf.float32)
  length = tf.shape(mix)[-1]
  num_sources = sources.shape[-2]
  spec_sources = signal_lib.stft(sources, n_fft, hop)
  spec_mix = signal_lib.stft(to_sum_mix(mix, mix_name, num_sources), n_fft, hop)
  masks = ratio_masks(spec_sources, power)
  est = masks_to_sources(masks, spec_mix, n_fft, hop, length)
  return est


class OracleIRM(Separator):
  """The ideal ratio mask as a separator that is handed the true sources (`separate_oracle`).

  Args:
    source_names, sample_rate, mix: those of the data.
    n_fft: STFT size (and window length); hop: 0 -> n_fft // 4; power: 1 (magnitude) or 2 (Wiener).
  """

  method = "oracle_irm"

  def __init__(self, source_names, sample_rate: int, mix: str, n_fft: int = 4096, hop: int = 0,
               power: float = 2.0):
    self.source_names = tuple(source_names)
    self.sample_rate = int(sample_rate)
    self.mix = mixing.check_mix(mix)
    self.n_fft = int(n_fft)
    self.hop = int(hop) or self.n_fft // 4
    self.power = float(power)
    if self.power <= 0:
      raise ValueError(f"power must be positive, got {power}")
    signal_lib.stft(tf.zeros([self.n_fft]), self.n_fft, self.hop)  # validates n_fft / hop

  def separate(self, mix):
    raise TypeError("the oracle needs the true sources: call separate_oracle(mix, sources)")

  def separate_oracle(self, mix, sources) -> np.ndarray:
    """mix [..., T], sources [..., N, T] (numpy) -> numpy float32 [..., N, T]."""
    return np.asarray(ideal_ratio_mask(mix, sources, self.mix, self.n_fft, self.hop, self.power))

  def separate_oracle_long(self, mix, sources, chunk_length: int = 2 ** 20, overlap: int = 0) -> np.ndarray:
    """separate_oracle of one long track in cross-faded chunks (memory flat in the track length).

    mix [T], sources [N, T] -> numpy float32 [N, T]. The mask is frame-local, so chunks of chunk_length
    samples cross-faded over `overlap` (default 2 n_fft) samples give the whole-track result up to the
    chunk edges' STFT padding, which the cross-fade hides.
    """
    mix = np.asarray(mix, np.float32)
    sources = np.asarray(sources, np.float32)
    total = mix.shape[-1]
    chunk = max(int(chunk_length), 4 * self.n_fft)
    if total <= chunk:
      return self.separate_oracle(mix, sources)
    overlap = int(overlap) or 2 * self.n_fft
    hop = chunk - overlap
    window = signal_lib.chunk_weights(chunk, hop).numpy()
    num = np.zeros(sources.shape, np.float64)
    den = np.zeros([total], np.float64)
    for s in range(0, total, hop):
      e = min(s + chunk, total)
      est = self.separate_oracle(mix[s:e], sources[:, s:e])
      w = window[:e - s]
      num[:, s:e] += est * w
      den[s:e] += w
      if e == total:
        break
    return (num / np.maximum(den, 1e-12)).astype(np.float32)

  def describe(self) -> dict:
    return {**super().describe(), "n_fft": self.n_fft, "hop": self.hop, "power": self.power}


class MixtureBaseline(Separator):
  """Every source's estimate is the mixture, as m_sum / N (the floor any separator must beat; module docstring)."""

  method = "mixture"

  def __init__(self, source_names, sample_rate: int, mix: str):
    self.source_names = tuple(source_names)
    self.sample_rate = int(sample_rate)
    self.mix = mixing.check_mix(mix)

  @property
  def scale(self) -> float:
    """m_sum / N = mix * scale: 1 for a 'mean' mix, 1 / N for a 'sum' mix."""
    return 1.0 if self.mix == "mean" else 1.0 / self.num_sources

  def separate(self, mix):
    mix = tf.convert_to_tensor(mix, tf.float32) * self.scale
    return tf.repeat(mix[..., None, :], self.num_sources, axis=-2)

  def separate_long(self, mix, chunk_length=None, overlap=None, batch_size=4, progress=None) -> np.ndarray:
    mix = np.asarray(mix, np.float32) * np.float32(self.scale)
    return np.repeat(mix[None], self.num_sources, axis=0)

  def describe(self) -> dict:
    return {**super().describe(), "scale": self.scale}
