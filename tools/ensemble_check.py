r"""Research check: does an ensemble of spectral separators beat its members? (Measured: no; docs/results.md,
"Seeds, ensembles and time shifts".)

Every member (a spectral / spectral_encoder model directory, same STFT, classes and rate) fits the same mixture
STFT; their Wiener masks are averaged (--combine=masks) or their frame models V_k before the masks
(--combine=models); then --phase_iterations rounds of MISI. --shifts=S also averages S copies of the mix delayed
by hop / S samples each (the time-shift trick). Scored by vsep_tf.evaluate's library function (same data flags):

  python -m tools.ensemble_check --members=runs/chv4,runs/chv4_s1 --split=valid --quality=best \
      --output_json=runs/ensemble_valid.json
"""
from __future__ import annotations

import sys
from typing import Sequence

import tensorflow as tf
from absl import app, flags

from vsep_tf import evaluate as evaluate_lib
from vsep_tf import signal as signal_lib
from vsep_tf.model_dir import QUALITIES, load_separator
from vsep_tf.separators.base import Separator
from vsep_tf.separators.masks import misi, ratio_masks, to_sum_mix
from vsep_tf.separators.spectral import SpectralPriorSeparator

COMBINES = ("masks", "models")


class MaskEnsemble(Separator):
  """Averages the Wiener masks (or frame models) of spectral separators fitted to the same mixture STFT."""

  method = "mask_ensemble"

  def __init__(self, members: Sequence[SpectralPriorSeparator], combine: str = "masks", phase_iterations: int = 0,
               shifts: int = 1):
    if not members or not all(isinstance(m, SpectralPriorSeparator) for m in members):
      raise ValueError("an ensemble takes one or more spectral separators")
    first = members[0]
    for m in members[1:]:
      same = (tuple(m.source_names), m.sample_rate, m.mix, m.n_fft, m.hop) == \
          (tuple(first.source_names), first.sample_rate, first.mix, first.n_fft, first.hop)
      if not same:
        raise ValueError("ensemble members must share classes, sample rate, mixing function and STFT")
    if combine not in COMBINES:
      raise ValueError(f"combine={combine!r}; choose from {COMBINES}")
    if shifts < 1 or phase_iterations < 0:
      raise ValueError(f"shifts >= 1 and phase_iterations >= 0 required, got {shifts}, {phase_iterations}")
    self.members, self.combine = list(members), combine
    self.phase_iterations, self.shifts = int(phase_iterations), int(shifts)
    self.source_names, self.sample_rate, self.mix = first.source_names, first.sample_rate, first.mix
    self.chunk_length, self.chunk_overlap = first.chunk_length, first.chunk_overlap
    self._fn = tf.function(self._separate, input_signature=[tf.TensorSpec([None, None], tf.float32)])

  def _masks(self, magnitude):
    power = self.members[0].settings["mask_power"]
    models = [m.source_models(magnitude) for m in self.members]
    if self.combine == "models":
      return ratio_masks(tf.add_n(models) / len(models), power)
    return tf.add_n([ratio_masks(v, power) for v in models]) / len(models)

  def _separate_once(self, mix):
    first = self.members[0]
    summed = to_sum_mix(mix, self.mix, self.num_sources)
    spec = signal_lib.stft(summed, first.n_fft, first.hop)
    return misi(self._masks(tf.abs(spec)), spec, summed, first.n_fft, first.hop, tf.shape(mix)[-1],
                self.phase_iterations)

  def _separate(self, mix):
    length = tf.shape(mix)[-1]
    outs = []
    for k in range(self.shifts):
      delay = k * self.members[0].hop // self.shifts
      outs.append(self._separate_once(tf.pad(mix, [[0, 0], [delay, 0]]))[..., delay:delay + length])
    return tf.add_n(outs) / self.shifts

  def separate(self, mix) -> tf.Tensor:
    return self._fn(tf.convert_to_tensor(mix, tf.float32))


def define_flags(fv: flags.FlagValues):
  evaluate_lib.define_data_flags(fv)
  flags.DEFINE_list("members", [], "Spectral model directories (comma list).", flag_values=fv)
  flags.DEFINE_enum("combine", "masks", list(COMBINES), "Average the members' masks or their frame models.",
                    flag_values=fv)
  flags.DEFINE_integer("phase_iterations", 10, "MISI rounds after the averaged masks.", flag_values=fv)
  flags.DEFINE_integer("shifts", 1, "Average this many copies of the mix delayed by hop / shifts each.",
                       flag_values=fv)
  flags.DEFINE_enum("quality", "best", list(QUALITIES), "Every member's quality preset.",
                    flag_values=fv)
  flags.DEFINE_string("output_json", None, "Write the results here.", flag_values=fv)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  fv = flags.FLAGS
  try:
    if not fv.members:
      raise ValueError("--members: one or more spectral model directories")
    # The members' own MISI rounds are off: the rounds run once, on the averaged masks.
    members = [load_separator(d, ["--spectral_search.phase_iterations=0"], quality=fv.quality) for d in fv.members]
    ensemble = MaskEnsemble(members, fv.combine, fv.phase_iterations, fv.shifts)
    result = evaluate_lib.evaluate(evaluate_lib.options_from_flags(fv, fv.members[0]), separator=ensemble)
  except (ValueError, FileNotFoundError) as e:
    print(f"tools.ensemble_check: error: {e}", file=sys.stderr)
    return 1
  result["ensemble"] = dict(members=list(fv.members), combine=fv.combine, phase_iterations=fv.phase_iterations,
                            shifts=fv.shifts, quality=fv.quality)
  evaluate_lib.report(result, fv.output_json)
  return 0


if __name__ == "__main__":
  define_flags(flags.FLAGS)
  app.run(main)
