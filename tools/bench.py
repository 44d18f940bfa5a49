#!/usr/bin/env python3
r"""Benchmarks: speed and memory of vsep-tf against peers, side by side, in one run on this machine.

  python -m tools.bench                                    # everything, ~25 min on 2 cores
  python -m tools.bench --sections=rtf,flops --rtf_seconds=20

Sections (--sections):
  rtf       separation real-time factor (compute seconds per second of audio, 16 kHz mono) of the variational
            separator as eager tf.function, SavedModel, TFLite float32 / dynamic-range int8 / float16, and of the
            Langevin separator; all on the same audio, chunked with the same chunks and cross-fade.
  peers     Open-Unmix and HT-Demucs (PyTorch, random weights: speed only) on the same audio, in their own venv
            (tools/install_peers.sh; --peer_python). A peer that cannot run is reported with the reason.
  memory    peak RSS of the `python -m vsep_tf.separate` CLI on 1, 5 and 10 minutes of audio (os.wait4 rusage of
            each child process) and its wall-clock real-time factor.
  training  prior training throughput (samples/s) at batch sizes 1..32, default strategy vs MirroredStrategy over
            2 logical CPU devices, each in its own process (logical devices must be set before TF starts).
  flops     FLOPs per second of audio of the exported chunk graph (TF's graph profiler, frozen graph) and the
            fraction of this machine's measured float32 matmul peak that the separator reaches.

The models are the DEFAULT ARCHITECTURES of the toy research configs (configs/research/toy_variational.flags'
encoder, configs/research/toy_wavenet.flags' priors) built at 16 kHz and trained for 2 steps: speed does not
depend on the weights. --encoder_dir / --priors_dir measure trained model directories instead.
Writes --output_json, --output_md and --output_png. Figures depend on the machine and its load: not a test.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app, flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("rtf", "peers", "memory", "training", "flops")
FLAGS = flags.FLAGS
flags.DEFINE_list("sections", list(SECTIONS), f"Which of {SECTIONS} to run.")
flags.DEFINE_string("work_dir", None, "Scratch directory (default: a new temporary one).")
flags.DEFINE_string("encoder_dir", None, "A trained --job=variational/supervised model dir (default: built).")
flags.DEFINE_string("priors_dir", None, "A trained --job=priors model dir (default: built).")
flags.DEFINE_list("encoder_flags", [], "Extra vsep_tf.train flags of the built encoder, e.g. "
                  "'--encoder.frame_size=16,--encoder.num_layers=8' (an architecture variant).")
flags.DEFINE_integer("sample_rate", 16000, "Sample rate of the built models and of the benchmark audio.")
flags.DEFINE_float("rtf_seconds", 60.0, "Audio length for the real-time factors.")
flags.DEFINE_float("langevin_seconds", 1.0, "Audio length for the (slow) Langevin separator (0: skip it).")
flags.DEFINE_integer("langevin_steps_per_level", 20, "Langevin schedule for the benchmark (x 10 levels).")
flags.DEFINE_list("memory_minutes", ["1", "5", "10"], "Track lengths for the peak-RSS measurement.")
flags.DEFINE_list("batch_sizes", ["1", "2", "4", "8", "16", "32"], "Prior training batch sizes.")
flags.DEFINE_float("train_seconds", 8.0, "Timed training seconds per (strategy, batch size), after warm-up.")
flags.DEFINE_string("peer_python", os.path.join(REPO, ".venv-peers", "bin", "python"),
                    "Python with PyTorch + the peers (bash tools/install_peers.sh).")
flags.DEFINE_integer("threads", 2, "TFLite / PyTorch threads.")
flags.DEFINE_string("output_json", os.path.join(REPO, "docs", "results", "bench.json"), "Results JSON.")
flags.DEFINE_string("output_md", os.path.join(REPO, "docs", "bench.md"), "Results table (Markdown).")
flags.DEFINE_string("output_png", os.path.join(REPO, "docs", "bench.png"), "Results plot.")
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


def build_model_dirs(work_dir: str) -> tuple:
  """Default-architecture encoder and priors at --sample_rate, 2 training steps each (speed only)."""
  dirs = []
  for name, flagfile, extra in [
      ("encoder", "configs/research/toy_supervised.flags", ["--valid_examples=0", *FLAGS.encoder_flags]),
      ("priors", "configs/research/toy_wavenet.flags", ["--audio_summary_seconds=0"])]:
    model_dir = os.path.join(work_dir, name)
    log(f"building the default {name} ({flagfile}, 2 steps) in {model_dir}")
    proc = run_python(["-m", "vsep_tf.train", f"--flagfile={flagfile}", f"--model_dir={model_dir}",
                       f"--sample_rate={FLAGS.sample_rate}", "--train_steps=2", "--steps_per_loop=1",
                       "--checkpoint_every=2", "--batch_size=2", *extra])
    if proc.returncode:
      raise RuntimeError(f"building {name} failed:\n{proc.stderr[-3000:]}")
    dirs.append(model_dir)
  return tuple(dirs)


def bench_audio(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
  """A music-like test signal: a sum of harmonic tones changing every half second plus a little noise."""
  rng = np.random.default_rng(seed)
  n = int(seconds * rate)
  t = np.arange(n) / rate
  out = np.zeros(n, np.float64)
  seg = rate // 2
  for start in range(0, n, seg):
    tt = t[start:start + seg]
    for _ in range(3):
      f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
      out[start:start + seg] += sum(np.sin(2 * np.pi * h * f0 * tt) / h for h in range(1, 6) if h * f0 < rate / 2)
  out += 0.01 * rng.standard_normal(n)
  return (0.25 * out / np.abs(out).max()).astype(np.float32)


# --------------------------------------------------------------------------------------------------- sections
def section_rtf(encoder_dir, priors_dir, work_dir) -> dict:
  from vsep_tf import export as export_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.model_dir import load_separator  # pylint: disable=import-outside-toplevel
  eager = load_separator(encoder_dir)
  rate = eager.sample_rate
  chunk, overlap = eager.chunk_length, eager.chunk_overlap
  variants, sizes, export_dir = export_lib.export_variants(eager, os.path.join(work_dir, "exports"), chunk,
                                                           "bench", FLAGS.threads)
  mix = bench_audio(FLAGS.rtf_seconds, rate)
  out = {"audio_seconds": FLAGS.rtf_seconds, "sample_rate": rate, "chunk_length": chunk, "chunk_overlap": overlap,
         "export_dir": export_dir, "variants": {}}
  reference = None
  for name, sep in variants.items():
    for b in range(1, 5):  # warm-up: every batch shape separate_long uses (batch_size 4)
      sep.separate(np.zeros([b, chunk], np.float32))
    t0 = time.perf_counter()
    est = sep.separate_long(mix, chunk, overlap)
    rtf = (time.perf_counter() - t0) / FLAGS.rtf_seconds
    reference = est if reference is None else reference
    dev = float(np.abs(est - reference).max() / max(np.abs(reference).max(), 1e-12))
    out["variants"][name] = {"rtf": rtf, "x_real_time": 1 / rtf, "bytes": sizes.get(name),
                             "max_rel_deviation_from_eager": dev}
    log(f"rtf {name}: {rtf:.4f} ({1 / rtf:.0f}x real time)")
  if FLAGS.langevin_seconds <= 0:
    return out
  lang = load_separator(priors_dir, [f"--langevin_steps_per_level={FLAGS.langevin_steps_per_level}"])
  n = int(FLAGS.langevin_seconds * lang.sample_rate)
  x = bench_audio(FLAGS.langevin_seconds, lang.sample_rate)[None]
  np.asarray(lang.separate(x))  # trace + warm-up on the same shape
  t0 = time.perf_counter()
  np.asarray(lang.separate(x))
  dt = time.perf_counter() - t0
  steps = 10 * FLAGS.langevin_steps_per_level
  out["langevin"] = {"rtf": dt / FLAGS.langevin_seconds, "audio_seconds": FLAGS.langevin_seconds,
                     "gradient_steps": steps, "rtf_per_gradient_step": dt / FLAGS.langevin_seconds / steps,
                     "samples": n}
  log(f"rtf Langevin ({steps} steps): {dt / FLAGS.langevin_seconds:.2f}")
  return out


def section_flops(export_dir, rtf: dict) -> dict:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from vsep_tf import export as export_lib  # pylint: disable=import-outside-toplevel
  flops, chunk = export_lib.chunk_flops(export_dir)
  rate, overlap = rtf["sample_rate"], rtf["chunk_overlap"]
  per_second = flops * rate / chunk                  # one pass over the audio
  per_second_chunked = flops * rate / (chunk - overlap)  # separate_long: chunks overlap by the cross-fade
  # Machine peak: float32 matmul throughput of TF on this CPU (2048^2, all cores), the best of 5 runs.
  a = tf.random.normal([2048, 2048])
  mm = tf.function(lambda x: tf.linalg.matmul(x, x))
  mm(a).numpy()
  best = min(_timed(lambda: mm(a).numpy()) for _ in range(5))
  peak = 2 * 2048 ** 3 / best
  out = {"flops_per_chunk": flops, "chunk_length": chunk, "flops_per_audio_second": per_second,
         "flops_per_audio_second_chunked": per_second_chunked, "machine_peak_flops": peak, "variants": {}}
  for name, v in rtf["variants"].items():
    achieved = per_second_chunked / v["rtf"]
    out["variants"][name] = {"achieved_flops": achieved, "fraction_of_peak": achieved / peak}
  log(f"flops: {per_second / 1e9:.2f} GFLOP per audio second, peak {peak / 1e9:.1f} GFLOP/s")
  return out


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def section_peers(work_dir) -> dict:
  if not os.path.exists(FLAGS.peer_python):
    return {"error": f"{FLAGS.peer_python} not found: run `bash tools/install_peers.sh` (PyTorch CPU + "
                     "openunmix + demucs in their own venv) or pass --peer_python"}
  from vsep_tf import audio  # pylint: disable=import-outside-toplevel
  path = os.path.join(work_dir, "peer_input.wav")
  audio.write_audio(path, bench_audio(FLAGS.rtf_seconds, FLAGS.sample_rate), FLAGS.sample_rate, overwrite=True)
  log(f"peers: {FLAGS.peer_python} tools/bench_peers.py")
  proc = subprocess.run([FLAGS.peer_python, os.path.join(REPO, "tools", "bench_peers.py"), f"--input={path}",
                         f"--threads={FLAGS.threads}"], capture_output=True, text=True, check=False)
  if proc.returncode:
    return {"error": f"tools/bench_peers.py exited {proc.returncode}: {proc.stderr[-2000:]}"}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def section_memory(encoder_dir, work_dir) -> dict:
  from vsep_tf import audio  # pylint: disable=import-outside-toplevel
  out = {}
  for minutes in map(float, FLAGS.memory_minutes):
    path = os.path.join(work_dir, f"track_{minutes:g}min.wav")
    audio.write_audio(path, bench_audio(60 * minutes, FLAGS.sample_rate, seed=1), FLAGS.sample_rate,
                      overwrite=True)
    out_dir = os.path.join(work_dir, f"separated_{minutes:g}")
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "vsep_tf.separate", f"--model_dir={encoder_dir}",
                              f"--input={path}", f"--output_dir={out_dir}", "--overwrite", "--noprogress"],
                             cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage: its peak RSS, not the parent's
    wall = time.perf_counter() - t0
    stderr = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status):
      raise RuntimeError(f"separate failed on {minutes} min:\n{stderr[-2000:]}")
    out[f"{minutes:g}"] = {"peak_rss_mib": usage.ru_maxrss / 1024, "wall_seconds": wall,
                           "cli_rtf": wall / (60 * minutes)}
    log(f"memory {minutes:g} min: peak RSS {usage.ru_maxrss / 1024:.0f} MiB, {wall:.1f} s wall")
    os.remove(path)
  return out


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
def markdown(res: dict) -> str:
  m = res["machine"]
  lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, TensorFlow {m['tensorflow']}, "
           f"Python {m['python']}. Command: `python -m tools.bench` ({res['date']}).",
           f"Variational encoder: {res['models']['weights']}"
           + (f", flags {' '.join(res['models']['encoder_flags'])}" if res["models"].get("encoder_flags") else
              ", configs/research/toy_variational.flags architecture (2 x 10 layers, 32 / 64 channels)") + ".", ""]
  rtf = res.get("rtf")
  if rtf:
    lines += [f"**Separation speed** ({rtf['audio_seconds']:.0f} s of audio at {rtf['sample_rate']} Hz; "
              "real-time factor = compute seconds per audio second, lower is faster)", "",
              "| separator | real-time factor | x real time | size | max deviation from eager / peak |",
              "|---|---|---|---|---|"]
    for name, v in rtf["variants"].items():
      size = "-" if v["bytes"] is None else f"{v['bytes'] / 2 ** 20:.2f} MiB"
      lines.append(f"| variational, {name} | {v['rtf']:.4f} | {v['x_real_time']:.0f}x | {size} | "
                   f"{v['max_rel_deviation_from_eager']:.1e} |")
    lv = rtf.get("langevin")
    if lv:
      lines.append(f"| Langevin ({lv['gradient_steps']} gradient steps, {lv['audio_seconds']:g} s) | {lv['rtf']:.2f} | "
                   f"{1 / lv['rtf']:.2f}x | - | - |")
  peers = res.get("peers")
  if peers:
    if "error" in peers:
      lines.append(f"| peers | not measured: {peers['error']} | | | |")
    for name, v in peers.items():
      if not isinstance(v, dict):
        continue
      if "error" in v:
        lines.append(f"| {name} | not measured: {v['error']} | | | |")
      else:
        lines.append(f"| {name} (PyTorch {v['torch']}, {v['parameters'] / 1e6:.1f}M params, 44.1 kHz stereo) | "
                     f"{v['rtf']:.4f} | {1 / v['rtf']:.1f}x | - | - |")
    ht = peers.get("HT-Demucs", {})
    if rtf and "rtf" in ht:
      lines += ["", f"Variational (TFLite float32) vs HT-Demucs: "
                    f"{ht['rtf'] / rtf['variants']['TFLite float32']['rtf']:.0f}x faster; eager: "
                    f"{ht['rtf'] / rtf['variants']['eager (tf.function)']['rtf']:.0f}x faster."]
  fl = res.get("flops")
  if fl:
    lines += ["", f"**FLOPs**: {fl['flops_per_audio_second'] / 1e9:.2f} GFLOP per second of audio "
                  f"({fl['flops_per_audio_second_chunked'] / 1e9:.2f} with the chunks' cross-fade overlap); "
                  f"machine peak (float32 matmul, measured) {fl['machine_peak_flops'] / 1e9:.1f} GFLOP/s.", "",
              "| variant | achieved GFLOP/s | fraction of peak |", "|---|---|---|"]
    for name, v in fl["variants"].items():
      lines.append(f"| {name} | {v['achieved_flops'] / 1e9:.1f} | {100 * v['fraction_of_peak']:.1f}% |")
  mem = res.get("memory")
  if mem:
    lines += ["", "**Peak memory** of `python -m vsep_tf.separate` (whole process, RSS)", "",
              "| track length | peak RSS | wall time | CLI real-time factor |", "|---|---|---|---|"]
    for k, v in mem.items():
      lines.append(f"| {k} min | {v['peak_rss_mib']:.0f} MiB | {v['wall_seconds']:.1f} s | {v['cli_rtf']:.4f} |")
  tr = res.get("training")
  if tr:
    lines += ["", "**Prior training throughput** (configs/research/toy_wavenet.flags: 4 WaveNet priors, crops of 4,096; "
                  "ksamples/s summed over the priors)", "",
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
  bars = [(name.replace(" (tf.function)", ""), v["rtf"], "C0")
          for name, v in res.get("rtf", {}).get("variants", {}).items()]
  if "langevin" in res.get("rtf", {}):
    bars.append(("Langevin", res["rtf"]["langevin"]["rtf"], "C3"))
  bars += [(name, v["rtf"], "C1") for name, v in res.get("peers", {}).items() if isinstance(v, dict) and "rtf" in v]
  ax = axes[0]
  if bars:
    names, values, colors = zip(*bars)
    ax.barh(names, values, color=colors)
  ax.set_xscale("log")
  ax.axvline(1 / 20, color="k", ls="--", lw=1, label="20x faster than real time")
  ax.set_xlabel("real-time factor (log; lower is faster)")
  ax.invert_yaxis()
  ax.legend(fontsize=8)
  mem = res.get("memory", {})
  if mem:
    axes[1].plot([float(k) for k in mem], [v["peak_rss_mib"] for v in mem.values()], "o-")
    axes[1].set_ylim(0, max(v["peak_rss_mib"] for v in mem.values()) * 1.3)
    axes[1].set_xlabel("track length (min)")
    axes[1].set_ylabel("peak RSS (MiB)")
    axes[1].set_title("separate CLI memory")
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
  work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="vsep-bench-")
  os.makedirs(work_dir, exist_ok=True)
  res = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "sections": FLAGS.sections}
  encoder_dir, priors_dir = FLAGS.encoder_dir, FLAGS.priors_dir
  if not (encoder_dir and priors_dir) and {"rtf", "memory", "flops"} & set(FLAGS.sections):
    built = build_model_dirs(work_dir)
    encoder_dir, priors_dir = encoder_dir or built[0], priors_dir or built[1]
  res["models"] = {"encoder_dir": encoder_dir, "priors_dir": priors_dir, "encoder_flags": FLAGS.encoder_flags,
                   "weights": "given" if FLAGS.encoder_dir else "default architecture, 2 training steps"}
  if "rtf" in FLAGS.sections or "flops" in FLAGS.sections:
    res["rtf"] = section_rtf(encoder_dir, priors_dir, work_dir)
  if "flops" in FLAGS.sections:
    res["flops"] = section_flops(res["rtf"]["export_dir"], res["rtf"])
  if "peers" in FLAGS.sections:
    res["peers"] = section_peers(work_dir)
  if "memory" in FLAGS.sections:
    res["memory"] = section_memory(encoder_dir, work_dir)
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
