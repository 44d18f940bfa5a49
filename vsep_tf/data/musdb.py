"""MusdbData: MUSDB18 / MUSDB18-HQ through the `musdb` package.

Splits are musdb's own:

  'train' = musdb.DB(subsets='train', split='train')   (100 tracks minus the 14 validation tracks)
  'valid' = musdb.DB(subsets='train', split='valid')   (the 14 track NAMES listed in musdb's mus.yaml)
  'test'  = musdb.DB(subsets='test')                   (50 tracks)

The validation split is a fixed list of names, so a folder whose train tracks carry none of those names has
an empty 'valid' split (ValueError when asked for). musdb's download=True needs the internet: point `root`
at a local copy (MUSDB18-HQ with is_wav=True, or the .stem.mp4 MUSDB18 with is_wav=False).

Sources, in this order: vocals, drums, bass, other; mix = 'sum' (the MUSDB mixture is the sum of its stems).
Audio is resampled to `sample_rate` (default 44,100 Hz) and mono (channels averaged, like audio.read_audio)
unless mono=False, which keeps MUSDB's 2 channels last: [T, 2] per source (mix_fn then sums axis -3).

Reading: musdb.DB lists the tracks and their headers (musdb runs ffprobe per track, so ffmpeg must be on PATH
even for WAV). Excerpts are read

* with is_wav=True (default direct_wav_reads=True): straight from each source's WAV at the exact frame, by
  soundfile (audio.read_audio(start, frames)): about 1 ms a read;
* otherwise through musdb itself: track.chunk_start / track.chunk_duration in seconds, then
  track.sources[name].audio, which runs ffprobe + ffmpeg per call (about 130 ms a read here). The only way
  into .stem.mp4 files; serialised by a lock because the chunk lives on the shared track object.

Both give the same samples for 16-bit WAV (tested). Sampling, silence skipping (min_rms; MUSDB vocals are
often absent for whole verses), gain augmentation and remixing across tracks: see `recorded`. The full
MUSDB18-HQ train set is ~10 GB as mono float32, so by default it streams (max_memory_mb).

The musdb import is lazy (in the constructor): the rest of vsep_tf.data works without the package.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from vsep_tf import audio
from vsep_tf.data import base
from vsep_tf.data import recorded

MUSDB_SOURCES = ("vocals", "drums", "bass", "other")
MUSDB_RATE = 44100
MUSDB_CHANNELS = 2
_DB_ARGS = {"train": dict(subsets="train", split="train"),
            "valid": dict(subsets="train", split="valid"),
            "test": dict(subsets="test", split=None)}


@dataclass
class MusdbTrack:
  """A musdb track with its header facts and its length T at the model rate."""
  name: str
  track: Any          # musdb.MultiTrack
  frames: int
  rate: int
  length: int


class MusdbData(recorded.RecordedData):
  """MUSDB18(-HQ) via musdb (see the module docstring).

  Args:
    root: the MUSDB18-HQ (is_wav=True) or MUSDB18 (is_wav=False) folder with train/ and test/.
    is_wav: MUSDB18-HQ layout (<subset>/<track>/{mixture,vocals,drums,bass,other}.wav).
    sample_rate: model rate (default 44100); audio is resampled to it.
    mix: 'sum' (default) or 'mean'.
    mono: average the channels (default); False keeps 2 channels, [..., T, 2].
    min_rms, min_rms_tries, gain_db, streaming, max_memory_mb: as StemFolder (see `recorded`).
    direct_wav_reads: with is_wav, read excerpts from the WAVs directly instead of through musdb's chunks.
  """

  def __init__(self, root, is_wav: bool = True, sample_rate: int = MUSDB_RATE, mix: str = "sum",
               mono: bool = True, min_rms: float = 0.0, min_rms_tries: int = 10,
               gain_db: Union[None, float, Tuple[float, float]] = 0.0, streaming: Optional[bool] = None,
               max_memory_mb: float = 1024.0, direct_wav_reads: bool = True):
    try:
      import musdb  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError("MusdbData needs the musdb package (pip install 'vsep-tf[musdb]'; it needs ffmpeg "
                        "on PATH)") from e
    self._musdb = musdb
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      raise FileNotFoundError(f"MUSDB root {self.root} does not exist (musdb's download=True cannot work "
                              "offline: give a local MUSDB18 / MUSDB18-HQ folder)")
    self.is_wav = bool(is_wav)
    self.direct = self.is_wav and bool(direct_wav_reads)
    self.sample_rate = int(sample_rate or MUSDB_RATE)
    if self.sample_rate <= 0:
      raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    self.mono = bool(mono)
    self.channels = None if self.mono else MUSDB_CHANNELS
    self.source_names = MUSDB_SOURCES
    self._init_sampling(mix, min_rms, min_rms_tries, gain_db, streaming, max_memory_mb)
    self._splits: Dict[str, List[MusdbTrack]] = {}
    self._lock = threading.Lock()

  def track_list(self, split: str) -> List[MusdbTrack]:
    """The tracks of a split, in musdb's (name) order; the DB is opened on first use."""
    base.check_split(split)
    if split not in self._splits:
      db = self._musdb.DB(root=self.root, is_wav=self.is_wav, **_DB_ARGS[split])
      tracks = []
      for t in db.tracks:
        missing = [s for s in MUSDB_SOURCES if s not in t.sources]
        if missing:
          raise ValueError(f"MUSDB track {split}/{t.name} lacks {missing}")
        rate = int(round(t.rate))
        tracks.append(MusdbTrack(t.name, t, int(t.samples), rate,
                                 recorded.model_length(t.samples, rate, self.sample_rate)))
      if not tracks:
        hint = (" (musdb's valid split is a fixed list of track names, see musdb/configs/mus.yaml)"
                if split == "valid" else "")
        raise ValueError(f"musdb found no {split!r} tracks under {self.root} (is_wav={self.is_wav}){hint}")
      self._splits[split] = tracks
    return self._splits[split]

  # --- reading (hooks of RecordedData) ------------------------------------------------------------------

  def _channels(self, x: np.ndarray) -> np.ndarray:
    """[n, C_file] -> [n] (mono: channel mean) or [n, 2] (stereo; a mono file is duplicated)."""
    return base.to_channels(x, self.channels, "MUSDB audio")

  def _read_frames(self, rec: MusdbTrack, name: Optional[str], first: int, count: Optional[int]) -> np.ndarray:
    """File frames [first, first + count) (count None: to the end) of a source (name) or the mixture (None),
    at the file's rate, channel policy applied."""
    if self.direct:
      path = rec.track.path if name is None else rec.track.sources[name].path
      x, _ = audio.read_audio(path, mono=False, start=first, frames=-1 if count is None else count)
      return self._channels(x)
    with self._lock:
      t = rec.track
      t.chunk_start = first / rec.rate
      t.chunk_duration = None if count is None else count / rec.rate
      try:
        x = t.audio if name is None else t.sources[name].audio
      finally:
        t.chunk_start, t.chunk_duration = 0, None
    x = self._channels(x)
    return x if count is None else x[:count]

  def _read(self, rec: MusdbTrack, name: Optional[str], start: int, length: Optional[int]) -> np.ndarray:
    if length is None:
      x = audio.resample(self._read_frames(rec, name, 0, None), rec.rate, self.sample_rate)
      out = np.zeros(self._frame_shape(rec.length), np.float32)
      out[:min(len(x), rec.length)] = x[:rec.length]
      return out
    return recorded.read_excerpt(lambda first, count: self._read_frames(rec, name, first, count), rec.frames,
                                 rec.rate, self.sample_rate, start, length, track_length=rec.length,
                                 channels=self.channels)

  def read_source(self, split, index, source, start=0, length=None):
    return self._read(self.track_list(split)[index], self.source_names[source], start, length)

  def read_mixture(self, split, index):
    return self._read(self.track_list(split)[index], None, 0, None)
