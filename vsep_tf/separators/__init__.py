"""Separators: mix [batch, time] -> sources [batch, N, time], all behind `base.Separator`.

  langevin.LangevinSeparator      noise-annealed Langevin dynamics under waveform priors (BASIS)
  periodic.PeriodicSeparator      steady tones split class-agnostically, named by the priors' energy
  encoder.EncoderSeparator        one forward pass of a waveform encoder (variational or supervised)
  nmf.NMFSeparator                per-class NMF dictionaries, Wiener masks (a classical baseline)
  spectral.SpectralPriorSeparator MAP under per-class spectral VAE priors, started from (or, with
                                  iterations=0, given by) an amortised encoder; Wiener masks
  oracle.OracleIRM / MixtureBaseline   references that need no model

Separators are built from explicit arguments; `vsep_tf.model_dir.load_separator` rebuilds the one a model
directory holds.
"""
from vsep_tf.separators.base import Separator, consistency_projection

__all__ = ["Separator", "consistency_projection"]
