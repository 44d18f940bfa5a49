"""Separation for users: waveforms at any sample rate and channel count, and whole files, streamed.

    from vsep_tf import inference
    sep = inference.AudioSeparator.from_model_dir("runs/toy_supervised")
    sources = sep.separate(waveform, sample_rate)      # {source name: [time] or [time, channels]}, same rate
    paths = sep.separate_file("song.flac", "out")      # out/song/<source>.wav, written atomically

Any `separators.base.Separator` works (a trained model directory through `separators.load_separator`, an exported
SavedModel or TFLite file through `vsep_tf.export`, a TF-Serving endpoint through `vsep_tf.export.client`):

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

`define_cli_flags` / `run_cli` are the file loop shared by `python -m vsep_tf.separate` and the TF-Serving client
(`python -m vsep_tf.export.client`).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable, Optional, Sequence

import numpy as np

from vsep_tf import audio
from vsep_tf.separators.base import Separator

AUDIO_EXTENSIONS = (".wav", ".flac")   # what the CLI reads (audio.read_audio reads WAV and FLAC)
FORMATS = ("wav", "flac")
MIXTURE_STEM = "mixture"               # stem-folder layout: <track>/mixture.<ext>
ProgressFn = Callable[[int, int], None]


class AudioSeparator:
  """Wraps a `Separator` for audio as users have it. See the module docstring.

  Args:
    separator: any separators.base.Separator.
    chunk_seconds: chunk length in seconds (None or 0: the separator's own `chunk_length`). The cross-fade is
      the separator's `chunk_overlap`, at most half the chunk.
    batch_size: chunks (x channels) per `separate` call.
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
  def from_model_dir(cls, model_dir: str, overrides: Sequence[str] = (), **kwargs) -> "AudioSeparator":
    """The separator a `python -m vsep_tf.train` model directory holds (separators.load_separator)."""
    from vsep_tf.separators import load_separator  # pylint: disable=import-outside-toplevel
    return cls(load_separator(model_dir, list(overrides)), **kwargs)

  @property
  def source_names(self):
    return tuple(self.separator.source_names)

  @property
  def sample_rate(self) -> int:
    return int(self.separator.sample_rate)

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
    est = np.concatenate(list(self.separator.separate_stream(
        [y], y.shape[0], self.chunk_length, self.overlap, self.batch_size, progress)), axis=1)  # [N, T', C]
    out = {}
    for k, name in enumerate(self.source_names):
      z = audio.resample(est[k], self.sample_rate, rate)[:x.shape[0]]
      out[name] = z[:, 0] if mono_out else z
    return out

  # ------------------------------------------------------------------------------------------------ files
  def output_paths(self, output_dir: str, track: str, fmt: str = "wav") -> dict:
    """{source name: <output_dir>/<track>/<source>.<fmt>}."""
    return {name: os.path.join(output_dir, track, f"{name}.{fmt}") for name in self.source_names}

  def separate_file(self, path: str, output_dir: str, track: Optional[str] = None, fmt: str = "wav",
                    subtype: str = "PCM_16", overwrite: bool = False, downmix: bool = False,
                    progress: Optional[ProgressFn] = None) -> dict:
    """Separates an audio file into <output_dir>/<track>/<source>.<fmt>, streamed, atomically.

    The sources have the file's rate and length, and its channels (one if downmix). Nothing is written
    under the final names until every source is complete; an existing output makes it fail before any work
    unless overwrite=True. Returns {source name: path}.

    Raises:
      audio.AudioError: missing, empty, unreadable, unsupported or non-finite input (the message names it).
      FileExistsError: outputs exist and overwrite is False.
      ValueError: bad format / subtype.
    """
    path = os.fspath(path)
    check_input_file(path)
    info = audio.audio_info(path)
    track = track or track_name(path)
    targets = self.output_paths(output_dir, track, fmt)
    for target in targets.values():
      audio.output_format(target, subtype)  # bad format / subtype: before any work
    if not overwrite:
      existing = [p for p in targets.values() if os.path.exists(p)]
      if existing:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite to replace")
    channels = 1 if downmix else info.channels
    model_total = audio.resampled_length(info.frames, info.rate, self.sample_rate)
    block = max(1, int(self.block_seconds * info.rate))
    track_dir = os.path.join(output_dir, track)
    created = _makedirs(track_dir)
    try:
      with contextlib.ExitStack() as stack:
        writers = {}
        for name, target in targets.items():
          writers[name] = stack.enter_context(audio.AudioFileWriter(target, info.rate, channels, subtype))
        backs = {name: audio.StreamResampler(self.sample_rate, info.rate) for name in self.source_names}
        written = 0

        def emit(name, z):
          room = info.frames - writers[name].frames
          if room > 0 and z.shape[0]:
            writers[name].write(z[:room])

        blocks = (b.reshape(-1, 1) if b.ndim == 1 else b
                  for b in audio.iter_audio_blocks(path, block, sample_rate=self.sample_rate, mono=downmix))
        for est in self.separator.separate_stream(blocks, model_total, self.chunk_length, self.overlap,
                                                  self.batch_size, progress):
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
        audio.commit_together(writers.values(), overwrite=overwrite)
    except BaseException:
      for directory in created:  # the folders this call made, deepest first, if nothing else is in them
        with contextlib.suppress(OSError):
          os.rmdir(directory)
      raise
    return targets


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


def find_inputs(path: str) -> list:
  """The files to separate: `path` itself, or in a directory its files (any extension: unsupported ones are
  reported, not skipped) and the <track>/mixture.{wav,flac} of its sub-directories (stem-folder layout).
  Hidden files are skipped. Sorted."""
  if not os.path.isdir(path):
    return [path]
  found = []
  for entry in sorted(os.listdir(path)):
    full = os.path.join(path, entry)
    if entry.startswith("."):
      continue
    if os.path.isfile(full):
      found.append(full)
    elif os.path.isdir(full):
      found += [os.path.join(full, MIXTURE_STEM + ext) for ext in AUDIO_EXTENSIONS
                if os.path.isfile(os.path.join(full, MIXTURE_STEM + ext))]
  return found


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


class ProgressBar:
  """progress(done, total) callback drawing a one-line bar on stderr, with the real-time factor so far
  (processing time / audio time: < 1 is faster than real time)."""

  def __init__(self, label: str, seconds: float, stream=None, width: int = 30):
    self.label, self.seconds, self.width = label, float(seconds), width
    self.stream = stream or sys.stderr
    self.t0 = time.perf_counter()

  def __call__(self, done: int, total: int) -> None:
    frac = done / max(total, 1)
    elapsed = time.perf_counter() - self.t0
    rtf = elapsed / (frac * self.seconds) if frac > 0 and self.seconds > 0 else 0.0
    filled = int(round(frac * self.width))
    bar = "=" * filled + "." * (self.width - filled)
    end = "\n" if done >= total else ""
    self.stream.write(f"\r{self.label} [{bar}] {done}/{total} chunks, real-time factor {rtf:.3f}{end}")
    self.stream.flush()


# ---------------------------------------------------------------------------------------------------- CLI
def define_cli_flags(fv) -> None:
  """The input / output flags shared by `python -m vsep_tf.separate` and `python -m vsep_tf.export.client`."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("input", None, "An audio file (WAV/FLAC), or a directory: its audio files and the "
                      "<track>/mixture.{wav,flac} of its sub-directories.", flag_values=fv)
  flags.DEFINE_string("output_dir", None, "Sources go to <output_dir>/<track>/<source>.<format>.", flag_values=fv)
  flags.DEFINE_enum("format", "wav", list(FORMATS), "Output file format.", flag_values=fv)
  flags.DEFINE_enum("subtype", "PCM_16", list(audio.SUBTYPES), "Output sample type (FLOAT: WAV only).",
                    flag_values=fv)
  flags.DEFINE_boolean("overwrite", False, "Replace existing outputs (otherwise a track whose outputs exist "
                       "fails, untouched).", flag_values=fv)
  flags.DEFINE_float("chunk_seconds", 0.0, "Chunk length in seconds (0: the model's own). Memory grows with "
                     "it, not with the file's length.", flag_values=fv)
  flags.DEFINE_boolean("downmix", False, "Average the channels before separating (mono sources) instead of "
                       "separating every channel.", flag_values=fv)
  flags.DEFINE_integer("batch_size", 4, "Chunks per model call.", flag_values=fv)
  flags.DEFINE_boolean("progress", True, "Progress bar on stderr.", flag_values=fv)


def check_cli_flags(fv) -> Optional[str]:
  """A usage problem of the shared flags, or None."""
  if not fv.input:
    return "--input is required"
  if not fv.output_dir:
    return "--output_dir is required"
  if not os.path.exists(fv.input):
    return f"--input={fv.input}: no such file or directory"
  if fv.format == "flac" and fv.subtype == "FLOAT":
    return "--format=flac stores integer samples: use --subtype=PCM_16 or PCM_24 (or --format=wav)"
  if fv.chunk_seconds < 0:
    return f"--chunk_seconds must be >= 0, got {fv.chunk_seconds}"
  return None


def run_cli(separator: Separator, fv, out=None, extra_errors: tuple = ()) -> int:
  """Separates every input named by the flags. Returns the exit code: 0 if all tracks succeeded, else 1.

  A failed track is reported on stderr (file and problem) and leaves no output; the others still run.
  `extra_errors`: more exception types that fail one track only (e.g. grpc.RpcError for a remote model).
  """
  out = out or sys.stdout
  sep = AudioSeparator(separator, chunk_seconds=fv.chunk_seconds or None, batch_size=fv.batch_size)
  inputs = find_inputs(fv.input)
  if not inputs:
    print(f"error: {fv.input}: no audio files found", file=sys.stderr)
    return 1
  failures, seen = [], {}
  for path in inputs:
    track = track_name(path)
    if track in seen:
      failures.append((path, f"{path}: same track name {track!r} as {seen[track]}; separate it on its own"))
      print(f"error: {failures[-1][1]}", file=sys.stderr)
      continue
    seen[track] = path
    t0 = time.perf_counter()
    try:
      check_input_file(path)
      seconds = audio.audio_info(path).seconds
      bar = ProgressBar(track, seconds) if fv.progress else None
      sep.separate_file(path, fv.output_dir, track=track, fmt=fv.format, subtype=fv.subtype,
                        overwrite=fv.overwrite, downmix=fv.downmix, progress=bar)
    except (audio.AudioError, FileExistsError, FloatingPointError, ValueError, OSError, *extra_errors) as e:
      message = str(e) if path in str(e) else f"{path}: {e}"
      failures.append((path, message))
      print(f"error: {message}", file=sys.stderr)
      continue
    dt = time.perf_counter() - t0
    names = ",".join(sep.source_names)
    print(f"{path}: {seconds:.1f} s of audio in {dt:.1f} s (real-time factor {dt / max(seconds, 1e-9):.3f}) -> "
          f"{os.path.join(fv.output_dir, track)}/{{{names}}}.{fv.format}", file=out, flush=True)
  if failures:
    print(f"{len(failures)} of {len(inputs)} input(s) failed, no output written for them:", file=sys.stderr)
    for _, message in failures:
      print(f"  {message}", file=sys.stderr)
    return 1
  return 0
