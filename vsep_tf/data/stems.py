"""StemFolder: any multitrack folder in MUSDB18-HQ layout, for training on your own stems.

Layout:

  root/{train,test}[,valid]/<track>/{mixture,<source_1>,...,<source_N>}.{wav,flac}

* Source names are the file stems other than 'mixture', sorted (or in the order of `sources`). Every track of
  every split must hold the same set (ValueError naming the track otherwise). 'mixture' is optional per
  track; it is read only by `tracks()` (evaluation), never for training.
* Audio is mono (channels averaged, audio.read_audio's policy; what training reads) or, with channels=2, stereo
  [T, 2] (a mono file is duplicated; what stereo evaluation reads), resampled to `sample_rate` (default: the
  files' common rate). A track's length T is that of its shortest file at the model rate
  (ceil(frames * sample_rate / file_rate)); longer files are cut to T.
* Splits are the folders. 'valid' is either a valid/ folder or `valid_tracks` train tracks held out: a list
  of names, or a count n (the n train tracks whose names have the smallest CRC32: deterministic, and stable
  when tracks are added). Held-out tracks leave 'train'.
* Small folders are decoded into memory once (the chorales: ~120 MB of float32 train stems, ~4 s to decode); folders whose
  decoded stems exceed `max_memory_mb` (or streaming=True) are read excerpt by excerpt. Sampling,
  silence skipping (min_rms) and augmentation: see `recorded`.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from absl import logging

from vsep_tf import audio
from vsep_tf.data import base
from vsep_tf.data import recorded

AUDIO_EXTENSIONS = (".wav", ".flac")
BAD_AUDIO_POLICIES = ("error", "skip")
_TAIL_FRAMES = 4096


def check_audio_file(path) -> Optional[str]:
  """Why `path` cannot be trained on (None if it looks sound): unreadable header, a header declaring more
  data than the file holds (a truncated WAV: libsndfile would silently shorten it), a tail that does not
  decode (a truncated FLAC), or non-finite samples in the tail. Cheap: the header and the last frames only."""
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  try:
    info = audio.audio_info(path)
  except audio.AudioError as e:
    return e.problem
  try:
    extra = sf.info(os.fspath(path), True).extra_info or ""
    if "should be" in extra:
      return "truncated or corrupt (its header declares more data than the file holds)"
    with sf.SoundFile(os.fspath(path)) as f:
      f.seek(max(info.frames - _TAIL_FRAMES, 0))
      tail = f.read(_TAIL_FRAMES, dtype="float32")
  except (sf.SoundFileError, RuntimeError, OSError) as e:
    return f"truncated or corrupt (decoding its end failed: {e})"
  if len(tail) < min(_TAIL_FRAMES, info.frames):
    return f"truncated (read {len(tail)} of the last {min(_TAIL_FRAMES, info.frames)} frames)"
  if not np.isfinite(tail).all():
    return "contains non-finite (NaN/Inf) samples"
  return None
MIXTURE = "mixture"


@dataclass
class StemTrack:
  """One track of a stem folder: its files and, at the model rate, its length T."""
  name: str
  split: str
  directory: str
  files: Dict[str, str]                       # {'mixture' | source name: path}
  infos: Dict[str, audio.AudioInfo] = field(default_factory=dict)
  length: int = 0


def _held_out(names: Sequence[str], valid_tracks) -> List[str]:
  """The train tracks held out as 'valid': a list of names, or a count (smallest CRC32 of the name)."""
  if isinstance(valid_tracks, (int, np.integer)) and not isinstance(valid_tracks, bool):
    n = int(valid_tracks)
    if not 0 < n < len(names):
      raise ValueError(f"valid_tracks={n} must be in [1, {len(names) - 1}] (there are {len(names)} train tracks)")
    return sorted(sorted(names, key=lambda s: (zlib.crc32(s.encode("utf-8")), s))[:n])
  wanted = [valid_tracks] if isinstance(valid_tracks, str) else list(valid_tracks)
  missing = [v for v in wanted if v not in names]
  if missing:
    raise ValueError(f"valid_tracks {missing} are not train tracks")
  if len(set(wanted)) == len(names):
    raise ValueError("valid_tracks would hold out every train track")
  return sorted(set(wanted))


class StemFolder(recorded.RecordedData):
  """A folder of stems in MUSDB18-HQ layout (see the module docstring). Mono, or stereo with channels=2.

  Args:
    root: the folder holding train/ and test/ (and optionally valid/).
    sources: explicit source order (must name the stems found); default sorted names.
    sample_rate: model rate in Hz; default the files' rate (all files must then share one).
    mix: 'sum' (default; recorded multitracks) or 'mean'.
    min_rms: redraw solo crops whose RMS is below this (0: off); min_rms_tries draws at most.
    gain_db: gain augmentation, x -> U[-x, x] dB, or (lo, hi) dB; 0/None off.
    streaming: True (read excerpts from disk), False (decode to memory), None (by max_memory_mb).
    max_memory_mb: with streaming=None, a split whose decoded stems (float32) exceed this is streamed.
    valid_tracks: train tracks held out as split 'valid' (a count or a list of names).
    bad_audio: what a corrupt or truncated file does (`check_audio_file`): 'error' raises AudioError naming
      it; 'skip' drops its whole track with a warning (listed in `skipped_files`, counted by `num_skipped`).
    channels: None (mono: the channels' mean) or 2 (stereo [T, 2]; mono files duplicated).

  Construction only lists the folders and reads file headers (cheap: builders construct datasets just to
  learn source_names); audio is decoded on the first solo / mixtures / tracks call of a split.
  """

  def __init__(self, root, sources: Optional[Sequence[str]] = None, sample_rate: Optional[int] = None,
               mix: str = "sum", min_rms: float = 0.0, min_rms_tries: int = 10,
               gain_db: Union[None, float, Tuple[float, float]] = 0.0, streaming: Optional[bool] = None,
               max_memory_mb: float = 1024.0, valid_tracks: Union[None, int, Sequence[str]] = None,
               bad_audio: str = "error", channels: Optional[int] = None):
    if channels not in (None, 2):
      raise ValueError(f"channels={channels!r}: None (mono) or 2 (stereo)")
    self.channels = channels
    if bad_audio not in BAD_AUDIO_POLICIES:
      raise ValueError(f"bad_audio={bad_audio!r}; choose from {BAD_AUDIO_POLICIES}")
    self.bad_audio = bad_audio
    self.skipped_files: List[Tuple[str, str]] = []  # (path, problem) of skipped tracks' bad files
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      raise FileNotFoundError(f"stem folder {self.root} does not exist")
    self._init_sampling(mix, min_rms, min_rms_tries, gain_db, streaming, max_memory_mb)
    self._tracks = self._scan()
    if self._tracks.get("valid") and valid_tracks:
      raise ValueError(f"{self.root} has a valid/ folder; do not also pass valid_tracks")
    if valid_tracks:
      if not self._tracks.get("train"):
        raise ValueError(f"valid_tracks needs train tracks; {self.root} has no train/ folder")
      held = set(_held_out([t.name for t in self._tracks["train"]], valid_tracks))
      self._tracks["valid"] = [t for t in self._tracks["train"] if t.name in held]
      self._tracks["train"] = [t for t in self._tracks["train"] if t.name not in held]
    self.source_names = self._check_sources(sources)
    self.sample_rate = self._resolve_rate(sample_rate)
    for tracks in self._tracks.values():
      for t in tracks:
        t.length = min(recorded.model_length(i.frames, i.rate, self.sample_rate) for i in t.infos.values())

  # --- discovery -----------------------------------------------------------------------------------------

  def _scan(self) -> Dict[str, List[StemTrack]]:
    found = {}
    for split in base.SPLITS:
      split_dir = os.path.join(self.root, split)
      if not os.path.isdir(split_dir):
        continue
      tracks = []
      for name in sorted(os.listdir(split_dir)):
        directory = os.path.join(split_dir, name)
        if name.startswith(".") or not os.path.isdir(directory):
          continue
        files = {}
        for fname in sorted(os.listdir(directory)):
          stem, ext = os.path.splitext(fname)
          if fname.startswith(".") or ext.lower() not in AUDIO_EXTENSIONS:
            continue
          if stem in files:
            raise ValueError(f"track {split}/{name}: two files for {stem!r} "
                             f"({os.path.basename(files[stem])}, {fname}); keep one")
          files[stem] = os.path.join(directory, fname)
        if not any(s != MIXTURE for s in files):
          raise ValueError(f"track {split}/{name} ({directory}) has no source stems "
                           f"(expected <source>{'|'.join(AUDIO_EXTENSIONS)} files)")
        problems = [(p, check_audio_file(p)) for p in files.values()]
        problems = [(p, why) for p, why in problems if why]
        if problems:
          if self.bad_audio == "error":
            path, why = problems[0]
            raise audio.AudioError(path, f"{why} (track {split}/{name}; pass --bad_audio=skip to skip such "
                                         "tracks with a warning)")
          for path, why in problems:
            logging.warning("skipping track %s/%s: %s: %s", split, name, path, why)
          self.skipped_files.extend(problems)
          continue
        track = StemTrack(name=name, split=split, directory=directory, files=files)
        track.infos = {s: audio.audio_info(p) for s, p in files.items()}
        tracks.append(track)
      if not tracks:
        raise ValueError(f"{split_dir} holds no track folders")
      found[split] = tracks
    if not found.get("train") and not found.get("test"):
      raise ValueError(f"{self.root} has neither train/ nor test/ track folders (MUSDB18-HQ layout: "
                       "<root>/{train,test}/<track>/{mixture,<source>...}.{wav,flac})")
    return found

  def _check_sources(self, sources) -> Tuple[str, ...]:
    all_tracks = [t for tracks in self._tracks.values() for t in tracks]
    first = all_tracks[0]
    expected = set(first.files) - {MIXTURE}
    for t in all_tracks[1:]:
      got = set(t.files) - {MIXTURE}
      if got != expected:
        raise ValueError(
            f"track {t.split}/{t.name} has sources {sorted(got)} but {first.split}/{first.name} has "
            f"{sorted(expected)} (missing: {sorted(expected - got)}, extra: {sorted(got - expected)}); "
            "every track must hold the same stems")
    if sources is None:
      return tuple(sorted(expected))
    sources = tuple(sources)
    if set(sources) != expected or len(set(sources)) != len(sources):
      raise ValueError(f"sources={list(sources)} must name each of the stems found exactly once: "
                       f"{sorted(expected)}")
    return sources

  def _resolve_rate(self, sample_rate) -> int:
    rates = sorted({i.rate for ts in self._tracks.values() for t in ts for i in t.infos.values()})
    if sample_rate:
      if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
      return int(sample_rate)
    if len(rates) > 1:
      raise ValueError(f"files in {self.root} have sample rates {rates}: pass sample_rate to resample to one")
    return rates[0]

  @property
  def num_skipped(self) -> int:
    """Number of bad files skipped (bad_audio='skip')."""
    return len(self.skipped_files)

  @property
  def splits(self) -> Tuple[str, ...]:
    return tuple(s for s in base.SPLITS if self._tracks.get(s))

  def track_list(self, split: str) -> List[StemTrack]:
    """The tracks of a split (sorted by name)."""
    base.check_split(split)
    if not self._tracks.get(split):
      hint = " (pass valid_tracks to hold some train tracks out)" if split == "valid" else ""
      raise ValueError(f"{self.root} has no {split!r} split{hint}; it has {self.splits}")
    return self._tracks[split]

  # --- reading (hooks of RecordedData) ------------------------------------------------------------------

  def _read(self, track: StemTrack, name: str, start: int, length: Optional[int]) -> np.ndarray:
    info = track.infos[name]
    path = track.files[name]
    if length is None:  # the whole file, resampled in one go, cut / zero-padded to T
      x, _ = audio.read_audio(path, sample_rate=self.sample_rate, mono=self.channels is None)
      x = base.to_channels(x, self.channels, path)
      out = np.zeros(self._frame_shape(track.length), np.float32)
      out[:min(len(x), track.length)] = x[:track.length]
      return out

    def read_frames(first, count):
      x = audio.read_audio(path, mono=self.channels is None, start=first, frames=count)[0]
      return base.to_channels(x, self.channels, path)

    return recorded.read_excerpt(read_frames, info.frames, info.rate, self.sample_rate, start, length,
                                 track_length=track.length, channels=self.channels)
    x = x[:, None] if x.ndim == 1 else x
    if x.shape[1] == 1:
      return np.repeat(x, 2, axis=1)
    if x.shape[1] != 2:
      raise ValueError(f"{path}: {x.shape[1]} channels; a stereo stem folder takes mono or stereo files")
    return x

  def read_source(self, split, index, source, start=0, length=None):
    track = self.track_list(split)[index]
    return self._read(track, self.source_names[source], start, length)

  def read_mixture(self, split, index):
    track = self.track_list(split)[index]
    return self._read(track, MIXTURE, 0, None) if MIXTURE in track.files else None
