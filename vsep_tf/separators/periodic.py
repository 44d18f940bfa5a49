r"""Periodic-component search: split the mix into steady tones class-agnostically, let the priors name them.

The posterior checks (tools/posterior_check.py) found that the toy score priors rank the TRUE sources first
among all assignments of them to the classes, while no sampler started from the mix reaches them: the search
has to move whole tones (fundamental and harmonics) between sources. This separator does that search directly.

ASSUMPTION, named: every source is ONE STEADY PERIODIC TONE over the excerpt (a fixed waveform repeated at a
fixed frequency), the toy data's model. It is not a separator for music whose notes change; on such data use
the encoder or the Langevin separator. Two steps:

1. Class-agnostic decomposition (no prior, no class knowledge): the mix is modelled as a sum of N periodic
   components c_j[t] = g_j(frac(f_j t / rate)), each waveform g_j a free table of M_j bins per period.
   - Frequencies by estimation-cancellation: the strongest spectral peak of what is left (Hann window, long
     zero-padded FFT, parabolic interpolation) starts a component; its frequency is refined by maximising the
     energy the fold explains (epoch folding: E(f) = sum_b n_b mean_b(r)^2 over the M bins), on a coarse-to-fine
     grid of spans in units of 1 / duration, and the component is removed before the next peak is sought.
   - Back-fitting (Gauss-Seidel for the joint least-squares fit): each table in turn becomes the bin means of
     the mix minus the other components, refining its frequency again during the first sweeps.
   - Repairs: while the residual holds more than `residual_tolerance` of the mix energy, the residual's
     strongest peak may replace any component, and any component may drop to half its frequency (a missed
     tone, a duplicate, a second harmonic taken for a fundamental); the trial that lowers the residual most is
     kept if the residual falls by the factor `repair_gain`.
   The bins per period are capped at `bins_per_period` x (samples per period): a finer table also fits
   content that is merely slow in time (at frequencies near rate / q the cycle positions drift slowly, so a
   bin would only see a few stretches of the signal), i.e. it would absorb the other sources.
2. Assignment by the priors: every prior scores every component (scaled to a source) with its diffusion-ELBO
   energy (ScorePrior.denoising_energy, -log p up to a constant); the assignment minimising the summed energy
   (scipy.optimize.linear_sum_assignment, exact) names the components. Whatever the components leave of the
   mix is split equally, so the estimates are mixture-consistent.

The priors' only job is step 2; the quality of the waveforms comes from step 1. Runs in numpy on the host
(float64 cycle positions), not exportable as a TensorFlow graph.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from vsep_tf.data import mixing
from vsep_tf.separators.base import Separator
from vsep_tf.separators.masks import to_sum_mix

# Refinement spans, in units of 1 / duration (the spectral resolution), coarse to fine, with the bins per
# period used at each (then capped by bins_per_period x samples per period).
REFINE_SPANS = (1.6, 0.65, 0.16, 0.065, 0.016, 0.0065, 0.0016)
REFINE_BINS = (64, 128, 256, 512, 1024, 2048, 2048)
REFINE_POINTS = 61


def periodic_hyperparameters(bins_per_period: float = 4.0, max_bins: int = 2048, sweeps: int = 30,
                             repairs: int = 3, residual_tolerance: float = 1e-3, repair_gain: float = 0.7,
                             min_frequency: float = 20.0, max_frequency: float = 0.0,
                             energy_sigma_min: float = 0.01, energy_sigma_max: float = 1.0,
                             energy_levels: int = 12, energy_length: int = 16384, energy_seed: int = 0) -> Dict:
  """Settings of the periodic-component search (their defaults), as a factory whose keyword arguments become
  'periodic.<name>' flags. max_frequency 0: up to 0.45 x the sample rate. energy_*: the noise grid and seed
  of the priors' energy used to assign components to classes, read on the middle energy_length samples (a steady
  tone looks alike throughout; 0: all)."""
  return dict(bins_per_period=bins_per_period, max_bins=max_bins, sweeps=sweeps, repairs=repairs,
              residual_tolerance=residual_tolerance, repair_gain=repair_gain, min_frequency=min_frequency,
              max_frequency=max_frequency, energy_sigma_min=energy_sigma_min, energy_sigma_max=energy_sigma_max,
              energy_levels=energy_levels, energy_length=energy_length, energy_seed=energy_seed)


# ------------------------------------------------------------------------------------------ decomposition
def spectral_peaks(x: np.ndarray, sample_rate: int, num: int, exclude: Sequence[float] = (),
                   min_frequency: float = 20.0, max_frequency: float = 0.0) -> np.ndarray:
  """The `num` strongest spectral peaks of x [time] in Hz, strongest first, at least 3 / duration away from
  each other and from every frequency in `exclude` (Hann window, FFT zero-padded to >= 16x, parabolic
  interpolation of the log magnitude). Fewer if fewer exist."""
  n = len(x)
  nfft = 1 << int(np.ceil(np.log2(16 * n)))
  spec = np.abs(np.fft.rfft(x * np.hanning(n), nfft))
  df = sample_rate / nfft
  hi_f = max_frequency if max_frequency > 0 else 0.45 * sample_rate
  lo, hi = int(np.ceil(min_frequency / df)), int(hi_f / df)
  s = spec[lo:hi + 1]
  loc = np.flatnonzero((s[1:-1] > s[:-2]) & (s[1:-1] >= s[2:])) + 1
  guard = 3.0 * sample_rate / n  # beyond the Hann main lobe (2 / duration) and first side lobe (2.5)
  found: List[float] = []
  for i in loc[np.argsort(s[loc])[::-1]]:
    a, b, c = np.log(s[i - 1:i + 2] + 1e-30)
    curvature = a - 2.0 * b + c
    f = (lo + i + (0.5 * (a - c) / curvature if curvature < 0 else 0.0)) * df
    if all(abs(f - g) > guard for g in list(exclude) + found):
      found.append(f)
      if len(found) == num:
        break
  return np.asarray(found, np.float64)


def num_bins(frequency: float, sample_rate: int, bins: int, bins_per_period: float) -> int:
  """Table size for a tone at `frequency`: `bins`, capped at bins_per_period x samples per period (>= 8)."""
  return int(max(8, min(bins, round(bins_per_period * sample_rate / frequency))))


def cycle_bins(frequency: float, length: int, sample_rate: int, bins: int) -> np.ndarray:
  """The bin of every sample's cycle position frac(f t / rate), t = 0 .. length - 1: int [length]."""
  u = np.mod(frequency * np.arange(length, dtype=np.float64) / sample_rate, 1.0)
  return np.minimum((u * bins).astype(np.int64), bins - 1)


def fold(r: np.ndarray, index: np.ndarray, bins: int) -> Tuple[np.ndarray, float]:
  """Least-squares periodic fit of r: (component [time] = bin means of r read back per sample, explained
  energy sum_b n_b mean_b^2)."""
  count = np.bincount(index, minlength=bins)
  table = np.bincount(index, weights=r, minlength=bins) / np.maximum(count, 1)
  return table[index], float(np.sum(count * table ** 2))


def refine_frequency(r: np.ndarray, frequency: float, sample_rate: int, spans, bins_schedule,
                     bins_per_period: float) -> float:
  """Grid search of the frequency whose periodic fit explains most of r, span by span (Hz), coarse to fine."""
  n = len(r)
  for span, bins in zip(spans, bins_schedule):
    grid = frequency + np.linspace(-span, span, REFINE_POINTS)
    energies = []
    for f in grid:
      m = num_bins(f, sample_rate, bins, bins_per_period)
      energies.append(fold(r, cycle_bins(f, n, sample_rate, m), m)[1] if f > 0 else -np.inf)
    frequency = float(grid[int(np.argmax(energies))])
  return frequency


class PeriodicDecomposition:
  """Class-agnostic split of a mix into `num` steady periodic components (module docstring, step 1)."""

  def __init__(self, sample_rate: int, **params):
    self.sample_rate = int(sample_rate)
    self.params = periodic_hyperparameters(**params)

  def _fit(self, r, f):
    m = num_bins(f, self.sample_rate, self.params["max_bins"], self.params["bins_per_period"])
    return fold(r, cycle_bins(f, len(r), self.sample_rate, m), m)[0]

  def _backfit(self, mix, comps, freqs, sweeps, refine_sweeps):
    spans = np.asarray(REFINE_SPANS) / (len(mix) / self.sample_rate)
    for sweep in range(sweeps):
      for k in range(len(freqs)):
        r = mix - comps.sum(0) + comps[k]
        if sweep < refine_sweeps:
          freqs[k] = refine_frequency(r, freqs[k], self.sample_rate, spans[sweep:sweep + 1],
                                      REFINE_BINS[sweep:sweep + 1], self.params["bins_per_period"])
        comps[k] = self._fit(r, freqs[k])
    return comps, freqs

  def _peak(self, r, exclude):
    p = self.params
    peaks = spectral_peaks(r, self.sample_rate, 1, exclude, p["min_frequency"], p["max_frequency"])
    return float(peaks[0]) if len(peaks) else None

  def __call__(self, mix, num: int) -> Tuple[np.ndarray, np.ndarray]:
    """mix [time] -> (components float64 [num, time], frequencies Hz [num]). Components sum to about the mix;
    a component with no tone left to claim stays silent (frequency 0)."""
    mix = np.asarray(mix, np.float64)
    if mix.ndim != 1:
      raise ValueError(f"PeriodicDecomposition takes one mono signal [time], got shape {mix.shape}")
    if not np.all(np.isfinite(mix)):
      raise ValueError("the mix has non-finite samples (NaN or Inf)")
    n, p = len(mix), self.params
    comps, freqs = np.zeros([num, n]), np.zeros([num])
    total = float(np.sum(mix ** 2))
    if total == 0.0 or n < 16:
      return comps, freqs
    spans = np.asarray(REFINE_SPANS) / (n / self.sample_rate)
    active = []
    for k in range(num):  # estimation-cancellation
      r = mix - comps.sum(0)
      f = self._peak(r, freqs[active])
      if f is None:
        break
      freqs[k] = refine_frequency(r, f, self.sample_rate, spans, REFINE_BINS, p["bins_per_period"])
      comps[k] = self._fit(r, freqs[k])
      active.append(k)
    comps[active], freqs[active] = self._backfit(mix, comps[active], freqs[active], p["sweeps"], len(REFINE_SPANS))
    for _ in range(p["repairs"]):  # repairs: a missed tone or a lower octave replaces one component
      residual = float(np.sum((mix - comps.sum(0)) ** 2))
      if residual <= p["residual_tolerance"] * total or not active:
        break
      f = self._peak(mix - comps.sum(0), freqs[active])
      trials = [(j, f) for j in range(len(active))] if f is not None else []
      trials += [(j, freqs[k] / 2.0) for j, k in enumerate(active) if freqs[k] / 2.0 > p["min_frequency"]]
      best = (residual * p["repair_gain"], None)
      for j, f_new in trials:
        c, fr = comps[active].copy(), freqs[active].copy()
        r = mix - c.sum(0) + c[j]
        fr[j] = refine_frequency(r, f_new, self.sample_rate, spans, REFINE_BINS, p["bins_per_period"])
        c[j] = self._fit(r, fr[j])
        c, fr = self._backfit(mix, c, fr, 6, 3)
        e = float(np.sum((mix - c.sum(0)) ** 2))
        if e < best[0]:
          best = (e, (c, fr))
      if best[1] is None:
        break
      comps[active], freqs[active] = best[1]
    return comps, freqs


# ------------------------------------------------------------------------------------------ the separator
class PeriodicSeparator(Separator):
  """Periodic-component search + assignment by the priors' energy (module docstring). Score priors only."""

  method = "periodic"
  chunk_length = 2 ** 17  # a steady tone is best estimated over the longest excerpt
  chunk_overlap = 2 ** 12

  def __init__(self, priors: Dict[str, tf.keras.Model], sample_rate: int, mix: str = "sum", **params):
    missing = [name for name, p in priors.items() if not hasattr(p, "denoising_energy")]
    if missing:
      raise ValueError(f"the periodic search assigns components by the priors' denoising energy; priors "
                       f"{missing} have none (train --prior=score priors)")
    self.priors = dict(priors)
    self.source_names = tuple(priors)
    self.sample_rate = int(sample_rate)
    self.mix = mixing.check_mix(mix)
    self.decompose = PeriodicDecomposition(sample_rate, **params)
    p = self.decompose.params
    self.energy_sigmas = np.geomspace(p["energy_sigma_min"], p["energy_sigma_max"], p["energy_levels"])
    self.last_frequencies: Optional[np.ndarray] = None  # per item of the last call, in source order [B, N]

  def energies(self, candidates) -> np.ndarray:
    """Every prior's energy of every candidate source: candidates [M, time] -> [N priors, M] (lower = more
    likely under that prior)."""
    x = np.asarray(candidates, np.float32)
    length = int(self.decompose.params["energy_length"])
    if 0 < length < x.shape[-1]:
      start = (x.shape[-1] - length) // 2
      x = x[..., start:start + length]
    x = tf.convert_to_tensor(x)
    seed = int(self.decompose.params["energy_seed"])
    return np.stack([p.denoising_energy(x, self.energy_sigmas, seed).numpy() for p in self.priors.values()])

  def assign(self, components) -> np.ndarray:
    """components [N, time] on the sources' scale -> order [N]: source k is component order[k]."""
    from scipy.optimize import linear_sum_assignment  # pylint: disable=import-outside-toplevel
    rows, cols = linear_sum_assignment(self.energies(components))
    return cols[np.argsort(rows)]

  def tones(self, mix):
    """One mix [time] -> (its N tones on the sources' scale [N, time] (a mean mix holds each source / N),
    their frequencies [N], the part of the mix they leave [time]); the tones are not yet named."""
    comps, freqs = self.decompose(mix, self.num_sources)
    return to_sum_mix(comps, self.mix, self.num_sources), freqs, np.asarray(mix, np.float64) - comps.sum(0)

  def separate(self, mix) -> tf.Tensor:
    mix = np.asarray(mix, np.float64)
    if mix.ndim != 2:
      raise ValueError(f"separate takes mix [batch, time], got shape {mix.shape}")
    out, freqs = [], []
    for row in mix:
      tones, f, residual = self.tones(row)
      order = self.assign(tones)
      share = mixing.equal_split(residual[None].astype(np.float32), self.mix, self.num_sources).numpy()[0]
      out.append(tones[order] + share)
      freqs.append(f[order])
    self.last_frequencies = np.asarray(freqs)
    return tf.convert_to_tensor(np.asarray(out, np.float32))
