#!/usr/bin/env python3
r"""Listening and looking check of a prior set: draw samples from every prior, write them as WAV, plot them, and
measure how tonal they are next to the class's real data.

  python -m tools.prior_samples --prior_dir=runs/toy --output_dir=docs/prior_samples_toy --num=8 --seconds=1

A prior that ranks its own class first (tools/prior_confusion.py) can still be a poor generative model: if its
samples do not look like the class, Langevin sampling and amortised inference under it cannot recover sources of
that class. For every class this prints the median over samples of
  * peak share: the fraction of spectral energy within +-3 bins of the strongest STFT peak (Hann, whole sample):
    near 1 for a pure tone, small for noise; real toy sines score ~1, real squares ~0.8;
  * peak frequency (Hz), and the peak absolute amplitude,
for the prior's samples and for as many real crops of the class (the dataset's 'test' split), and writes
<output_dir>/samples.png (a 2,000-sample window of 3 samples per class, real crops in grey) and
<output_dir>/<class>_<i>.wav.
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string("prior_dir", None, "A --job=priors model directory.")
flags.DEFINE_string("output_dir", None, "Where the WAVs, samples.png and stats.json go.")
flags.DEFINE_integer("num", 8, "Samples per prior.")
flags.DEFINE_float("seconds", 1.0, "Length of every sample.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from vsep_tf import audio  # pylint: disable=import-outside-toplevel
  from vsep_tf.evaluation.confusion import tonal_stats  # pylint: disable=import-outside-toplevel
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf import registry  # pylint: disable=import-outside-toplevel
  from tools.common import model_data_config  # pylint: disable=import-outside-toplevel
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  priors, _ = model_dir_lib.restore_priors(FLAGS.prior_dir)
  data = registry.dataset_from_config(model_data_config(FLAGS.prior_dir))
  rate = data.sample_rate
  length = int(FLAGS.seconds * rate)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  real = {}
  for _, _, sources in data.tracks("test", limit=FLAGS.num):
    for k, name in enumerate(data.source_names):
      real.setdefault(name, []).append(np.asarray(sources[k][:length]))
  stats = {}
  fig, axes = plt.subplots(len(priors), 3, figsize=(15, 2.2 * len(priors)), squeeze=False)
  for k, (name, prior) in enumerate(priors.items()):
    x = prior.sample(FLAGS.num, length, sigma=0.0, temperature=FLAGS.temperature, seed=FLAGS.seed + k)
    x = np.asarray(tf.convert_to_tensor(x))
    ref = np.stack(real[name])
    stats[name] = {"prior_samples": tonal_stats(x, rate), "real": tonal_stats(ref, rate)}
    for i in range(FLAGS.num):
      audio.write_audio(os.path.join(FLAGS.output_dir, f"{name}_{i}.wav"), np.clip(x[i], -1, 1), rate,
                        overwrite=True)
    window = slice(length // 2, min(length, length // 2 + 2000))
    for j in range(3):
      ax = axes[k, j]
      ax.plot(ref[j % len(ref), window], color="0.75", lw=0.8, label="real")
      ax.plot(x[j, window], lw=0.8, label="prior sample")
      ax.set_title(f"{name} #{j}", fontsize=9)
    s, r = stats[name]["prior_samples"], stats[name]["real"]
    print(f"{name:>10}: prior samples peak share {s['peak_share']:.3f} at {s['peak_hz']:.0f} Hz, peak |x| "
          f"{s['peak_abs']:.2f} | real {r['peak_share']:.3f} at {r['peak_hz']:.0f} Hz, peak |x| {r['peak_abs']:.2f}")
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.output_dir, "samples.png"), dpi=70)
  with open(os.path.join(FLAGS.output_dir, "stats.json"), "w", encoding="utf-8") as f:
    json.dump(stats, f, indent=2)
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["prior_dir", "output_dir"])
  sys.exit(app.run(main))
