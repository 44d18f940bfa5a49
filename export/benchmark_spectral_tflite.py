#!/usr/bin/env python3
r"""Benchmark of a spectral separator's TFLite one-pass graph (f32, dynamic-range int8, float16) against the eager
one-pass separator (--spectral_search.iterations=0) on real stereo audio.

  bash export/export_model.sh pretrained/band /tmp/exports band
  python export/benchmark_spectral_tflite.py --model_dir=pretrained/band --tflite_dir=/tmp/exports/band_tflite \
      --name=band --data_root=../shared/data/band --seconds=60 [--evaluate]

  * audio: the --split mixtures of the stem folder --data_root, concatenated (repeated if short) to --seconds of
    the model's rate, every channel;
  * real-time factor: wall time of vsep_tf.inference.AudioSeparator.separate over it / its duration (after one
    warm-up chunk), all variants with the same chunks and cross-fade (the separator's chunk_length / overlap);
  * max |TFLite f32 - eager|, and the SDR (dB) of every variant's estimates against the f32 ones and the eager
    ones: 10 log10(sum ref^2 / sum (ref - est)^2) per source, over all samples and channels;
  * --evaluate: vsep_tf.evaluate (museval v4 SDR, stereo) of every variant on the --split tracks.
Prints a markdown table and writes --output_json. Not a test: the numbers depend on the machine and its load.
"""
import json
import os
import time

from absl import app, flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", "pretrained/band", "A spectral model directory.")
flags.DEFINE_string("tflite_dir", None, "Folder of <name>_{f32,dynamic,f16}.tflite (export/export_model.sh).")
flags.DEFINE_string("name", "band", "File name prefix of the .tflite files.")
flags.DEFINE_string("data_root", "../shared/data/band", "A stem folder ({train,test}/<track>/mixture.*).")
flags.DEFINE_string("split", "test", "Split of --data_root.")
flags.DEFINE_float("seconds", 60.0, "Audio length for the real-time factor.")
flags.DEFINE_integer("num_threads", 2, "TFLite interpreter threads.")
flags.DEFINE_boolean("evaluate", False, "Also score every variant on the split with vsep_tf.evaluate (stereo).")
flags.DEFINE_string("output_json", "/tmp/tflite_spectral_benchmark.json", "Where the figures go.")

VARIANTS = {"f32": "TFLite float32", "dynamic": "TFLite dynamic-range int8", "f16": "TFLite float16"}


def sdr(ref, est):
  ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
  return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-30)))


def load_audio(data_root, split, rate, seconds):
  from vsep_tf import audio  # pylint: disable=import-outside-toplevel
  from vsep_tf import inference  # pylint: disable=import-outside-toplevel
  folder = os.path.join(data_root, split)
  paths = [p for p in inference.find_inputs(folder)]
  pieces = [audio.read_audio(p, sample_rate=rate, mono=False)[0] for p in paths]
  pieces = [p.reshape(-1, 1) if p.ndim == 1 else p for p in pieces]
  need = int(round(seconds * rate))
  x = np.concatenate(pieces, axis=0)
  while x.shape[0] < need:
    x = np.concatenate([x, x], axis=0)
  return x[:need].astype(np.float32), [os.path.basename(os.path.dirname(p)) for p in paths]


def main(argv):
  del argv
  from vsep_tf import inference  # pylint: disable=import-outside-toplevel
  from vsep_tf.export import tflite as tflite_lib  # pylint: disable=import-outside-toplevel
  eager = tflite_lib.model_dir_separator(FLAGS.model_dir)
  rate = eager.sample_rate
  x, tracks = load_audio(FLAGS.data_root, FLAGS.split, rate, FLAGS.seconds)
  seconds = x.shape[0] / rate
  print(f"audio: {seconds:.1f} s x {x.shape[1]} channels at {rate} Hz ({', '.join(tracks)})")
  seps = {"eager one-pass (tf.function)": eager}
  sizes = {"eager one-pass (tf.function)": None}
  for q, label in VARIANTS.items():
    path = os.path.join(FLAGS.tflite_dir, f"{FLAGS.name}_{q}.tflite")
    seps[label] = tflite_lib.TFLiteSeparator(path, num_threads=FLAGS.num_threads)
    sizes[label] = os.path.getsize(path)
  results, outputs = {}, {}
  for label, sep in seps.items():
    runner = inference.AudioSeparator(sep)
    runner.separate(x[:sep.chunk_length], rate)  # warm-up: tracing / tensor allocation
    t0 = time.perf_counter()
    est = runner.separate(x, rate)
    elapsed = time.perf_counter() - t0
    outputs[label] = np.stack([est[n] for n in sep.source_names])  # [N, T, C]
    results[label] = {"size_bytes": sizes[label], "seconds": elapsed, "rtf": elapsed / seconds}
    print(f"{label}: {elapsed:.1f} s, RTF {elapsed / seconds:.3f}")
  ref_eager, ref_f32 = outputs["eager one-pass (tf.function)"], outputs[VARIANTS["f32"]]
  names = list(eager.source_names)
  for label, est in outputs.items():
    r = results[label]
    r["max_abs_diff_vs_eager"] = float(np.abs(est - ref_eager).max())
    r["sdr_vs_eager_db"] = {n: sdr(ref_eager[k], est[k]) for k, n in enumerate(names)}
    r["sdr_vs_f32_db"] = {n: sdr(ref_f32[k], est[k]) for k, n in enumerate(names)}
  if FLAGS.evaluate:
    from vsep_tf import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
    for label, sep in seps.items():
      opts = evaluate_lib.EvalOptions(dataset="stems", data_root=FLAGS.data_root, split=FLAGS.split, stereo=True,
                                      num_workers=1)
      res = evaluate_lib.evaluate(opts, separator=sep, verbose=0)
      results[label]["eval"] = {"overall": res["overall"], "overall_mean": res.get("overall_mean"),
                                "sources": res["sources"]}
      print(f"{label}: test SDR {res['overall']['sdr']:.3f} dB")
  print("\n| variant | size | RTF | max abs diff vs eager | SDR vs f32 (mean over sources) |")
  print("|---|---|---|---|---|")
  for label, r in results.items():
    size = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / 2 ** 20:.2f} MiB"
    mean_sdr = np.mean(list(r["sdr_vs_f32_db"].values()))
    print(f"| {label} | {size} | {r['rtf']:.3f} | {r['max_abs_diff_vs_eager']:.2e} | {mean_sdr:.1f} dB |")
  with open(FLAGS.output_json, "w", encoding="utf-8") as f:
    json.dump({"audio_seconds": seconds, "channels": int(x.shape[1]), "tracks": tracks, "results": results}, f,
              indent=2, default=float)
  print(f"wrote {FLAGS.output_json}")


if __name__ == "__main__":
  flags.mark_flag_as_required("tflite_dir")
  app.run(main)
