"""Separation for users: waveforms at any sample rate and channel count, and whole files, streamed.

    from vsep_tf import inference
    sep = inference.AudioSeparator.from_model_dir("runs/toy_supervised")
    sources = sep.separate(waveform, sample_rate)      # {source name: [time] or [time, channels]}, same rate
    paths = sep.separate_file("song.flac", "out")      # out/song/<source>.wav, written atomically
    results = inference.separate_files(sep, inputs="musdb/test", output_dir="out")  # every track, a result each

Any `separators.base.Separator` works (a trained model directory through `vsep_tf.model_dir.load_separator`, an
exported SavedModel or TFLite file through `vsep_tf.export`, a TF-Serving endpoint through `vsep_tf.export.client`):

  * the input is resampled to the model's rate with `audio.resample` (streamed: `audio.StreamResampler`) and the
    estimates back to the input's rate, cut to the input's length;
  * every channel is separated on its own (stereo in, stereo sources out), or `downmix=True` averages the
    channels first (mono sources out);
  * the model sees chunks of `chunk_seconds` (default: the separator's `chunk_length`), cross-faded and
    normalised by the summed weights (`Separator.separate_stream`, the streaming form of `separate_long`);
  * files are read block by block and the sources written block by block to temporary files that are renamed
    into place only when every source is complete: memory does not grow with the file's length, a failure
    (unreadable or non-finite input, model error, Ctrl-C) leaves no partial output, and existing outputs are
    never replaced unless overwrite=True.

`separate_files` is the file loop of `python -m vsep_tf.separate` and of the TF-Serving client
(`python -m vsep_tf.export.client`; their flags and interruption handling are in `vsep_tf.cli`): inputs named by
path (files, folders of files, track folders), one result per track, a failed track reported without stopping the
others. A `Cancellation` stops it from another thread: the temporary files of the track in progress are removed at
once, the tracks already completed stay.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Callable, NamedTuple, Optional, Sequence, Union

import numpy as np

from vsep_tf import audio
from vsep_tf.separators.base import Separator

AUDIO_EXTENSIONS = (".wav", ".flac")   # what the CLI reads (audio.read_audio reads WAV and FLAC)
FORMATS = ("wav", "flac")
MIXTURE_STEM = "mixture"               # stem-folder layout: <track>/mixture.<ext>
MIN_PROGRESS_STEPS = 8                 # a file of enough chunks reports progress at least this often
ProgressFn = Callable[[int, int], None]


class AudioSeparator:
  """Wraps a `Separator` for audio as users have it. See the module docstring.

  Args:
    separator: any separators.base.Separator.
    chunk_seconds: chunk length in seconds (None or 0: the separator's own `chunk_length`). The cross-fade is
      the separator's `chunk_overlap`, at most half the chunk.
    batch_size: chunks (x channels) per `separate` call, at most: a signal of fewer than
      MIN_PROGRESS_STEPS * batch_size chunks goes in smaller batches (one chunk per call below
      2 * MIN_PROGRESS_STEPS chunks) so that progress moves at least MIN_PROGRESS_STEPS times when it has as many
      chunks; the chunks, hence the work and the result, are the same.
    block_seconds: how much of a file is read at a time (separate_file).
  """

  def __init__(self, separator: Separator, chunk_seconds: Optional[float] = None, batch_size: int = 4,
               block_seconds: float = 30.0):
    self.separator = separator
    if chunk_seconds:
      self.chunk_length = max(2, int(round(float(chunk_seconds) * separator.sample_rate)))
    else:
      self.chunk_length = int(separator.chunk_length)
    self.overlap = min(int(separator.chunk_overlap), self.chunk_length // 2)
    self.batch_size = max(1, int(batch_size))
    self.block_seconds = float(block_seconds)

  @classmethod
  def from_model_dir(cls, model_dir: str, overrides: Sequence[str] = (), sources: Sequence[str] = None,
                     extra_priors: dict = None, **kwargs) -> "AudioSeparator":
    """The separator a `python -m vsep_tf.train` model directory holds (vsep_tf.model_dir.load_separator; sources /
    extra_priors: separate with only those classes' priors, add priors trained on their own)."""
    from vsep_tf.model_dir import load_separator  # pylint: disable=import-outside-toplevel
    return cls(load_separator(model_dir, list(overrides), sources=sources, extra_priors=extra_priors), **kwargs)

  @property
  def source_names(self):
    return tuple(self.separator.source_names)

  @property
  def sample_rate(self) -> int:
    return int(self.separator.sample_rate)

  def num_chunks(self, frames: int) -> int:
    """How many chunks a signal of `frames` samples at the model's rate is cut into (separate_stream's)."""
    return num_chunks(frames, self.chunk_length, self.overlap)

  def stream_batch_size(self, frames: int, channels: int) -> int:
    """The batch_size passed to separate_stream for a signal of `frames` samples (model rate) x `channels`:
    `batch_size`, or fewer chunks per call when the signal has few (see the class docstring)."""
    channels = max(1, int(channels))
    per_call = max(1, self.batch_size // channels)  # chunks per call, as separate_stream counts them
    per_call = min(per_call, max(1, self.num_chunks(frames) // MIN_PROGRESS_STEPS))
    return per_call * channels

  # -------------------------------------------------------------------------------------------- in memory
  def separate(self, waveform, sample_rate: int, downmix: bool = False,
               progress: Optional[ProgressFn] = None) -> dict:
    """Separates one waveform held in memory.

    Args:
      waveform: numpy array or tf.Tensor, [time] (mono) or [time, channels], float, linear amplitude.
      sample_rate: its rate in Hz (any: resampled to the model's rate and back).
      downmix: average the channels first (one separation instead of one per channel).
      progress: called as progress(chunks_done, chunks_total).

    Returns:
      {source name: float32 [time] (mono input or downmix) or [time, channels]}, at `sample_rate`, as long
      as the input.

    Raises:
      audio.AudioError: empty or non-finite waveform. ValueError: bad shape or rate.
    """
    x = _as_samples(waveform)
    rate = audio._check_rate(sample_rate, "sample_rate")  # pylint: disable=protected-access
    mono_out = x.ndim == 1 or downmix
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    if downmix:
      x = x.mean(axis=1, keepdims=True, dtype=np.float32)
    y = audio.resample(x, rate, self.sample_rate)
    batch = self.stream_batch_size(y.shape[0], y.shape[1])
    est = np.concatenate(list(self.separator.separate_stream(
        [y], y.shape[0], self.chunk_length, self.overlap, batch, progress)), axis=1)  # [N, T', C]
    out = {}
    for k, name in enumerate(self.source_names):
      z = audio.resample(est[k], self.sample_rate, rate)[:x.shape[0]]
      out[name] = z[:, 0] if mono_out else z
    return out

  # ------------------------------------------------------------------------------------------------ files
  def output_paths(self, output_dir: str, track: str, fmt: str = "wav") -> dict:
    """{source name: <output_dir>/<track>/<source>.<fmt>}."""
    return {name: os.path.join(output_dir, track, f"{name}.{fmt}") for name in self.source_names}

  def check_file(self, path: str, output_dir: str, track: str, fmt: str = "wav", subtype: str = "PCM_16",
                 overwrite: bool = False):
    """What separate_file checks before any work: (audio.AudioInfo of the input, {source: output path}).
    Raises what separate_file raises for a bad input, format or subtype, or existing outputs."""
    check_input_file(path)
    info = audio.audio_info(path)
    targets = self.output_paths(output_dir, track, fmt)
    for target in targets.values():
      audio.output_format(target, subtype)
    if not overwrite:
      existing = [p for p in targets.values() if os.path.exists(p)]
      if existing:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite to replace")
    return info, targets

  def separate_file(self, path: str, output_dir: str, track: Optional[str] = None, fmt: str = "wav",
                    subtype: str = "PCM_16", overwrite: bool = False, downmix: bool = False,
                    progress: Optional[ProgressFn] = None, cancel: Optional["Cancellation"] = None) -> dict:
    """Separates an audio file into <output_dir>/<track>/<source>.<fmt>, streamed, atomically.

    The sources have the file's rate and length, and its channels (one if downmix). Nothing is written
    under the final names until every source is complete; an existing output makes it fail before any work
    unless overwrite=True. `progress(done, total)` is called per batch of chunks (see the class docstring).
    `cancel`: a Cancellation another thread may trigger (see there). Returns {source name: path}.

    Raises:
      audio.AudioError: missing, empty, unreadable, unsupported or non-finite input (the message names it).
      FileExistsError: outputs exist and overwrite is False.
      ValueError: bad format / subtype.
      Cancelled: `cancel` was triggered (nothing of this track is left).
    """
    path = os.fspath(path)
    cancel = cancel or Cancellation()
    cancel.check()
    track = track or track_name(path)
    info, targets = self.check_file(path, output_dir, track, fmt, subtype, overwrite)
    channels = 1 if downmix else info.channels
    model_total = audio.resampled_length(info.frames, info.rate, self.sample_rate)
    batch = self.stream_batch_size(model_total, channels)
    block = max(1, int(self.block_seconds * info.rate))
    created, writers = [], {}
    try:
      with contextlib.ExitStack() as stack:
        with cancel.files():  # a cancel() sees every file and folder this makes
          created = _makedirs(os.path.join(output_dir, track))
          cancel.watch(dirs=created)
          for name, target in targets.items():
            writers[name] = stack.enter_context(audio.AudioFileWriter(target, info.rate, channels, subtype))
            cancel.watch(temps=[writers[name].tmp])
        backs = {name: audio.StreamResampler(self.sample_rate, info.rate) for name in self.source_names}
        written = 0

        def emit(name, z):
          room = info.frames - writers[name].frames
          if room > 0 and z.shape[0]:
            writers[name].write(z[:room])

        def step(done, total):
          cancel.check()
          if progress is not None:
            progress(done, total)

        blocks = (b.reshape(-1, 1) if b.ndim == 1 else b
                  for b in audio.iter_audio_blocks(path, block, sample_rate=self.sample_rate, mono=downmix))
        for est in self.separator.separate_stream(blocks, model_total, self.chunk_length, self.overlap, batch,
                                                  step):
          cancel.check()
          if not np.isfinite(est).all():
            raise FloatingPointError(f"{path}: the separator produced non-finite samples (NaN/Inf)")
          for k, name in enumerate(self.source_names):
            emit(name, backs[name].push(est[k]))
          written += est.shape[1]
        for name in self.source_names:
          emit(name, backs[name].flush())
        short = [name for name, w in writers.items() if w.frames != info.frames]
        if short or written != model_total:
          raise RuntimeError(f"{path}: internal error, wrote {[writers[n].frames for n in writers]} frames "
                             f"of {info.frames}")
        with cancel.files():  # all sources renamed into place, or (cancelled first) none
          audio.commit_together(writers.values(), overwrite=overwrite)
          cancel.forget(temps=[w.tmp for w in writers.values()], dirs=created)
    except BaseException:
      for directory in created:  # the folders this call made, deepest first, if nothing else is in them
        with contextlib.suppress(OSError):
          os.rmdir(directory)
      raise
    finally:
      cancel.forget(temps=[w.tmp for w in writers.values()], dirs=created)
    return targets


class Cancelled(BaseException):
  """Raised in the separating thread by a triggered Cancellation (a BaseException, like KeyboardInterrupt: it is
  not one of the per-track errors that separate_files reports and goes on from)."""


class Cancellation:
  """Stops file separation (separate_file, separate_files) from another thread, leaving no partial output.

  `cancel()` may be called from any thread, including a signal handler of the main thread while the work runs in
  a worker: it removes at once the temporary files of the track in progress and the folders made for it (if
  empty), and the work raises Cancelled at its next check (the next batch of chunks: a model call in flight is
  not interrupted). Files are created, and a track's sources renamed into place, under a lock that cancel()
  takes too, so every track is either complete or absent and cancel() never misses a file: a caller may end the
  process right after it returns (os._exit) without waiting for the worker.
  """

  def __init__(self):
    self._lock = threading.RLock()  # re-entered by watch / forget inside files()
    self._temps, self._dirs = [], []
    self.cancelled = False

  def check(self) -> None:
    """Raises Cancelled if cancel() was called."""
    if self.cancelled:
      raise Cancelled()

  @contextlib.contextmanager
  def files(self):
    """Holds the lock while files are created or renamed; raises Cancelled (nothing done) if cancelled."""
    with self._lock:
      self.check()
      yield

  def watch(self, temps: Sequence[str] = (), dirs: Sequence[str] = ()) -> None:
    """Files and folders (deepest first) that cancel() removes. Call inside files(), right after making them."""
    with self._lock:
      self._temps.extend(temps)
      self._dirs.extend(dirs)

  def forget(self, temps: Sequence[str] = (), dirs: Sequence[str] = ()) -> None:
    """No longer removed by cancel() (renamed into place, or removed by their owner)."""
    with self._lock:
      self._temps = [p for p in self._temps if p not in temps]
      self._dirs = [d for d in self._dirs if d not in dirs]

  def cancel(self, timeout: float = 5.0) -> list:
    """Stops the work: removes the temporary files (and the then empty folders) of the track in progress.

    Waits at most `timeout` seconds for a rename into place in progress (milliseconds) to finish. Returns the
    removed paths. Idempotent.
    """
    locked = self._lock.acquire(timeout=timeout)
    try:
      self.cancelled = True
      removed = []
      for p in list(self._temps):
        with contextlib.suppress(OSError):
          os.unlink(p)
          removed.append(p)
      for d in list(self._dirs):  # deepest first
        with contextlib.suppress(OSError):
          os.rmdir(d)
          removed.append(d)
      self._temps, self._dirs = [], []
      return removed
    finally:
      if locked:
        self._lock.release()


# ------------------------------------------------------------------------------------------------ file loop
class TrackResult(NamedTuple):
  """One input of separate_files: its outputs ({source: path}) or the error (one line naming the file)."""
  path: str
  track: str
  outputs: Optional[dict] = None
  error: Optional[str] = None
  seconds: float = 0.0  # of audio
  elapsed: float = 0.0  # of processing

  @property
  def ok(self) -> bool:
    return self.error is None


class Listener:
  """What separate_files reports while it runs (every method optional: this class does nothing)."""

  def start(self, path: str, track: str, seconds: float, chunks: int) -> None:
    """A track starts: its input was checked, it has `seconds` of audio, cut into `chunks` chunks."""

  def progress(self, done: int, total: int) -> None:
    """Chunks of the current track separated so far."""

  def done(self, result: TrackResult) -> None:
    """A track ended, separated or failed."""


TRACK_ERRORS = (audio.AudioError, FileExistsError, FloatingPointError, ValueError, OSError)


def separate_files(separator: Union[Separator, AudioSeparator], *, inputs: Union[str, Sequence[str]],
                   output_dir: str, fmt: str = "wav", subtype: str = "PCM_16", overwrite: bool = False,
                   downmix: bool = False, chunk_seconds: Optional[float] = None, batch_size: int = 4,
                   errors: tuple = (), listener=None, cancel: Optional[Cancellation] = None) -> list:
  """Separates every input into <output_dir>/<track>/<source>.<fmt> (AudioSeparator.separate_file each).

  Args:
    separator: a Separator (wrapped with chunk_seconds and batch_size) or an AudioSeparator (used as it is).
    inputs: a path or a list of paths: audio files, folders of them, track folders (<track>/mixture.{wav,flac},
      separated as one track named after the folder) and folders of track folders (find_inputs).
    output_dir, fmt, subtype, overwrite, downmix: as in AudioSeparator.separate_file.
    chunk_seconds, batch_size: as in AudioSeparator.
    errors: more exception types that fail one track only (e.g. grpc.RpcError for a remote model), besides
      TRACK_ERRORS (bad input, existing outputs, non-finite estimates, I/O errors).
    listener: an object with the methods of Listener (start / progress / done), called from this thread.
    cancel: a Cancellation (see there); when triggered this raises Cancelled.

  Returns:
    [TrackResult], one per input track in order. A failed track leaves no output; the others still run.

  Raises:
    audio.AudioError: an input folder holds no audio (nothing was done).
    Cancelled: `cancel` was triggered.
  """
  if isinstance(separator, AudioSeparator):
    sep = separator
  else:
    sep = AudioSeparator(separator, chunk_seconds=chunk_seconds or None, batch_size=batch_size)
  listener = listener or Listener()
  cancel = cancel or Cancellation()
  paths = []
  for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs):
    found = find_inputs(os.fspath(item))
    if not found:
      raise audio.AudioError(os.fspath(item), "no audio files found (WAV/FLAC files, or track folders with a "
                             f"{MIXTURE_STEM}.wav or {MIXTURE_STEM}.flac)")
    paths += found
  results, seen = [], {}
  for path in paths:
    cancel.check()
    track = track_name(path)
    t0 = time.perf_counter()
    seconds = 0.0
    try:
      if track in seen:
        raise ValueError(f"{path}: same track name {track!r} as {seen[track]}; separate it on its own")
      seen[track] = path
      info, _ = sep.check_file(path, output_dir, track, fmt, subtype, overwrite)
      seconds = info.seconds
      listener.start(path, track, seconds, sep.num_chunks(audio.resampled_length(info.frames, info.rate,
                                                                                 sep.sample_rate)))
      outputs = sep.separate_file(path, output_dir, track=track, fmt=fmt, subtype=subtype, overwrite=overwrite,
                                  downmix=downmix, progress=listener.progress, cancel=cancel)
      result = TrackResult(path, track, outputs=outputs, seconds=seconds, elapsed=time.perf_counter() - t0)
    except (*TRACK_ERRORS, *errors) as e:
      message = str(e) if path in str(e) else f"{path}: {e}"
      result = TrackResult(path, track, error=message, seconds=seconds, elapsed=time.perf_counter() - t0)
    results.append(result)
    listener.done(result)
  return results


# -------------------------------------------------------------------------------------------------- helpers
def _as_samples(waveform) -> np.ndarray:
  if hasattr(waveform, "numpy"):  # tf.Tensor
    waveform = waveform.numpy()
  x = np.asarray(waveform)
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f"waveform must be numeric, got dtype {x.dtype}")
  if x.ndim not in (1, 2):
    raise ValueError(f"waveform must be [time] or [time, channels], got shape {x.shape}")
  if x.ndim == 2 and x.shape[1] > audio._MAX_CHANNELS >= x.shape[0]:  # pylint: disable=protected-access
    raise ValueError(f"waveform of shape {x.shape}: expected [time, channels] (was [channels, time] passed? "
                     f"transpose it)")
  if x.size == 0:
    raise audio.AudioError(None, "empty waveform (0 samples)")
  x = x.astype(np.float32)
  if not np.isfinite(x).all():
    raise audio.AudioError(None, f"waveform has {int(np.sum(~np.isfinite(x)))} non-finite samples (NaN/Inf)")
  return x


def check_input_file(path: str) -> None:
  """AudioError unless `path` is an existing, non-empty file with a supported extension."""
  if not os.path.exists(path):
    raise audio.AudioError(path, "no such file")
  ext = os.path.splitext(path)[1].lower()
  if ext not in AUDIO_EXTENSIONS:
    raise audio.AudioError(path, f"unsupported format {ext or '(no extension)'!r}: vsep-tf reads "
                           f"{' and '.join(e[1:].upper() for e in AUDIO_EXTENSIONS)} files "
                           f"(convert first, e.g. ffmpeg -i {os.path.basename(path)} input.wav)")


def track_name(path: str) -> str:
  """'dir/song.flac' -> 'song'; stem-folder layout 'dir/<track>/mixture.wav' -> '<track>'."""
  stem = os.path.splitext(os.path.basename(path))[0]
  if stem == MIXTURE_STEM:
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return parent or stem
  return stem


def track_mixtures(directory: str) -> list:
  """The <directory>/mixture.{wav,flac} that exist: a track folder's input (stem-folder / MUSDB18-HQ layout
  <track>/{mixture,vocals,...}.wav)."""
  return [os.path.join(directory, MIXTURE_STEM + ext) for ext in AUDIO_EXTENSIONS
          if os.path.isfile(os.path.join(directory, MIXTURE_STEM + ext))]


def find_inputs(path: str) -> list:
  """The files to separate, sorted:

    * a file: itself;
    * a track folder (one with a mixture.wav or mixture.flac): that mixture, one track named after the folder (its
      other files are the stems, not inputs);
    * any other folder: its files (any extension: unsupported ones are reported, not skipped) and the mixture of
      each of its track folders. Hidden files and folders are skipped.
  """
  if not os.path.isdir(path):
    return [path]
  mixtures = track_mixtures(path)
  if mixtures:
    return mixtures
  found = []
  for entry in sorted(os.listdir(path)):
    full = os.path.join(path, entry)
    if entry.startswith("."):
      continue
    if os.path.isfile(full):
      found.append(full)
    elif os.path.isdir(full):
      found += track_mixtures(full)
  return found


def num_chunks(frames: int, chunk_length: int, overlap: int) -> int:
  """How many chunks Separator.separate_stream / separate_long cut `frames` samples into (1 if they fit one)."""
  frames, chunk = int(frames), int(chunk_length)
  if frames <= chunk:
    return 1
  hop = max(1, chunk - int(overlap))
  return len(range(0, frames - chunk + hop, hop))


def _makedirs(directory: str) -> list:
  """Creates `directory` and missing parents; returns the ones created, deepest first."""
  created, d = [], os.path.abspath(directory)
  while not os.path.isdir(d):
    created.append(d)
    parent = os.path.dirname(d)
    if parent == d:
      break
    d = parent
  os.makedirs(directory, exist_ok=True)
  return created
