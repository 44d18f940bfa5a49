"""Separators: mix [batch, time] -> sources [batch, N, time], all behind `base.Separator`.

`load_separator(model_dir)` rebuilds the separator a model directory holds, by its saved `--job`:
  priors                  -> LangevinSeparator (noise-annealed Langevin dynamics under the trained priors),
                             or with --priors_search=periodic PeriodicSeparator (steady tones split
                             class-agnostically, named by the priors' energy)
  variational, supervised -> EncoderSeparator (one forward pass of the trained encoder)
  nmf                     -> NMFSeparator (per-class NMF dictionaries, Wiener masks: a classical baseline)
  spectral                -> SpectralPriorSeparator (MAP under per-class spectral VAE priors, Wiener masks)
  spectral_encoder        -> the same, started from (or, with iterations=0, given by) the amortised encoder
"""
from vsep_tf.separators.base import Separator, consistency_projection

__all__ = ["Separator", "consistency_projection", "load_separator"]


def load_separator(model_dir: str, overrides=()) -> Separator:
  """The separator saved in `model_dir` (a directory with config.flags written by vsep_tf.train)."""
  from vsep_tf.training import config as config_lib  # pylint: disable=import-outside-toplevel
  fv = config_lib.load_config(model_dir, overrides)
  if fv.job == "priors" and fv.priors_search == "periodic":
    from vsep_tf.separators.periodic import PeriodicSeparator  # pylint: disable=import-outside-toplevel
    return PeriodicSeparator.from_model_dir(model_dir, fv)
  if fv.job == "priors":
    from vsep_tf.separators.langevin import LangevinSeparator  # pylint: disable=import-outside-toplevel
    return LangevinSeparator.from_model_dir(model_dir, fv)
  if fv.job in ("variational", "supervised"):
    from vsep_tf.separators.encoder import EncoderSeparator  # pylint: disable=import-outside-toplevel
    return EncoderSeparator.from_model_dir(model_dir, fv)
  if fv.job == "nmf":
    from vsep_tf.separators.nmf import NMFSeparator  # pylint: disable=import-outside-toplevel
    return NMFSeparator.from_model_dir(model_dir, fv)
  if fv.job in ("spectral", "spectral_encoder"):
    from vsep_tf.separators.spectral import SpectralPriorSeparator  # pylint: disable=import-outside-toplevel
    return SpectralPriorSeparator.from_model_dir(model_dir, fv)
  raise ValueError(f"{model_dir}: no separator for --job={fv.job}")
