r"""Where does the periodic search fail: in the class-agnostic decomposition or in the priors' naming?

  python -m tools.periodic_check --model_dir=pretrained/toy_score --num_examples=40 \
      --output_json=docs/results/toy_periodic_check.json

On held-out toy items (--toy_seed, default 1234: never trained on) each mix is decomposed into tones
(PeriodicSeparator.tones, no class knowledge), and the tones are named twice: by the priors' energy (what
the separator does) and by the truth (the permutation of best summed SI-SDR: an upper bound for any naming).
Reported: median SI-SDR per class for both namings (tones alone, before the residual is shared), how many items
have every source >= --good_db under each, on how many items the priors' naming equals the truth's, and how many
true tones the decomposition found (within --frequency_tolerance Hz).
"""
from __future__ import annotations

import itertools
import json
import os
import sys

from absl import app, flags

flags.DEFINE_string("model_dir", "pretrained/toy_score", "A --job=priors toy directory with score priors.")
flags.DEFINE_integer("toy_seed", 1234, "Toy data seed of the held-out items.")
flags.DEFINE_integer("num_examples", 40, "Held-out items.")
flags.DEFINE_integer("length", 0, "Samples per item (0: the recipe's 48,000).")
flags.DEFINE_float("good_db", 15.0, "An item is good when every source reaches this SI-SDR.")
flags.DEFINE_float("frequency_tolerance", 0.05, "Hz: a true tone counts as found within this distance.")
flags.DEFINE_string("output_json", None, "Where the results go (JSON).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vsep_tf import signal as signal_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.data.toy import TOY_ITEM_LENGTH, ToyData  # pylint: disable=import-outside-toplevel
  from vsep_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.model_dir import load_config, load_separator  # pylint: disable=import-outside-toplevel
  from vsep_tf.separators.periodic import PeriodicSeparator  # pylint: disable=import-outside-toplevel

  sep = load_separator(FLAGS.model_dir, ["--priors_search=periodic"])
  if not isinstance(sep, PeriodicSeparator) or load_config(FLAGS.model_dir).dataset != "toy":
    raise app.UsageError(f"{FLAGS.model_dir}: needs a toy --job=priors directory with score priors")
  data = ToyData(seed=FLAGS.toy_seed, mix=sep.mix, item_length=FLAGS.length or TOY_ITEM_LENGTH)
  n = sep.num_sources
  items = []
  for i, (name, mix, sources) in enumerate(data.tracks("test", limit=FLAGS.num_examples)):
    tones, freqs, _ = sep.tones(mix)
    grid = signal_lib.si_sdr(np.repeat(sources[:, None], n, 1), np.repeat(tones[None], n, 0)).numpy()
    truth = max(itertools.permutations(range(n)), key=lambda p: sum(grid[k, p[k]] for k in range(n)))
    named = sep.assign(tones)
    true_f = data.parameters("test", [i])["frequency"][0]
    items.append({"item": name,
                  "truth_named": [float(grid[k, truth[k]]) for k in range(n)],
                  "priors_named": [float(grid[k, named[k]]) for k in range(n)],
                  "same_naming": bool(tuple(named) == tuple(truth)),
                  "tones_found": int(sum(np.min(np.abs(freqs - f)) < FLAGS.frequency_tolerance for f in true_f)),
                  "frequencies": sorted(float(f) for f in freqs), "true_frequencies": sorted(float(f) for f in true_f)})
    print(name, np.round(items[-1]["truth_named"], 1), np.round(items[-1]["priors_named"], 1),
          "same" if items[-1]["same_naming"] else "differs", flush=True)
  truth_db = np.array([r["truth_named"] for r in items])
  prior_db = np.array([r["priors_named"] for r in items])
  good = (truth_db >= FLAGS.good_db).all(1)
  summary = {
      "median_si_sdr": {
          "truth_named": {s: round(float(v), 2) for s, v in zip(data.source_names, np.median(truth_db, 0))},
          "priors_named": {s: round(float(v), 2) for s, v in zip(data.source_names, np.median(prior_db, 0))}},
      "items": len(items),
      "items_all_good": {"truth_named": int(good.sum()), "priors_named": int((prior_db >= FLAGS.good_db).all(1).sum())},
      "same_naming": int(sum(r["same_naming"] for r in items)),
      "same_naming_where_decomposition_good": int(sum(r["same_naming"] for r, g in zip(items, good) if g)),
      "items_with_every_tone_found": int(sum(r["tones_found"] == n for r in items)),
  }
  print(json.dumps(summary, indent=1))
  if FLAGS.output_json:
    out = {"model_dir": FLAGS.model_dir, "toy_seed": FLAGS.toy_seed, "good_db": FLAGS.good_db,
           "summary": summary, "per_item": items}
    config_lib.atomic_write_text(FLAGS.output_json, json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(app.run(main))
