#!/usr/bin/env python3
r"""Benchmarks: speed and memory of the SHIPPED separators against peers, side by side, in one run on this machine.

  python -m tools.bench                                    # everything, ~30 min on 2 cores
  python -m tools.bench --sections=rtf,peers --rtf_seconds=20

Every measurement uses the same 44.1 kHz stereo audio (bench_audio: harmonic tones changing every half second, a
different tone sequence per channel), fed to each model as `separate` feeds it (resampled to the model's rate,
every channel of a stereo model, each channel on its own for a mono one).

Sections (--sections):
  rtf       in-process separation real-time factor (compute seconds per second of audio) of each --models
            directory: its default (`--quality=fast`) as eager tf.function, SavedModel and TFLite float32 /
            dynamic-range int8 / float16 (the one-pass graph), and its `--quality=best` setting (eager, on
            --best_seconds of the audio); each with its deviation from the eager default.
  cli       `python -m vsep_tf.separate --model_dir=M` end to end on a --cli_seconds 44.1 kHz stereo WAV (process
            start, model load, decode, resample, separate, write): wall-clock real-time factor and peak RSS.
  memory    peak RSS of that command on 1, 5 and 10 minutes of audio (--memory_model; the rusage of each child,
            started from a small process: see _PEAK_RSS).
  peers     Open-Unmix and HT-Demucs (PyTorch, random weights: speed only) on the same audio, in their own venv
            (tools/install_peers.sh; --peer_python). A peer that cannot run is reported with the reason.
  flops     FLOPs per second of audio of each model's default as exported (TF's graph profiler on the frozen
            chunk graph) and the fraction of this machine's measured float32 matmul peak each variant reaches.
  training  prior training throughput (samples/s) at batch sizes 1..32, default strategy vs MirroredStrategy over
            2 logical CPU devices, each in its own process (logical devices must be set before TF starts).

Writes --output_json, --output_md and --output_png. Figures depend on the machine and its load: not a test.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("rtf", "cli", "memory", "peers", "flops", "training")
FLAGS = flags.FLAGS
flags.DEFINE_list("sections", list(SECTIONS), f"Which of {SECTIONS} to run.")
flags.DEFINE_string("work_dir", None, "Scratch directory (default: a new temporary one).")
flags.DEFINE_list("models", ["pretrained/chorales", "pretrained/band"], "Model directories to measure.")
flags.DEFINE_float("rtf_seconds", 60.0, "Audio length for the in-process real-time factors.")
flags.DEFINE_float("best_seconds", 20.0, "Audio length for --quality=best (the MAP fit: slow; 0 skips it).")
flags.DEFINE_float("cli_seconds", 180.0, "Audio length of the end-to-end `separate` run.")
flags.DEFINE_string("memory_model", "pretrained/band", "The model of the memory section.")
flags.DEFINE_list("memory_minutes", ["1", "5", "10"], "Track lengths for the peak-RSS measurement.")
flags.DEFINE_list("batch_sizes", ["1", "2", "4", "8", "16", "32"], "Prior training batch sizes.")
flags.DEFINE_float("train_seconds", 8.0, "Timed training seconds per (strategy, batch size), after warm-up.")
flags.DEFINE_string("peer_python", os.path.join(REPO, ".venv-peers", "bin", "python"),
                    "Python with PyTorch + the peers (bash tools/install_peers.sh).")
flags.DEFINE_integer("threads", 2, "TFLite / PyTorch threads.")
flags.DEFINE_string("output_json", os.path.join(REPO, "docs", "results", "bench.json"), "Results JSON.")
flags.DEFINE_string("output_md", os.path.join(REPO, "docs", "bench.md"), "Results table (Markdown).")
flags.DEFINE_string("output_png", os.path.join(REPO, "docs", "bench.png"), "Results plot.")
BENCH_RATE = 44100
# Internal: one training-throughput measurement process.
flags.DEFINE_enum("worker", None, ["training"], "Internal: run one section's worker and print JSON.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored"], "Internal (--worker=training).")


def log(msg):
  print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "python": platform.python_version(),
          "tensorflow": tf.__version__, "platform": platform.platform()}


def child_env() -> dict:
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)


def run_python(args, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], cwd=REPO, env=child_env(), capture_output=True, text=True,
                        check=False, **kwargs)


def bench_audio(seconds: float, rate: int = BENCH_RATE, channels: int = 2, seed: int = 0) -> np.ndarray:
  """A music-like test signal [time, channels]: per channel, a sum of harmonic tones changing every half second
  plus a little noise (each channel its own tone sequence)."""
  n = int(seconds * rate)
  t = np.arange(n) / rate
  out = np.zeros([n, channels], np.float64)
  seg = rate // 2
  for c in range(channels):
    rng = np.random.default_rng(seed * 1000 + c)
    for start in range(0, n, seg):
      tt = t[start:start + seg]
      for _ in range(3):
        f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
        out[start:start + seg, c] += sum(np.sin(2 * np.pi * h * f0 * tt) / h for h in range(1, 6)
                                         if h * f0 < rate / 2)
    out[:, c] += 0.01 * rng.standard_normal(n)
  return (0.25 * out / np.abs(out).max()).astype(np.float32)


def write_bench_wav(path: str, seconds: float, seed: int = 0) -> str:
  from vsep_tf import audio  # pylint: disable=import-outside-toplevel
  audio.write_audio(path, bench_audio(seconds, seed=seed), BENCH_RATE, overwrite=True)
  return path


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def _separate(separator, mix) -> np.ndarray:
  """What `separate` does in memory (inference.AudioSeparator: resample to the model's rate, chunks, every
  channel, resample back): mix [time, channels] at 44.1 kHz -> [N, time, channels]."""
  from vsep_tf import inference  # pylint: disable=import-outside-toplevel
  out = inference.AudioSeparator(separator).separate(mix, BENCH_RATE)
  return np.stack([out[n] for n in separator.source_names])


def _model_name(model_dir: str) -> str:
  return os.path.basename(os.path.normpath(model_dir))


def export_default(model_dir: str, work_dir: str) -> tuple:
  """The model's default separator (quality 'fast') as eager, SavedModel and (spectral separators: the one-pass
  graph) TFLite float32 / dynamic-range int8 / float16: ({variant: Separator}, {variant: bytes}, SavedModel dir)."""
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.export import saved_model as saved_model_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.export import tflite as tflite_lib  # pylint: disable=import-outside-toplevel
  name = _model_name(model_dir)
  eager = model_dir_lib.load_separator(model_dir, quality="fast")
  export_dir = saved_model_lib.export_saved_model(eager, os.path.join(work_dir, "saved"), name, version=1,
                                                  overwrite=True)
  variants = {"eager": eager, "SavedModel": saved_model_lib.SavedModelSeparator(export_dir)}
  sizes = {"eager": None,
           "SavedModel": sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(export_dir) for f in fs)}
  if getattr(eager, "method", None) == "spectral":
    lite = tflite_lib.export_model_tflite(eager, os.path.join(work_dir, "tflite"), name,
                                             ("none", "dynamic", "float16"), saved_model_dir=export_dir)
  else:
    lite = tflite_lib.export_tflite(export_dir, os.path.join(work_dir, "tflite"), name,
                                    ("none", "dynamic", "float16"))
  for q, label in {"none": "TFLite float32", "dynamic": "TFLite dynamic-range int8",
                   "float16": "TFLite float16"}.items():
    variants[label] = tflite_lib.TFLiteSeparator(lite[q], num_threads=FLAGS.threads)
    sizes[label] = os.path.getsize(lite[q])
  return variants, sizes, export_dir


# --------------------------------------------------------------------------------------------------- sections
def section_rtf(work_dir) -> dict:
  """In-process real-time factors of every --models directory (module docstring)."""
  from vsep_tf import model_dir as model_dir_lib  # pylint: disable=import-outside-toplevel
  mix = bench_audio(FLAGS.rtf_seconds)
  out = {"audio_seconds": FLAGS.rtf_seconds, "audio": f"{BENCH_RATE} Hz, {mix.shape[1]} channels", "models": {}}
  for model_dir in FLAGS.models:
    variants, sizes, export_dir = export_default(model_dir, os.path.join(work_dir, _model_name(model_dir)))
    eager = variants["eager"]
    res = {"model_dir": model_dir, "sample_rate": eager.sample_rate, "export_dir": export_dir,
           "chunk_length": eager.chunk_length, "chunk_overlap": eager.chunk_overlap,
           "default": eager.describe(), "variants": {}}
    reference = None
    for name, sep in variants.items():
      _separate(sep, mix[:BENCH_RATE * 2])  # warm-up: traces, interpreter allocation
      est = None

      def run(sep=sep):
        nonlocal est
        est = _separate(sep, mix)

      rtf = _timed(run) / FLAGS.rtf_seconds
      reference = est if reference is None else reference
      dev = float(np.abs(est - reference).max() / max(np.abs(reference).max(), 1e-12))
      res["variants"][name] = {"rtf": rtf, "x_real_time": 1 / rtf, "bytes": sizes.get(name),
                               "max_rel_deviation_from_eager": dev}
      log(f"rtf {model_dir} {name}: {rtf:.4f} ({1 / rtf:.0f}x real time)")
    best = model_dir_lib.load_separator(model_dir, quality="best")
    if FLAGS.best_seconds > 0 and best.describe() != eager.describe():
      clip = mix[:int(FLAGS.best_seconds * BENCH_RATE)]
      _separate(best, mix[:BENCH_RATE * 2])
      rtf = _timed(lambda: _separate(best, clip)) / FLAGS.best_seconds
      res["best"] = {"rtf": rtf, "x_real_time": 1 / rtf, "audio_seconds": FLAGS.best_seconds,
                     "settings": best.describe()}
      log(f"rtf {model_dir} --quality=best: {rtf:.3f}")
    out["models"][model_dir] = json.loads(json.dumps(res, default=str))
  return out


def section_cli(work_dir) -> dict:
  """End-to-end `python -m vsep_tf.separate` of every --models directory on one --cli_seconds file."""
  path = write_bench_wav(os.path.join(work_dir, "cli_input.wav"), FLAGS.cli_seconds, seed=2)
  out = {"audio_seconds": FLAGS.cli_seconds, "audio": f"{BENCH_RATE} Hz stereo WAV", "models": {}}
  for model_dir in FLAGS.models:
    out["models"][model_dir] = _run_separate(model_dir, path, FLAGS.cli_seconds, work_dir)
    log(f"cli {model_dir}: {out['models'][model_dir]['wall_seconds']:.1f} s wall "
        f"(RTF {out['models'][model_dir]['cli_rtf']:.3f}), peak RSS {out['models'][model_dir]['peak_rss_mib']:.0f} MiB")
  os.remove(path)
  return out


# Runs a command and prints its peak RSS. A child's ru_maxrss starts at its parent's high-water mark (Linux keeps
# it across fork and exec): measured from this large process it would read this process's peak, so a small
# Python process starts the command and reports RUSAGE_CHILDREN.
_PEAK_RSS = ("import json, resource, subprocess, sys; "
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); "
             "sys.stderr.write(r.stderr.decode(errors='replace')[-3000:]); "
             "print(json.dumps({'rc': r.returncode, "
             "'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


def _run_separate(model_dir: str, path: str, seconds: float, work_dir: str) -> dict:
  out_dir = tempfile.mkdtemp(prefix="separated-", dir=work_dir)
  t0 = time.perf_counter()
  proc = run_python(["-c", _PEAK_RSS, sys.executable, "-m", "vsep_tf.separate", f"--model_dir={model_dir}",
                     f"--input={path}", f"--output_dir={out_dir}", "--overwrite", "--noprogress"])
  wall = time.perf_counter() - t0
  report = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"rc": proc.returncode}
  if proc.returncode or report["rc"]:
    raise RuntimeError(f"separate --model_dir={model_dir} failed:\n{proc.stderr[-2000:]}")
  shutil.rmtree(out_dir, ignore_errors=True)
  return {"peak_rss_mib": report["maxrss_kib"] / 1024, "wall_seconds": wall, "cli_rtf": wall / seconds}


def section_memory(work_dir) -> dict:
  out = {"model_dir": FLAGS.memory_model, "minutes": {}}
  for minutes in map(float, FLAGS.memory_minutes):
    path = write_bench_wav(os.path.join(work_dir, f"track_{minutes:g}min.wav"), 60 * minutes, seed=1)
    out["minutes"][f"{minutes:g}"] = r = _run_separate(FLAGS.memory_model, path, 60 * minutes, work_dir)
    log(f"memory {minutes:g} min: peak RSS {r['peak_rss_mib']:.0f} MiB, {r['wall_seconds']:.1f} s wall")
    os.remove(path)
  return out


def section_flops(rtf: dict) -> dict:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from vsep_tf import export as export_lib  # pylint: disable=import-outside-toplevel
  # Machine peak: float32 matmul throughput of TF on this CPU (2048^2, all cores), the best of 5 runs.
  a = tf.random.normal([2048, 2048])
  mm = tf.function(lambda x: tf.linalg.matmul(x, x))
  mm(a).numpy()
  best = min(_timed(lambda: mm(a).numpy()) for _ in range(5))
  peak = 2 * 2048 ** 3 / best
  out = {"machine_peak_flops": peak, "models": {}}
  for model_dir, r in rtf["models"].items():
    flops, chunk = export_lib.chunk_flops(r["export_dir"])
    rate, overlap = r["sample_rate"], r["chunk_overlap"]
    channels = 1 if r["default"].get("stereo") == "mid" else 2
    # per audio second of 44.1 kHz stereo: the chunks' cross-fade overlap included; a 'mid' model runs its
    # networks once for both channels but its STFT per channel (counted once here: a lower bound)
    per_second = flops * rate / (chunk - overlap) * channels
    m = {"flops_per_chunk": flops, "chunk_length": chunk, "flops_per_audio_second": per_second, "variants": {}}
    for name, v in r["variants"].items():
      achieved = per_second / v["rtf"]
      m["variants"][name] = {"achieved_flops": achieved, "fraction_of_peak": achieved / peak}
    out["models"][model_dir] = m
    log(f"flops {model_dir}: {per_second / 1e9:.2f} GFLOP per audio second, peak {peak / 1e9:.1f} GFLOP/s")
  return out


def section_peers(work_dir) -> dict:
  if not os.path.exists(FLAGS.peer_python):
    return {"error": f"{FLAGS.peer_python} not found: run `bash tools/install_peers.sh` (PyTorch CPU + "
                     "openunmix + demucs in their own venv) or pass --peer_python"}
  path = write_bench_wav(os.path.join(work_dir, "peer_input.wav"), FLAGS.rtf_seconds)  # the rtf section's audio
  log(f"peers: {FLAGS.peer_python} tools/bench_peers.py")
  proc = subprocess.run([FLAGS.peer_python, os.path.join(REPO, "tools", "bench_peers.py"), f"--input={path}",
                         f"--threads={FLAGS.threads}"], capture_output=True, text=True, check=False)
  if proc.returncode:
    return {"error": f"tools/bench_peers.py exited {proc.returncode}: {proc.stderr[-2000:]}"}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def section_training(work_dir) -> dict:
  out = {}
  for strategy in ("default", "mirrored"):
    proc = run_python(["-m", "tools.bench", "--worker=training", f"--strategy={strategy}",
                       f"--work_dir={os.path.join(work_dir, 'train_' + strategy)}",
                       f"--batch_sizes={','.join(FLAGS.batch_sizes)}", f"--train_seconds={FLAGS.train_seconds}"])
    if proc.returncode:
      out[strategy] = {"error": proc.stderr[-2000:]}
      continue
    out[strategy] = json.loads(proc.stdout.strip().splitlines()[-1])
  return out


def worker_training() -> dict:
  """Prior training throughput of configs/research/toy_wavenet.flags (4 WaveNet priors, crops of 4096) at each
  batch size."""
  from vsep_tf import run_flags  # pylint: disable=import-outside-toplevel
  from vsep_tf.training import strategy as strategy_lib  # pylint: disable=import-outside-toplevel
  strategy = strategy_lib.get_strategy(FLAGS.strategy, num_cpu_devices=2)  # before any TF op
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  out = {"replicas": strategy.num_replicas_in_sync}
  for batch in map(int, FLAGS.batch_sizes):
    if batch % strategy.num_replicas_in_sync:
      out[str(batch)] = {"error": f"global batch {batch} does not split over "
                                  f"{strategy.num_replicas_in_sync} replicas"}
      continue
    cfg = run_flags.parse_flags([
        "--flagfile=configs/research/toy_wavenet.flags", f"--model_dir={FLAGS.work_dir}/b{batch}",
        f"--batch_size={batch}", f"--strategy={FLAGS.strategy}", "--steps_per_loop=2", "--train_steps=1000000",
        "--checkpoint_every=1000000", "--audio_summary_seconds=0"])
    trainer = trainer_lib.get_trainer("priors")(cfg, strategy)
    trainer.train(num_steps=2)  # trace + first steps
    trainer.loop_times.clear()
    while sum(dt for _, dt in trainer.loop_times) < FLAGS.train_seconds:
      trainer.train(num_steps=2)
    steps = sum(n for n, _ in trainer.loop_times)
    seconds = sum(dt for _, dt in trainer.loop_times)
    out[str(batch)] = {"steps_per_second": steps / seconds,
                       "samples_per_second": steps * trainer.samples_per_step / seconds,
                       "samples_per_step": trainer.samples_per_step}
    log(f"training {FLAGS.strategy} batch {batch}: {steps * trainer.samples_per_step / seconds / 1e3:.0f} "
        "ksamples/s")
  return out


# ----------------------------------------------------------------------------------------------------- report
def _peer_rtfs(res: dict) -> dict:
  return {name: v["rtf"] for name, v in res.get("peers", {}).items() if isinstance(v, dict) and "rtf" in v}


def markdown(res: dict) -> str:
  m = res["machine"]
  lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, TensorFlow {m['tensorflow']}, "
           f"Python {m['python']}. Command: `python -m tools.bench` ({res['date']}). Audio: {BENCH_RATE} Hz stereo "
           "(tools/bench.py bench_audio), resampled to each model's rate as `separate` does.", ""]
  peers = _peer_rtfs(res)
  rtf = res.get("rtf")
  if rtf:
    lines += [f"**Separation speed, in process** ({rtf['audio_seconds']:.0f} s of audio; real-time factor = compute "
              "seconds per audio second, lower is faster; resampling and chunking included, file I/O not)", "",
              "| model | form | real-time factor | x real time | size | max deviation from eager / peak |",
              "|---|---|---|---|---|---|"]
    for model_dir, r in rtf["models"].items():
      for name, v in r["variants"].items():
        size = "-" if v["bytes"] is None else f"{v['bytes'] / 2 ** 20:.1f} MiB"
        lines.append(f"| {model_dir} | default (--quality=fast), {name} | {v['rtf']:.4f} | {v['x_real_time']:.0f}x | "
                     f"{size} | {v['max_rel_deviation_from_eager']:.1e} |")
      if "best" in r:
        b = r["best"]
        lines.append(f"| {model_dir} | --quality=best, eager ({b['audio_seconds']:g} s) | {b['rtf']:.3f} | "
                     f"{b['x_real_time']:.1f}x | - | - |")
    for name, v in res.get("peers", {}).items():
      if not isinstance(v, dict):
        continue
      if "error" in v:
        lines.append(f"| {name} | not measured: {v['error']} | | | | |")
      else:
        lines.append(f"| {name} | PyTorch {v['torch']}, {v['parameters'] / 1e6:.1f}M params, random weights | "
                     f"{v['rtf']:.4f} | {1 / v['rtf']:.1f}x | - | - |")
    if "error" in res.get("peers", {}):
      lines.append(f"| peers | not measured: {res['peers']['error']} | | | | |")
  cli = res.get("cli")
  if cli:
    lines += ["", f"**End to end**: `python -m vsep_tf.separate --model_dir=M --input=<{cli['audio_seconds']:.0f} s "
                  "44.1 kHz stereo WAV>` (process start, load, decode, resample, separate, write)", "",
              "| model | wall time | real-time factor | x real time | peak RSS | vs Open-Unmix | vs HT-Demucs |",
              "|---|---|---|---|---|---|---|"]
    for model_dir, v in cli["models"].items():
      ratio = {p: f"{peers[p] / v['cli_rtf']:.1f}x faster" if p in peers else "-"
               for p in ("Open-Unmix (umxhq)", "HT-Demucs")}
      lines.append(f"| {model_dir} | {v['wall_seconds']:.1f} s | {v['cli_rtf']:.4f} | {1 / v['cli_rtf']:.1f}x | "
                   f"{v['peak_rss_mib']:.0f} MiB | {ratio['Open-Unmix (umxhq)']} | {ratio['HT-Demucs']} |")
    lines.append("")
    lines.append("The peers' figures are compute only (model in memory, no process start or file I/O): the ratios "
                 "favour them.")
  fl = res.get("flops")
  if fl:
    lines += ["", f"**FLOPs** of each default as exported (TF graph profiler, frozen chunk graph; per second of "
                  f"44.1 kHz stereo, chunk overlap included); machine peak (float32 matmul, measured) "
                  f"{fl['machine_peak_flops'] / 1e9:.1f} GFLOP/s.", "",
              "| model | GFLOP per audio second | form | achieved GFLOP/s | fraction of peak |",
              "|---|---|---|---|---|"]
    for model_dir, f in fl["models"].items():
      for name, v in f["variants"].items():
        lines.append(f"| {model_dir} | {f['flops_per_audio_second'] / 1e9:.2f} | {name} | "
                     f"{v['achieved_flops'] / 1e9:.1f} | {100 * v['fraction_of_peak']:.1f}% |")
  mem = res.get("memory")
  if mem:
    lines += ["", f"**Peak memory** of `python -m vsep_tf.separate --model_dir={mem['model_dir']}` (whole process, "
                  "RSS; 44.1 kHz stereo)", "",
              "| track length | peak RSS | wall time | CLI real-time factor |", "|---|---|---|---|"]
    for k, v in mem["minutes"].items():
      lines.append(f"| {k} min | {v['peak_rss_mib']:.0f} MiB | {v['wall_seconds']:.1f} s | {v['cli_rtf']:.4f} |")
  tr = res.get("training")
  if tr:
    lines += ["", "**Prior training throughput** (configs/research/toy_wavenet.flags: 4 WaveNet priors, crops of "
                  "4,096; ksamples/s summed over the priors)", "",
              "| batch | default | Mirrored (2 logical CPUs) | ratio |", "|---|---|---|---|"]
    for b in FLAGS.batch_sizes:
      d, mi = tr.get("default", {}).get(b, {}), tr.get("mirrored", {}).get(b, {})
      ds = f"{d['samples_per_second'] / 1e3:.0f}" if "samples_per_second" in d else d.get("error", "-")
      ms = f"{mi['samples_per_second'] / 1e3:.0f}" if "samples_per_second" in mi else mi.get("error", "-")
      ratio = (f"{mi['samples_per_second'] / d['samples_per_second']:.2f}"
               if "samples_per_second" in d and "samples_per_second" in mi else "-")
      lines.append(f"| {b} | {ds} | {ms} | {ratio} |")
  return "\n".join(lines) + "\n"


def plot(res: dict, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  bars = []
  for model_dir, r in res.get("rtf", {}).get("models", {}).items():
    bars += [(f"{_model_name(model_dir)}: {name}", v["rtf"], "C0") for name, v in r["variants"].items()]
    if "best" in r:
      bars.append((f"{_model_name(model_dir)}: --quality=best", r["best"]["rtf"], "C3"))
  for model_dir, v in res.get("cli", {}).get("models", {}).items():
    bars.append((f"{_model_name(model_dir)}: separate CLI, end to end", v["cli_rtf"], "C2"))
  bars += [(name, v, "C1") for name, v in _peer_rtfs(res).items()]
  ax = axes[0]
  if bars:
    names, values, colors = zip(*bars)
    ax.barh(names, values, color=colors)
  ax.set_xscale("log")
  ax.axvline(1 / 20, color="k", ls="--", lw=1, label="20x faster than real time")
  ax.set_xlabel("real-time factor (log; lower is faster)")
  ax.tick_params(axis="y", labelsize=7)
  ax.invert_yaxis()
  ax.legend(fontsize=8)
  mem = res.get("memory", {}).get("minutes", {})
  if mem:
    axes[1].plot([float(k) for k in mem], [v["peak_rss_mib"] for v in mem.values()], "o-")
    axes[1].set_ylim(0, max(v["peak_rss_mib"] for v in mem.values()) * 1.3)
    axes[1].set_xlabel("track length (min)")
    axes[1].set_ylabel("peak RSS (MiB)")
    axes[1].set_title(f"separate CLI memory ({_model_name(res['memory']['model_dir'])})")
  for strategy, v in res.get("training", {}).items():
    pts = [(int(b), r["samples_per_second"] / 1e3) for b, r in v.items()
           if isinstance(r, dict) and "samples_per_second" in r]
    if pts:
      axes[2].plot(*zip(*pts), "o-", label=strategy)
  axes[2].set_xscale("log", base=2)
  axes[2].set_xlabel("global batch")
  axes[2].set_ylabel("ksamples/s")
  axes[2].set_title("prior training throughput")
  axes[2].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=90)


def main(argv):
  del argv
  if FLAGS.worker == "training":
    print(json.dumps(worker_training()))
    return 0
  unknown = set(FLAGS.sections) - set(SECTIONS)
  if unknown:
    raise app.UsageError(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
  if "flops" in FLAGS.sections and "rtf" not in FLAGS.sections:
    raise app.UsageError("the flops section needs the rtf section (its exports and real-time factors)")
  work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="vsep-bench-")
  os.makedirs(work_dir, exist_ok=True)
  res = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "sections": FLAGS.sections}
  if "rtf" in FLAGS.sections:
    res["rtf"] = section_rtf(work_dir)
  if "peers" in FLAGS.sections:
    res["peers"] = section_peers(work_dir)
  if "cli" in FLAGS.sections:
    res["cli"] = section_cli(work_dir)
  if "flops" in FLAGS.sections:
    res["flops"] = section_flops(res["rtf"])
  if "memory" in FLAGS.sections:
    res["memory"] = section_memory(work_dir)
  if "training" in FLAGS.sections:
    res["training"] = section_training(work_dir)
  for path in (FLAGS.output_json, FLAGS.output_md, FLAGS.output_png):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(FLAGS.output_json, "w", encoding="utf-8") as f:
    json.dump(res, f, indent=2)
  table = markdown(res)
  with open(FLAGS.output_md, "w", encoding="utf-8") as f:
    f.write(table)
  plot(res, FLAGS.output_png)
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
