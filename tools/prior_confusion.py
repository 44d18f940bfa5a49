r"""Prior confusion table: does each prior rank its own source class first, noiseless and at each noise level?

  python -m tools.prior_confusion --model_dir=runs/toy --num_examples=32 \
      --output_md=runs/toy/confusion.md --output_png=runs/toy/confusion.png

Rebuilds the priors from the model directory alone (manifest.json + latest checkpoint; data paths from config.flags) and scores held-out solo
crops of every class (split --split of the model's own dataset; for toy data a seed never trained on).
Score priors are ranked by their denoising error instead (see vsep_tf/evaluation/confusion.py).
"""
from __future__ import annotations

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A trained priors model directory.", required=True)
flags.DEFINE_string("split", "test", "Held-out split to score.")
flags.DEFINE_integer("num_examples", 32, "Crops per class.")
flags.DEFINE_integer("crop_length", 0, "Crop length (0: the training crop length).")
flags.DEFINE_integer("seed", 1234, "Seed for crops and noise (and the toy data seed of the held-out set).")
flags.DEFINE_list("sigmas", ["0", "0.01", "0.0278", "0.0774", "0.1", "0.215", "0.599", "1.0"],
                  "Noise levels (0 = noiseless).")
flags.DEFINE_string("output_md", None, "Write the Markdown tables here.")
flags.DEFINE_string("output_png", None, "Write the heatmaps here.")
flags.DEFINE_string("output_json", None, "Write the raw table here.")


def held_out_examples(cfg, split, num_examples, crop_length, seed):
  """{class: float32 [num_examples, crop_length]} held-out solo crops from the model's dataset."""
  from vsep_tf import registry  # pylint: disable=import-outside-toplevel
  if cfg.dataset == "toy":
    cfg = cfg.replace(toy_seed=seed)  # a seed the priors never saw
  data = registry.dataset_from_config(cfg)
  batch = next(iter(data.solo(split, crop_length=crop_length, batch_size=num_examples, seed=seed)))
  return {name: batch[name].numpy() for name in data.source_names}


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vsep_tf.evaluation import confusion  # pylint: disable=import-outside-toplevel
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  from tools.common import model_data_config  # pylint: disable=import-outside-toplevel
  priors, _ = model_dir_lib.restore_priors(FLAGS.model_dir)
  cfg = model_data_config(FLAGS.model_dir)
  if cfg.dataset == "toy" and FLAGS.seed == cfg.toy_seed:
    raise app.UsageError(f"--seed={FLAGS.seed} is the toy seed the priors were trained on")
  crop = FLAGS.crop_length or cfg.crop_length
  examples = held_out_examples(cfg, FLAGS.split, FLAGS.num_examples, crop, FLAGS.seed)
  sigmas = [float(s) for s in FLAGS.sigmas]
  if not all(p.has_log_prob for p in priors.values()):
    sigmas = [s for s in sigmas if s > 0]  # score priors: denoising error, noisy levels only
  names = list(priors)
  table, scores = confusion.log_likelihood_table(priors, {n: examples[n] for n in names}, sigmas,
                                                 seed=FLAGS.seed, per_example=True)
  accuracy = confusion.example_accuracy(scores)
  text = confusion.format_table(table, names, sigmas, accuracy)
  print(text)
  if FLAGS.output_md:
    with open(FLAGS.output_md, "w", encoding="utf-8") as f:
      f.write(text)
  if FLAGS.output_png:
    confusion.plot_heatmaps(table, names, sigmas, FLAGS.output_png)
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w", encoding="utf-8") as f:
      json.dump({"sources": names, "sigmas": sigmas, "table": np.round(table, 5).tolist(),
                 "summary": confusion.summarize(table, names),
                 "example_accuracy": np.round(accuracy, 4).tolist()}, f, indent=1)
  summary = confusion.summarize(table, names)
  bad = [s for s, info in zip(sigmas, summary) if info["row_hits"] < len(names)]
  if bad:
    print(f"WARNING: some prior does not rank its own class first at sigma = {bad}", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
