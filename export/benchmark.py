#!/usr/bin/env python3
r"""Deployment benchmark: real-time factor and SI-SDR of one model as eager / SavedModel / TFLite (f32, quantised).

  python export/benchmark.py --model_dir=runs/toy_supervised --work_dir=/tmp/vsep_bench --seconds=60 \
      --num_mixes=32 --chunk_length=16384

Exports the model (SavedModel + TFLite float32 / dynamic-range int8 / float16) into --work_dir, then for each
variant:
  * real-time factor: wall time of separate_long over --seconds of toy-like audio / its duration (after one
    warm-up call), all variants with the same chunks and cross-fade;
  * SI-SDR (dB, median over --num_mixes toy test items, per source) and its difference to eager: the cost of
    quantisation.
Prints a markdown table. Not a test: numbers depend on the machine and its load.
"""
import json
import os
import sys
import time

from absl import app, flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A toy model directory: --job=supervised / variational, or harmonic_separator "
                    "(e.g. pretrained/toy).")
flags.DEFINE_string("work_dir", "/tmp/vsep_bench", "Where the exports go.")
flags.DEFINE_float("seconds", 60.0, "Audio length for the real-time factor.")
flags.DEFINE_integer("num_mixes", 32, "Toy test items for SI-SDR.")
flags.DEFINE_integer("chunk_length", 16384, "Chunk length (samples) of every variant, and of the TFLite model.")
flags.DEFINE_integer("num_threads", 2, "TFLite interpreter threads.")
flags.DEFINE_integer("toy_seed", 1234, "Toy data seed of the SI-SDR mixes (one the model was not trained on).")


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from vsep_tf import signal as signal_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf import export as export_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf import registry  # pylint: disable=import-outside-toplevel
  from vsep_tf.model_dir import load_config, load_separator  # pylint: disable=import-outside-toplevel

  eager = load_separator(FLAGS.model_dir)
  chunk = FLAGS.chunk_length
  overlap = min(eager.chunk_overlap, chunk // 2)
  variants, sizes, _ = export_lib.export_variants(eager, FLAGS.work_dir, chunk, "bench", FLAGS.num_threads)

  # The model's own dataset (toy), on a seed it was not trained on.
  cfg = load_config(FLAGS.model_dir, [f"--toy_seed={FLAGS.toy_seed}"])
  if cfg.dataset != "toy":
    raise app.UsageError(f"{FLAGS.model_dir} is a --dataset={cfg.dataset} model; this benchmark scores toy items")
  data = registry.dataset_from_config(cfg)
  items = list(data.tracks("test", limit=FLAGS.num_mixes))
  long_mix = np.concatenate([m for _, m, _ in items])
  n = int(FLAGS.seconds * eager.sample_rate)
  long_mix = np.tile(long_mix, int(np.ceil(n / long_mix.shape[0])))[:n]

  rows = []
  for name, sep in variants.items():
    for b in range(1, 5):  # warm-up: trace every batch shape separate_long will use (batch_size 4)
      sep.separate(np.zeros([b, chunk], np.float32))
    t0 = time.perf_counter()
    sep.separate_long(long_mix, chunk, overlap)
    rtf = (time.perf_counter() - t0) / FLAGS.seconds
    sdr, ests = [], []
    for _, mix, sources in items:
      est = sep.separate_long(mix, chunk, overlap)
      ests.append(est)
      sdr.append(signal_lib.si_sdr(tf.constant(sources), tf.constant(est)).numpy())
    sdr = np.array(sdr)  # [items, N]
    if not rows:
      reference = ests
    dev = max(float(np.abs(e - r).max() / np.abs(r).max()) for e, r in zip(ests, reference))
    rows.append((name, rtf, np.median(sdr, axis=0), sizes.get(name), sdr, dev))
    print(f"{name}: RTF {rtf:.4f}", flush=True)

  ref = rows[0][4]
  names = list(eager.source_names)
  print(f"\n{FLAGS.seconds:.0f} s of audio at {eager.sample_rate} Hz, chunks of {chunk} (cross-fade {overlap}); "
        f"SI-SDR: median over {len(items)} toy test items (seed {FLAGS.toy_seed}), dB\n")
  print("| variant | size | real-time factor | " + " | ".join(names)
        + " | mean | mean change vs eager | max abs deviation from eager / peak |")
  print("|---" * (len(names) + 6) + "|")
  for name, rtf, med, size, sdr, dev in rows:
    delta = float(np.mean(sdr - ref))
    size_s = "-" if size is None else f"{size / 1024:.0f} KiB"
    print(f"| {name} | {size_s} | {rtf:.4f} | " + " | ".join(f"{v:.2f}" for v in med)
          + f" | {float(np.mean(med)):.2f} | {delta:+.3f} | {dev:.1e} |")
  with open(os.path.join(FLAGS.work_dir, "benchmark.json"), "w", encoding="utf-8") as f:
    json.dump({name: {"rtf": rtf, "median_si_sdr": dict(zip(names, map(float, med))),
                      "mean_delta_vs_eager": float(np.mean(sdr - ref)), "max_rel_deviation": dev}
               for name, rtf, med, _, sdr, dev in rows}, f, indent=2)
  return 0


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  sys.exit(app.run(main))
