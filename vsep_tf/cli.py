"""The command line of file separation, shared by `python -m vsep_tf.separate` and the TF-Serving client
(`python -m vsep_tf.export.client`): their common flags, one-line errors, progress, and interruption.

  define_flags(fv)       --input, --output_dir, --format, --subtype, ... (defined here only)
  check_flags(fv)        a usage problem of those flags, or None
  define_quality_flag(fv)    --quality=fast|best: a model directory's quality preset
  define_compose_flags(fv), parse_extra_priors(values)
                         --sources / --extra_priors of a model directory (priors compose: separate a mix of any
                         subset of the classes, add a class's prior without retraining the others)
  flags_parser(prog)     for absl's app.run: a flag error is one line and exit code 2
  Session(prog).run(work)
                         runs work() -> exit code in a worker thread while the main thread waits in short joins
                         (ticking the progress line): SIGINT, SIGTERM or SIGHUP stop the process within a fraction
                         of a second, whatever the model is doing (Python runs signal handlers in the main thread
                         only, between bytecodes, and a TensorFlow call can hold a thread for many seconds). The
                         temporary files of the track in progress are removed (inference.Cancellation; completed
                         tracks stay), one line is printed and the process exits with 128 + the signal number
                         (130 for Ctrl-C, 143 for SIGTERM).
  Session.separate_files(separator, fv)
                         inference.separate_files with the flags' options: a line per separated track on stdout,
                         each error once on stderr; exit code 0 if every track succeeded, else 1.

Nothing here imports TensorFlow at import time, so usage errors and --help answer at once.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

from absl import flags

FORMATS = ("wav", "flac")                 # = inference.FORMATS (tests/test_separate_cli.py checks they agree)
SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")  # = audio.SUBTYPES: both import TensorFlow, which flags must not need
QUALITIES = ("fast", "balanced", "best")  # = model_dir.QUALITIES (checked by tests/test_separate_cli.py)
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
JOIN_SECONDS = 0.1                        # how often the main thread wakes up (signals are handled at once anyway)
TICK_SECONDS = 1.0                        # the progress line's clock is redrawn this often on a terminal


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """The input / output flags of both separation CLIs."""
  flags.DEFINE_string("input", None, "An audio file (WAV/FLAC), a track folder (<track>/mixture.{wav,flac}: one "
                      "track), or a folder: its audio files and the mixture of each of its track folders.",
                      flag_values=fv)
  flags.DEFINE_string("output_dir", None, "Sources go to <output_dir>/<track>/<source>.<format>.", flag_values=fv)
  flags.DEFINE_enum("format", "wav", list(FORMATS), "Output file format.", flag_values=fv)
  flags.DEFINE_enum("subtype", "PCM_16", list(SUBTYPES), "Output sample type (FLOAT: WAV only).", flag_values=fv)
  flags.DEFINE_boolean("overwrite", False, "Replace existing outputs (otherwise a track whose outputs exist "
                       "fails, untouched).", flag_values=fv)
  flags.DEFINE_float("chunk_seconds", 0.0, "Chunk length in seconds (0: the model's own). Memory grows with "
                     "it, not with the file's length.", flag_values=fv)
  flags.DEFINE_boolean("downmix", False, "Average the channels before separating (mono sources) instead of "
                       "separating every channel.", flag_values=fv)
  flags.DEFINE_integer("batch_size", 4, "Chunks per model call (at most: files of few chunks go in smaller "
                       "batches, so that progress moves).", flag_values=fv)
  flags.DEFINE_boolean("progress", True, "Progress line on stderr.", flag_values=fv)


def check_flags(fv: flags.FlagValues) -> Optional[str]:
  """A usage problem of the flags of define_flags, or None."""
  if not fv.input:
    return "--input is required"
  if not fv.output_dir:
    return "--output_dir is required"
  if not os.path.exists(fv.input):
    return f"--input={fv.input}: no such file or directory"
  if os.path.exists(fv.output_dir) and not os.path.isdir(fv.output_dir):
    return f"--output_dir={fv.output_dir}: not a directory"
  if fv.format == "flac" and fv.subtype == "FLOAT":
    return "--format=flac stores integer samples: use --subtype=PCM_16 or PCM_24 (or --format=wav)"
  if fv.chunk_seconds < 0:
    return f"--chunk_seconds must be >= 0, got {fv.chunk_seconds}"
  if fv.batch_size < 1:
    return f"--batch_size must be >= 1, got {fv.batch_size}"
  return None


def define_compose_flags(fv: flags.FlagValues = flags.FLAGS, sources: bool = True) -> None:
  """--sources (unless sources=False) and --extra_priors: which priors of a model directory separate
  (model_dir.load_separator's `sources` and `extra_priors`)."""
  if sources:
    flags.DEFINE_list("sources", [], "Separate with only these classes' priors, in this order (e.g. "
                      "--sources=violin,clarinet,tenor_sax for a trio; the outputs add up to the mix). Empty: all of "
                      "the model's classes (then the --extra_priors ones). Prior-based models only (spectral, nmf, "
                      "langevin), not exported ones.", flag_values=fv)
  flags.DEFINE_multi_string("extra_priors", [], "'name=DIR': add class `name` from a spectral prior model directory "
                            "(--job=spectral, or a spectral separator's: its priors/) trained on its own (same STFT, "
                            "latent size and rate); it starts the MAP fit from its own prior's encoder (repeatable).",
                            flag_values=fv)


def define_quality_flag(fv: flags.FlagValues = flags.FLAGS) -> None:
  """--quality: model_dir.load_separator's quality preset of a model directory."""
  flags.DEFINE_enum("quality", "fast", list(QUALITIES), "'fast' (default): a spectral separator's one forward "
                    "pass of its amortised encoder; 'balanced': at most 50 iterations of its MAP fit from there; "
                    "'best': the model's saved settings (its full MAP fit, tens of times slower than fast). Models "
                    "with one setting ignore it. Model directories only (an export is what it was exported as).",
                    flag_values=fv)


def parse_extra_priors(values) -> dict:
  """['name=DIR', ...] -> {name: DIR}; ValueError naming a malformed or repeated entry."""
  out = {}
  for value in values or ():
    name, sep, path = str(value).partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
      raise ValueError(f"--extra_priors={value}: expected name=DIR")
    if name in out:
      raise ValueError(f"--extra_priors: class {name!r} given twice")
    if not os.path.isdir(path):
      raise ValueError(f"--extra_priors={value}: {path} is not a directory")
    out[name] = path
  return out


def flags_parser(prog: str, fv: flags.FlagValues = flags.FLAGS) -> Callable:
  """A `flags_parser` for absl's app.run: an unknown flag or a bad value is one line '<prog>: error: ...' on
  stderr and exit code 2 (absl's own parser prints two lines and exits 1)."""

  def parse(argv):
    try:
      return fv(argv)
    except flags.Error as e:
      message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
      print(f"{prog}: error: {message} (--helpfull lists the flags)", file=sys.stderr, flush=True)
      sys.exit(2)

  return parse


class Console:
  """stdout / stderr of a CLI whose work runs in another thread: whole lines, and one progress line on stderr
  that later lines do not run into. Everything is written under one lock; the signal handler takes it (with a
  timeout) for its last line, so no output of the worker is interleaved with it."""

  def __init__(self, out=None, err=None):
    self.lock = threading.RLock()
    self.out = out or sys.stdout
    self.err = err or sys.stderr
    self._status = None  # the progress text on screen, without its '\r'
    try:
      self.tty = self.err.isatty()
    except (AttributeError, ValueError):
      self.tty = False

  def print(self, text: str, err: bool = False) -> None:
    """One line on stdout (or stderr), after closing the progress line."""
    with self.lock:
      self._close_status()
      stream = self.err if err else self.out
      stream.write(text + "\n")
      stream.flush()

  def status(self, text: str, final: bool = False) -> None:
    """(Re)draws the progress line; final: and ends it."""
    with self.lock:
      pad = " " * max(0, len(self._status or "") - len(text))
      self.err.write("\r" + text + pad)
      self._status = text
      if final:
        self._close_status()
      self.err.flush()

  def _close_status(self):
    if self._status is not None:
      self.err.write("\n")
      self.err.flush()
      self._status = None

  def last_line(self, text: str, timeout: float = 1.0) -> None:
    """The process's last words on stderr (any pending stdout flushed first). Keeps the lock if it gets it:
    nothing else is written after them."""
    self.lock.acquire(timeout=timeout)  # pylint: disable=consider-using-with
    for stream in (self.out, self.err):
      try:
        stream.flush()
      except (OSError, ValueError):
        pass
    try:
      if self._status is not None:
        self.err.write("\n")
        self._status = None
      self.err.write(text + "\n")
      self.err.flush()
    except (OSError, ValueError):
      pass


class Progress:
  """inference.Listener printing to a Console: a progress line per track (chunks done, time, real-time factor =
  processing time / audio time), a line per separated track on stdout, each failed track once on stderr."""

  def __init__(self, prog: str, console: Console, output_dir: str, fmt: str, show: bool = True):
    self.prog, self.console, self.output_dir, self.fmt, self.show = prog, console, output_dir, fmt, show
    self._lock = threading.Lock()
    self._track = None  # (label, seconds of audio, start time, done, total) of the track in progress
    self._drawn = 0.0

  def start(self, path: str, track: str, seconds: float, chunks: int) -> None:
    del path
    with self._lock:
      self._track = [track, float(seconds), time.perf_counter(), 0, int(chunks)]
      self._draw(False)

  def progress(self, done: int, total: int) -> None:
    with self._lock:
      if self._track is None:
        return
      self._track[3:] = [int(done), int(total)]
      self._draw(done >= total)
      if done >= total:
        self._track = None

  def tick(self) -> None:
    """Redraws the progress line of a long model call so that its clock moves (terminals only)."""
    with self._lock:
      if self._track is not None and self._track[4] and self.console.tty:
        if time.perf_counter() - self._drawn >= TICK_SECONDS:
          self._draw(False)

  def _draw(self, final: bool):
    if not self.show:
      return
    label, seconds, t0, done, total = self._track
    elapsed = time.perf_counter() - t0
    frac = done / max(total, 1)
    width = 30
    bar = "=" * int(round(frac * width)) + "." * (width - int(round(frac * width)))
    rtf = f", real-time factor {elapsed / (frac * seconds):.3f}" if frac > 0 and seconds > 0 else ""
    self.console.status(f"{label} [{bar}] {done}/{total} chunks, {elapsed:.0f} s{rtf}", final=final)
    self._drawn = time.perf_counter()

  def done(self, result) -> None:
    with self._lock:
      self._track = None
    if not result.ok:
      self.console.print(f"{self.prog}: error: {result.error}", err=True)
      return
    names = ",".join(result.outputs)
    rtf = result.elapsed / max(result.seconds, 1e-9)
    self.console.print(f"{result.path}: {result.seconds:.1f} s of audio in {result.elapsed:.1f} s (real-time factor "
                       f"{rtf:.3f}) -> {os.path.join(self.output_dir, result.track)}/{{{names}}}.{self.fmt}")


class Session:
  """One run of a separation CLI: its console, its cancellation, its worker thread and its signal handling."""

  def __init__(self, prog: str):
    self.prog = prog
    self.console = Console()
    self.cancel = None    # the inference.Cancellation of separate_files (made in the worker: it imports TensorFlow)
    self.progress = None  # its Progress

  def error(self, message: str, code: int = 1) -> int:
    """Prints '<prog>: error: <message>' (one line) on stderr; returns `code`."""
    self.console.print(f"{self.prog}: error: {message}", err=True)
    return code

  def run(self, work: Callable[[], int]) -> int:
    """work() -> exit code, in a worker thread; returns its code (re-raises what it raised). See the module
    docstring for what a signal does meanwhile."""
    outcome = {}

    def target():
      try:
        outcome["code"] = work()
      except BaseException as e:  # pylint: disable=broad-except
        outcome["error"] = e

    def on_signal(signum, frame):
      del frame
      for s in SIGNALS:  # a second Ctrl-C while this runs changes nothing
        signal.signal(s, signal.SIG_IGN)
      if self.cancel is not None:
        self.cancel.cancel()
      name = signal.Signals(signum).name
      self.console.last_line(f"{self.prog}: interrupted ({name}); no partial output left")
      os._exit(128 + signum)  # pylint: disable=protected-access

    worker = threading.Thread(target=target, name=f"{self.prog}-worker", daemon=True)
    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    try:
      worker.start()
      while worker.is_alive():
        worker.join(JOIN_SECONDS)
        if self.progress is not None:
          self.progress.tick()
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
    if "error" in outcome:
      raise outcome["error"]
    return outcome["code"]

  def separate_files(self, separator, fv: flags.FlagValues, errors: tuple = ()) -> int:
    """Separates the inputs the flags name (in the worker). Returns the exit code: 0 if every track succeeded."""
    from vsep_tf import audio  # pylint: disable=import-outside-toplevel
    from vsep_tf import inference  # pylint: disable=import-outside-toplevel
    self.cancel = inference.Cancellation()
    self.progress = Progress(self.prog, self.console, fv.output_dir, fv.format, show=fv.progress)
    try:
      results = inference.separate_files(
          separator, inputs=fv.input, output_dir=fv.output_dir, fmt=fv.format, subtype=fv.subtype,
          overwrite=fv.overwrite, downmix=fv.downmix, chunk_seconds=fv.chunk_seconds or None,
          batch_size=fv.batch_size, errors=errors, listener=self.progress, cancel=self.cancel)
    except audio.AudioError as e:
      return self.error(str(e))
    failed = [r for r in results if not r.ok]
    if failed and len(results) > 1:
      self.console.print(f"{self.prog}: {len(failed)} of {len(results)} input(s) failed (no output written for "
                         f"them)", err=True)
    return 1 if failed else 0
