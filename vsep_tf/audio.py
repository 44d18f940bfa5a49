"""Audio file I/O: WAV/FLAC reading and writing, resampling, channel policy, input validation.

Samples are float32 in [-1, 1] (linear amplitude), time on axis 0:

  mono:         [time]
  multichannel: [time, channels]

Two ways in:

* `read_audio` / `write_audio` / `resample` (numpy; soundfile + scipy). Every problem with a file raises
  `AudioError` naming the file.
* `decode_audio_tf` / `resample_tf` for `tf.data` graphs. They use tensorflow-io's in-graph ops when
  `tfio_available()` says so (one cached probe that imports tensorflow_io and runs a real op), else they
  wrap the numpy functions in `tf.numpy_function`. `io_backend()` names the backend in use.

Parity of the two backends (tested in the tensorflow-io CI lane):

* decoding 16/24-bit integer and float WAV/FLAC: bit-identical samples (both scale by a power of two);
* resampling: tensorflow-io uses the speex resampler (its fixed quality 4), the fallback scipy's polyphase
  filter with the low-pass designed here (Kaiser, beta 8: pass band to 0.84, >= 80 dB down from 1.0 of the
  lower Nyquist frequency); both reject what would alias by about 80-90 dB. The latency of speex is
  compensated here, so both are aligned and have the same length ceil(time * new_rate / orig_rate). For
  content below 0.7 of the lower Nyquist frequency that starts and ends smoothly they agree within
  RESAMPLE_PARITY_ATOL = 1e-4 (absolute, full scale 1.0; measured <= 3e-5). In the transition band and at
  hard onsets (broadband content) the two filters differ by design (up to about 1e-2).

tensorflow-io 0.37 misreads 32-bit INTEGER PCM WAV files as float: use backend='soundfile' for those
(write_audio never writes them).

Errors raised inside a graph surface as `tf.errors.OpError`s: InvalidArgumentError naming the file for
every check of ours (both backends); with tensorflow-io, its own NotFoundError (missing file, named),
InvalidArgumentError (not audio, named) or OutOfRangeError (empty or truncated file, NOT named).
"""
from __future__ import annotations

import functools
import math
import os
import tempfile
from typing import NamedTuple

from absl import logging
import numpy as np
from scipy import signal as sps
import soundfile as sf
import tensorflow as tf

SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")
_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
_MAX_CHANNELS = 64  # more than this in axis 1 almost surely means [channels, time] was passed
BACKENDS = ("tensorflow-io", "soundfile")
RESAMPLE_PARITY_ATOL = 1e-4


class AudioError(ValueError):
  """A file that cannot be used as audio. The message names the file and the problem."""

  def __init__(self, path, problem: str):
    self.path = os.fspath(path) if path is not None else None
    self.problem = problem
    super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class AudioInfo(NamedTuple):
  """Header facts of an audio file: (frames, rate, channels)."""
  frames: int
  rate: int
  channels: int

  @property
  def seconds(self) -> float:
    return self.frames / self.rate


# ---------------------------------------------------------------------------------------------------------
# numpy / soundfile path
# ---------------------------------------------------------------------------------------------------------

def _check_exists(path: str) -> None:
  if not os.path.exists(path):
    raise AudioError(path, "no such file")
  if os.path.isdir(path):
    raise AudioError(path, "is a directory, not an audio file")
  if os.path.getsize(path) == 0:
    raise AudioError(path, "empty file (0 bytes)")


def audio_info(path) -> AudioInfo:
  """(frames, rate, channels) from the file's header, without reading the samples.

  Raises AudioError if the file is missing, empty, not audio, or has 0 frames.
  """
  path = os.fspath(path)
  _check_exists(path)
  try:
    info = sf.info(path)
  except (sf.SoundFileError, RuntimeError, OSError) as e:
    raise AudioError(path, f"not a readable audio file ({e})") from e
  if info.frames <= 0:
    raise AudioError(path, "contains no audio frames")
  if info.samplerate <= 0 or info.channels <= 0:
    raise AudioError(path, f"bad header: rate {info.samplerate}, channels {info.channels}")
  return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def _check_rate(rate, name: str) -> int:
  if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
    raise ValueError(f"{name} must be a positive integer (Hz), got {rate!r}")
  return int(rate)


def _reduced_ratio(orig_rate: int, new_rate: int):
  g = math.gcd(orig_rate, new_rate)
  return new_rate // g, orig_rate // g


# Anti-aliasing low-pass of `resample`: Kaiser-windowed sinc, beta 8 (about 80 dB stop-band attenuation),
# 2 * 32 * max(up, down) + 1 taps, i.e. a transition band of about 0.16 of the lower Nyquist frequency,
# placed just below it: pass band to 0.84 of the lower Nyquist, stop band (>= 80 dB down) from it on.
_KAISER_BETA = 8.0
_TRANSITION = 0.16
# Each output sample of `resample` depends on the input within +-RESAMPLE_HALF_WIDTH samples of the slower of
# the two rates (readers of excerpts pad by at least this much to match whole-file resampling).
RESAMPLE_HALF_WIDTH = 32


@functools.lru_cache(maxsize=32)
def _lowpass(up: int, down: int) -> np.ndarray:
  max_rate = max(up, down)
  half_len = RESAMPLE_HALF_WIDTH * max_rate
  cutoff = (1.0 - _TRANSITION / 2) / max_rate  # relative to the Nyquist frequency of the upsampled rate
  h = sps.firwin(2 * half_len + 1, cutoff, window=("kaiser", _KAISER_BETA))
  h.setflags(write=False)
  return h


def resample(x, orig_rate: int, new_rate: int) -> np.ndarray:
  """Band-limited resampling along axis 0 (time): [time, ...] -> [ceil(time * new / orig), ...] float32.

  Polyphase FIR (scipy.signal.resample_poly) with the reduced ratio up/down = new/orig: upsample by `up`,
  low-pass, downsample by `down`. The low-pass (Kaiser-windowed sinc, beta 8) passes up to 0.84 and
  attenuates by >= 80 dB from 1.0 of the lower Nyquist frequency min(orig, new) / 2 on, so nothing above
  the new Nyquist aliases. Linear phase, delay compensated; the signal is taken as zero outside [0, time).
  Each output sample depends on the input within +-RESAMPLE_HALF_WIDTH samples of the slower rate.
  """
  orig_rate = _check_rate(orig_rate, "orig_rate")
  new_rate = _check_rate(new_rate, "new_rate")
  x = np.asarray(x, dtype=np.float32)
  if orig_rate == new_rate:
    return x
  up, down = _reduced_ratio(orig_rate, new_rate)
  h = np.array(_lowpass(up, down))  # resample_poly scales its window in place
  return sps.resample_poly(x, up, down, axis=0, window=h).astype(np.float32, copy=False)


def read_audio(path, sample_rate=None, mono=True, max_seconds=None, start=0, frames=-1):
  """Reads a WAV or FLAC file (16/24-bit integer or float samples; any format libsndfile reads).

  Args:
    path: file path.
    sample_rate: if given and different from the file's rate, the audio is resampled to it (`resample`).
    mono: True -> [time] (the mean over channels); False -> [time, channels].
    max_seconds: refuse files whose duration (from the header, checked before reading) exceeds this.
      It bounds the FILE's duration, whatever excerpt is asked for.
    start, frames: read only frames [start, start + frames) in the FILE's rate (soundfile seeks: the
      rest is not read); frames=-1 reads to the end. An excerpt running past the end is truncated.
      When resampling an excerpt, the signal is taken as zero outside it.

  Returns:
    (samples float32 [time] or [time, channels], rate int).

  Raises:
    AudioError: missing, empty, not audio or unreadable file, 0 frames, non-finite samples (NaN/Inf),
      longer than max_seconds, start past the end.
    ValueError: bad arguments.
  """
  path = os.fspath(path)
  if sample_rate is not None:
    sample_rate = _check_rate(sample_rate, "sample_rate")
  start, frames = int(start), int(frames)
  if start < 0:
    raise ValueError(f"start must be >= 0, got {start}")
  if frames == 0 or frames < -1:
    raise ValueError(f"frames must be -1 (to the end) or positive, got {frames}")
  info = audio_info(path)
  if max_seconds is not None and info.frames > max_seconds * info.rate:
    raise AudioError(path, f"{info.seconds:.2f} s long, more than max_seconds={max_seconds}")
  if start >= info.frames:
    raise AudioError(path, f"start={start} is past the end ({info.frames} frames)")
  try:
    x, rate = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
  except (sf.SoundFileError, RuntimeError, OSError) as e:
    raise AudioError(path, f"unreadable audio data ({e})") from e
  if x.shape[0] == 0:
    raise AudioError(path, "no audio frames could be read")
  finite = np.isfinite(x)
  if not finite.all():
    bad = np.argwhere(~finite)
    raise AudioError(
        path, f"{len(bad)} non-finite samples (NaN/Inf), the first at frame {start + int(bad[0, 0])}")
  if mono:
    x = x.mean(axis=1, dtype=np.float32)
  if sample_rate is not None and sample_rate != rate:
    x = resample(x, rate, sample_rate)
    rate = sample_rate
  return x, int(rate)


def write_audio(path, samples, sample_rate, subtype="PCM_16", overwrite=False) -> None:
  """Writes [time] or [time, channels] samples to a .wav or .flac file, atomically.

  The audio goes to a temporary file in the same directory, is flushed to disk, then moved into place
  (os.replace when overwriting; a hard link, which fails if the name exists, otherwise). A failure leaves
  no partial file and no temporary file, and an existing file is never clobbered unless overwrite=True.

  Args:
    path: destination; the format comes from the extension (.wav or .flac).
    samples: float array [time] or [time, channels], linear amplitude.
    sample_rate: Hz.
    subtype: 'PCM_16', 'PCM_24' or 'FLOAT' (WAV only). Integer subtypes clip |x| > 1 (with a warning).
    overwrite: replace an existing file.

  Raises:
    FileExistsError: path exists and overwrite is False.
    AudioError: non-finite or empty samples; the format cannot hold them (e.g. FLAC: > 8 channels).
    ValueError: unsupported extension, subtype or shape.
  """
  path = os.fspath(path)
  fmt = output_format(path, subtype)
  sample_rate = _check_rate(sample_rate, "sample_rate")
  x = np.asarray(samples)
  if x.ndim not in (1, 2):
    raise ValueError(f"samples must be [time] or [time, channels], got shape {x.shape}")
  if x.ndim == 2 and x.shape[1] > _MAX_CHANNELS:
    raise ValueError(f"samples of shape {x.shape} have {x.shape[1]} channels: expected [time, channels]"
                     f" (was [channels, time] passed?)")
  if x.size == 0:
    raise AudioError(path, "refusing to write empty audio (0 samples)")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"samples must be floating point in [-1, 1], got dtype {x.dtype}")
  x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
  if not np.isfinite(x).all():
    raise AudioError(path, f"refusing to write {int(np.sum(~np.isfinite(x)))} non-finite samples (NaN/Inf)")
  if subtype != "FLOAT":
    peak = float(np.max(np.abs(x)))
    if peak > 1.0:
      logging.warning("write_audio(%s): clipping %d samples to [-1, 1] (peak %.3f) for %s",
                      path, int(np.sum(np.abs(x) > 1.0)), peak, subtype)
      x = np.clip(x, -1.0, 1.0)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")

  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      try:
        sf.write(f, x, sample_rate, subtype=subtype, format=fmt)
      except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(path, f"cannot write {x.shape[-1] if x.ndim == 2 else 1} channel(s) at "
                         f"{sample_rate} Hz as {fmt} {subtype} ({e})") from e
      f.flush()
      os.fsync(f.fileno())
    _move_into_place(tmp, path, overwrite)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def output_format(path, subtype) -> str:
  """The soundfile format ('WAV' or 'FLAC') for writing `path` with `subtype`; ValueError if unsupported."""
  path = os.fspath(path)
  ext = os.path.splitext(path)[1].lower()
  if ext not in _FORMATS:
    raise ValueError(f"{path}: unsupported extension {ext!r}; use one of {sorted(_FORMATS)}")
  fmt = _FORMATS[ext]
  if subtype not in SUBTYPES:
    raise ValueError(f"subtype must be one of {SUBTYPES}, got {subtype!r}")
  if fmt == "FLAC" and subtype == "FLOAT":
    raise ValueError(f"{path}: FLAC stores integer samples only; use PCM_16 or PCM_24 (or a .wav file)")
  return fmt


def _move_into_place(tmp: str, path: str, overwrite: bool) -> None:
  """Moves the finished temporary file `tmp` to `path` (same directory), atomically.

  overwrite: os.replace. Otherwise a hard link, which fails if `path` exists (never clobbers, even if the file
  appeared meanwhile); on file systems without hard links, check-then-rename. `tmp` is left for the caller
  to remove if it still exists.
  """
  # mkstemp makes 0600 files: keep the mode of the file we replace, else the usual 0644.
  mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
  os.chmod(tmp, mode)
  if overwrite:
    os.replace(tmp, path)
    return
  try:
    os.link(tmp, path)  # atomic and never clobbers: fails if path appeared meanwhile
  except FileExistsError:
    raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
  except OSError:  # no hard links on this file system: check-then-rename
    if os.path.exists(path):
      raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------
# Streaming: long files in blocks (memory independent of the file's length)
# ---------------------------------------------------------------------------------------------------------

def resampled_length(frames: int, orig_rate: int, new_rate: int) -> int:
  """Samples `resample` returns for `frames` input samples: ceil(frames * new_rate / orig_rate)."""
  up, down = _reduced_ratio(_check_rate(orig_rate, "orig_rate"), _check_rate(new_rate, "new_rate"))
  return -(-int(frames) * up // down)


class StreamResampler:
  """`resample` for a signal that arrives in blocks along axis 0 ([n, ...], the same trailing shape each time).

  push(block) returns the output samples that no later input can change, flush() the rest once the input has
  ended. The concatenated outputs equal resample(whole signal) (same filter, same zero padding at both ends;
  equal to float32 rounding), while only about block + 2 * RESAMPLE_HALF_WIDTH * max(up, down) / up input
  samples are held. Equal rates pass blocks through unchanged.
  """

  def __init__(self, orig_rate: int, new_rate: int):
    self.orig_rate = _check_rate(orig_rate, "orig_rate")
    self.new_rate = _check_rate(new_rate, "new_rate")
    self._up, self._down = _reduced_ratio(self.orig_rate, self.new_rate)
    # Output j sits at input position j * down / up and reads the input within +-half of it.
    self._half = -(-RESAMPLE_HALF_WIDTH * max(self._up, self._down) // self._up) + 1
    self._buf = None        # input samples [buf_start, in_end)
    self._buf_start = 0     # a multiple of `down`, so buf_start * up / down is an output index
    self._in_end = 0
    self._out_next = 0
    self._flushed = False
    self._tail = ()         # trailing shape of the blocks

  def push(self, block) -> np.ndarray:
    if self._flushed:
      raise RuntimeError("StreamResampler: push() after flush()")
    block = np.asarray(block, np.float32)
    self._tail = block.shape[1:]
    if self.orig_rate == self.new_rate:
      self._in_end += block.shape[0]
      return block
    self._buf = block if self._buf is None else np.concatenate([self._buf, block], axis=0)
    self._in_end += block.shape[0]
    # Outputs j whose whole filter support lies below in_end: j * down / up + half <= in_end - 1.
    ready = (self._in_end - 1 - self._half) * self._up // self._down + 1
    return self._emit(max(ready, 0))

  def flush(self) -> np.ndarray:
    """The remaining outputs (the input is taken as zero after its end)."""
    self._flushed = True
    if self.orig_rate == self.new_rate or self._buf is None:
      return np.zeros((0,) + self._tail, np.float32)
    return self._emit(-(-self._in_end * self._up // self._down))

  def _emit(self, stop: int) -> np.ndarray:
    if stop <= self._out_next:
      return np.zeros((0,) + self._buf.shape[1:], np.float32)
    y = resample(self._buf, self.orig_rate, self.new_rate)
    first = self._buf_start // self._down * self._up  # output index of y[0]
    out = y[self._out_next - first:stop - first]
    self._out_next = stop
    # Later outputs (j >= out_next) read input from out_next * down / up - half on.
    keep = max(0, (self._out_next * self._down // self._up - self._half) // self._down * self._down)
    if keep > self._buf_start:
      self._buf = self._buf[keep - self._buf_start:]
      self._buf_start = keep
    return out


def iter_audio_blocks(path, block_frames: int = 2 ** 18, sample_rate=None, mono=False):
  """Reads an audio file block by block, resampled on the fly: yields float32 [n, channels] ([n] if mono).

  The blocks concatenated equal read_audio(path, sample_rate, mono) (to float32 rounding), with
  resampled_length(frames, rate, sample_rate) samples in all, but only one block is in memory at a time.
  Every block is checked as read_audio checks a file (AudioError for non-finite samples, naming the frame), so
  a bad sample late in a file is only found when its block is read.
  """
  path = os.fspath(path)
  info = audio_info(path)
  block_frames = int(block_frames)
  if block_frames <= 0:
    raise ValueError(f"block_frames must be positive, got {block_frames}")
  resampler = StreamResampler(info.rate, sample_rate or info.rate)
  for start in range(0, info.frames, block_frames):
    x, _ = read_audio(path, mono=mono, start=start, frames=min(block_frames, info.frames - start))
    y = resampler.push(x)
    if y.shape[0]:
      yield y
  y = resampler.flush()
  if y.shape[0]:
    yield y


class AudioFileWriter:
  """Writes a .wav / .flac file block by block, atomically (write_audio for streams).

  Blocks go to a hidden temporary file in the destination's directory; `commit()` moves it into place
  (never clobbering an existing file unless overwrite=True) and `abort()` (or leaving a `with` block by an
  exception) removes it: no partial file is ever visible under `path`. Same formats, subtypes and checks as
  write_audio: non-finite samples raise AudioError, integer subtypes clip |x| > 1 (counted, warned at commit).
  Use `commit_together` to publish several files only when all of them are complete.
  """

  def __init__(self, path, sample_rate: int, channels: int = 1, subtype: str = "PCM_16"):
    self.path = os.fspath(path)
    self.format = output_format(self.path, subtype)
    self.subtype = subtype
    self.sample_rate = _check_rate(sample_rate, "sample_rate")
    self.channels = int(channels)
    self.frames = 0
    self.clipped = 0
    directory = os.path.dirname(os.path.abspath(self.path))
    fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
      self._file = sf.SoundFile(self.tmp, "w", samplerate=self.sample_rate, channels=self.channels,
                                subtype=subtype, format=self.format)
    except (sf.SoundFileError, RuntimeError) as e:
      os.unlink(self.tmp)
      raise AudioError(self.path, f"cannot write {self.channels} channel(s) at {self.sample_rate} Hz as "
                       f"{self.format} {subtype} ({e})") from e

  def write(self, block) -> None:
    """block: float [n] (mono) or [n, channels], linear amplitude."""
    x = np.asarray(block)
    if not np.issubdtype(x.dtype, np.floating):
      raise ValueError(f"samples must be floating point in [-1, 1], got dtype {x.dtype}")
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != self.channels:
      raise ValueError(f"{self.path}: block of shape {np.shape(block)}, expected [n, {self.channels}]")
    if not np.isfinite(x).all():
      raise AudioError(self.path, f"refusing to write {int(np.sum(~np.isfinite(x)))} non-finite samples (NaN/Inf)")
    if self.subtype != "FLOAT":
      over = np.abs(x) > 1.0
      if over.any():
        self.clipped += int(over.sum())
        x = np.clip(x, -1.0, 1.0)
    self._file.write(x)
    self.frames += x.shape[0]

  def _close(self):
    if not self._file.closed:
      self._file.close()
      fd = os.open(self.tmp, os.O_RDONLY)
      try:
        os.fsync(fd)  # on disk before it is renamed into place
      finally:
        os.close(fd)

  def finish(self) -> None:
    """Closes the temporary file (flushed to disk). Raises AudioError if nothing was written."""
    self._close()
    if self.frames == 0:
      raise AudioError(self.path, "refusing to write empty audio (0 samples)")
    if self.clipped:
      logging.warning("%s: clipped %d samples to [-1, 1] for %s", self.path, self.clipped, self.subtype)

  def commit(self, overwrite: bool = False) -> None:
    commit_together([self], overwrite=overwrite)

  def abort(self) -> None:
    """Drops the temporary file (idempotent)."""
    try:
      self._close()
    except Exception:  # pylint: disable=broad-except
      pass
    if os.path.exists(self.tmp):
      os.unlink(self.tmp)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    if exc_type is not None:
      self.abort()
    return False


def commit_together(writers, overwrite: bool = False) -> None:
  """Publishes the files of several AudioFileWriters, all or none.

  Without overwrite, nothing is moved if any destination exists (FileExistsError naming them); if one appears
  meanwhile, the files already moved by this call are removed again. Temporary files are removed in any case.
  """
  writers = list(writers)
  try:
    for w in writers:
      w.finish()
    if not overwrite:
      existing = [w.path for w in writers if os.path.exists(w.path)]
      if existing:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass overwrite=True to replace")
    done = []
    try:
      for w in writers:
        _move_into_place(w.tmp, w.path, overwrite)
        done.append(w)
    except BaseException:
      if not overwrite:
        for w in done:  # ours: linked a moment ago from our temporary file
          if os.path.exists(w.path) and os.path.samefile(w.path, w.tmp):
            os.unlink(w.path)
      raise
  finally:
    for w in writers:
      w.abort()


# ---------------------------------------------------------------------------------------------------------
# tf.data path: tensorflow-io when it works, else tf.numpy_function around the numpy path
# ---------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def tfio_available() -> bool:
  """True when tensorflow-io imports AND its audio ops run here. Probed once, then cached.

  tensorflow-io 0.37.1 (its last release) loads only with TF 2.16/2.17: with newer TF the import or the
  first op fails (undefined symbols), so a real op is run rather than trusting the import.
  """
  try:
    with tf.init_scope():  # eager even when first asked while tracing a tf.function / tf.data map
      return _probe_tfio()
  except ImportError as e:  # not installed, or its library does not load: the usual case, quietly
    logging.info("tensorflow-io not importable (%s); audio ops use soundfile/scipy", e)
    return False
  except Exception as e:  # pylint: disable=broad-except
    # Installed but broken (e.g. tensorflow-io 0.37 with TF >= 2.18): say so once.
    logging.warning("tensorflow-io is installed but its ops fail (%s: %s); audio ops use soundfile/scipy",
                    type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "")
    return False


def _probe_tfio() -> bool:
  """Imports tensorflow_io and runs its resample op on a small constant (eagerly)."""
  from tensorflow_io.python.ops import core_ops  # pylint: disable=g-import-not-at-top
  for name in ("io_audio_readable_init", "io_audio_readable_spec", "io_audio_readable_read",
               "io_audio_resample"):
    getattr(core_ops, name)
  y = core_ops.io_audio_resample(tf.ones([64, 1], tf.float32), rate_in=16000, rate_out=8000)
  ok = tuple(y.shape) == (32, 1) and bool(np.all(np.isfinite(y.numpy())))
  if not ok:
    logging.warning("tensorflow-io probe: resample of ones [64, 1] by 1/2 gave %s", y.numpy().ravel())
  return ok


def io_backend() -> str:
  """The backend decode_audio_tf / resample_tf use by default: 'tensorflow-io' or 'soundfile'."""
  return "tensorflow-io" if tfio_available() else "soundfile"


def _pick_backend(backend) -> str:
  if backend is None:
    return io_backend()
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
  if backend == "tensorflow-io" and not tfio_available():
    raise RuntimeError("backend='tensorflow-io' asked for, but tensorflow-io is not usable here")
  return backend


def _core_ops():
  from tensorflow_io.python.ops import core_ops  # pylint: disable=g-import-not-at-top
  return core_ops


def _gcd_tf(a, b):
  """Greatest common divisor of two int64 scalars, in graph."""
  a, b = tf.while_loop(lambda a, b: b > 0, lambda a, b: (b, a % b), (a, b))
  return a


def _resample_tfio(x, orig_rate, new_rate):
  """Speex resampling (tensorflow-io) with its latency removed. x: [time, channels] float32.

  The speex resampler (quality 4 in tensorflow-io) outputs y[j] = x(j * num / den - D) with
  num / den = orig / new reduced, D = filt_len / 2 input samples, filt_len = 64 when upsampling, else
  64 * num // den rounded up to a multiple of 8. It also stops at floor(time * new / orig) outputs.
  Prepending P = m * num - D zeros (m = ceil(D / num)) makes output k = m * den land on input 0; appending
  D + num zeros flushes the tail. Output [ceil(time * new / orig), channels], aligned as resample()'s.
  """
  orig = tf.cast(orig_rate, tf.int64)
  new = tf.cast(new_rate, tf.int64)
  g = _gcd_tf(orig, new)
  num, den = orig // g, new // g
  filt_len = tf.where(num > den, ((64 * num // den - 1) // 8) * 8 + 8, tf.constant(64, tf.int64))
  latency = filt_len // 2
  m = (latency + num - 1) // num
  k, pad_front = m * den, m * num - latency
  n = tf.shape(x, out_type=tf.int64)[0]
  n_out = (n * den + num - 1) // num
  padded = tf.pad(x, [[pad_front, latency + num], [0, 0]])
  y = _core_ops().io_audio_resample(padded, rate_in=orig, rate_out=new)
  return y[k:k + n_out]


def resample_tf(x, orig_rate, new_rate, backend=None):
  """Resampling for graphs: x float32 [time] or [time, channels] -> [ceil(time * new / orig), ...].

  orig_rate / new_rate: Python ints or int scalar tensors. Equal rates return x unchanged.
  backend: None (io_backend()), 'tensorflow-io' or 'soundfile' (tf.numpy_function around `resample`).
  The two backends agree within RESAMPLE_PARITY_ATOL for content below 0.7 of the lower Nyquist frequency.
  """
  backend = _pick_backend(backend)
  x = tf.convert_to_tensor(x, tf.float32)
  if x.shape.rank not in (1, 2):
    raise ValueError(f"x must be [time] or [time, channels], got shape {x.shape}")
  for r in (orig_rate, new_rate):
    if isinstance(r, (int, np.integer)):
      _check_rate(r, "rate")
  orig = tf.cast(orig_rate, tf.int64)
  new = tf.cast(new_rate, tf.int64)
  x2 = x if x.shape.rank == 2 else x[:, None]

  def _resampled():
    if backend == "tensorflow-io":
      y = _resample_tfio(x2, orig, new)
    else:
      y = tf.numpy_function(lambda a, o, n: resample(a, int(o), int(n)), [x2, orig, new], tf.float32,
                            stateful=False)
    return tf.reshape(y, [-1, tf.shape(x2)[1]])

  y = tf.cond(tf.equal(orig, new), lambda: x2, _resampled)
  y = y if x.shape.rank == 2 else y[:, 0]
  y.set_shape([None] + x.shape[1:].as_list())
  return y


# tensorflow-io sample dtypes -> scale to [-1, 1) (24-bit PCM comes left-justified in int32).
_TFIO_SCALE = ((tf.int16, 1.0 / 2**15, 0.0), (tf.int32, 1.0 / 2**31, 0.0), (tf.float32, 1.0, 0.0),
               (tf.uint8, 1.0 / 2**7, -1.0))


def _decode_tfio(path, start, frames, max_seconds):
  """Reads frames [start, start + frames) (frames=-1: to the end) with tensorflow-io.

  The header is checked (0 frames, max_seconds, start past the end) before any sample is read.
  Returns (x float32 [time, channels], file rate int64). Not for 32-bit integer PCM WAV, which
  tensorflow-io 0.37 mistakes for float.
  """
  core_ops = _core_ops()
  resource = core_ops.io_audio_readable_init(path)
  shape, dtype_enum, rate = core_ops.io_audio_readable_spec(resource)
  n = shape[0]
  checks = [
      tf.debugging.Assert(tf.logical_and(start >= 0, tf.logical_or(frames == -1, frames > 0)),
                          [path, ": bad excerpt, start", start, "frames", frames]),
      tf.debugging.Assert(n > 0, [path, ": contains no audio frames"]),
      tf.debugging.Assert(start < n, [path, ": start", start, "is past the end (", n, "frames )"]),
  ]
  if max_seconds is not None:
    limit = tf.cast(tf.math.floor(float(max_seconds) * tf.cast(rate, tf.float64)), tf.int64)
    checks.append(tf.debugging.Assert(n <= limit, [path, ": longer than max_seconds =", max_seconds]))
  stop = tf.where(frames < 0, n, tf.minimum(start + frames, n))

  def branch(dtype, scale, offset):
    def read():
      with tf.control_dependencies(checks):
        v = core_ops.io_audio_readable_read(resource, start, stop, dtype=dtype)
      return tf.cast(v, tf.float32) * scale + offset
    return read

  pairs = [(tf.equal(dtype_enum, dtype.as_datatype_enum), branch(dtype, scale, offset))
           for dtype, scale, offset in _TFIO_SCALE]

  def unsupported():
    with tf.control_dependencies([tf.debugging.Assert(False, [path, ": unsupported sample type"])]):
      return tf.zeros([0, shape[1]], tf.float32)

  x = tf.case(pairs, default=unsupported, exclusive=True)
  finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(x)),
                               [path, ": non-finite samples (NaN/Inf)"])
  with tf.control_dependencies([finite]):
    x = tf.identity(x)
  return x, rate


def decode_audio_tf(path, sample_rate=None, mono=True, start=0, frames=-1, max_seconds=None,
                    backend=None):
  """read_audio for tf.data graphs: path (str, bytes or scalar string tensor) -> (samples, rate).

  Args:
    path: audio file path (WAV/FLAC, 16/24-bit integer or float). Not in-memory file contents.
    sample_rate: None (keep the file's rate) or a Python int to resample to (`resample_tf`).
    mono: True -> [time] (mean over channels); False -> [time, channels].
    start, frames: excerpt in the FILE's rate, ints or int scalar tensors (frames=-1: to the end).
    max_seconds: fail if the file is longer (from the header, before reading the samples).
    backend: None (io_backend()), 'tensorflow-io' or 'soundfile' (tf.numpy_function around read_audio).

  Returns:
    (samples float32 [time] or [time, channels], rate int32 scalar tensor).

  Errors (missing or unreadable file, 0 frames, start past the end, NaN/Inf, too long, bad start/frames)
  raise a tf.errors.OpError at run time: InvalidArgumentError naming the file for our checks (both
  backends); see the module docstring for the few that tensorflow-io raises itself.
  """
  backend = _pick_backend(backend)
  if sample_rate is not None:
    sample_rate = _check_rate(sample_rate, "sample_rate")
  if isinstance(start, (int, np.integer)) and start < 0:
    raise ValueError(f"start must be >= 0, got {start}")
  if isinstance(frames, (int, np.integer)) and (frames == 0 or frames < -1):
    raise ValueError(f"frames must be -1 (to the end) or positive, got {frames}")
  path = tf.convert_to_tensor(path, tf.string)
  start = tf.cast(start, tf.int64)
  frames = tf.cast(frames, tf.int64)
  if backend == "tensorflow-io":
    x, rate = _decode_tfio(path, start, frames, max_seconds)
    x.set_shape([None, None])
    if mono:
      x = tf.reduce_mean(x, axis=1)
    if sample_rate is not None:
      x = resample_tf(x, rate, sample_rate, backend=backend)
      rate = sample_rate
  else:
    def read(p, s, f):
      p = p.item() if isinstance(p, np.ndarray) else p  # eager numpy_function passes a 0-d array
      y, r = read_audio(os.fsdecode(p), sample_rate=sample_rate, mono=mono, max_seconds=max_seconds,
                        start=int(s), frames=int(f))
      return y, np.int64(r)
    x, rate = tf.numpy_function(read, [path, start, frames], [tf.float32, tf.int64], stateful=False)
    x.set_shape([None] if mono else [None, None])
  return x, tf.cast(rate, tf.int32)
