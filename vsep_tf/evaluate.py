r"""Evaluate a separator (or a baseline) on a dataset: BSSEval v4 (museval) + SI-SDR, as one JSON.

  python -m vsep_tf.evaluate --model_dir=runs/toy_var --dataset=toy --toy_seed=1234 --num_examples=40 \
      --output_json=runs/toy_var/eval_toy.json
  python -m vsep_tf.evaluate --model_dir=runs/chorales_nmf --dataset=stems --data_root=../shared/data/chorales \
      --split=test --output_json=runs/chorales_nmf/eval_test.json
  python -m vsep_tf.evaluate --method=oracle_irm --dataset=toy --output_json=/tmp/irm.json     # no model
  python -m vsep_tf.evaluate --method=mixture --dataset=musdb --musdb_root=/data/musdb18hq --output_json=m.json

What is scored (see vsep_tf.evaluation.bsseval): per track and source, museval v4 SDR / SIR / SAR / ISR on 1 s
windows (median over frames, silent frames left out) and whole-track SI-SDR / SI-SDRi; then the median over
tracks per source, and 'overall' = the median over sources ('overall_mean': the mean over sources).

Methods: a trained model (--model_dir, rebuilt by vsep_tf.model_dir.load_separator), or a baseline that
needs no model (--method): 'oracle_irm' (ideal ratio mask from the TRUE sources, STFT --oracle_fft; an upper
bound for masking methods) and 'mixture' (the mixture as every estimate, as m_sum / N so that the estimates
add up to the mix: the floor; SDR about +1.2 dB for 4 equal-power sources, see separators/oracle.py).

Data: --dataset=toy (items 0..K-1 of the 'test' split of ToyData(seed=--toy_seed), 48,000 samples each,
batched through separate()), --dataset=stems --data_root=DIR, --dataset=musdb --musdb_root=DIR (whole tracks
through separate_long(), i.e. chunked overlap-add). Scoring happens at the DATA's sample rate: a model at
another rate gets the mixture resampled to its rate and its estimates resampled back (logged, and
'resampled': true in the JSON). A model whose mixing function differs from the data's gets the mixture
rescaled to its convention (sum vs mean: a factor N), so that its estimates are on the sources' scale.

Priors compose: --sources=violin,clarinet,tenor_sax mixes only those stems of every track (the data's mixing
function over them; the mixture file is not used) and scores them; a model directory then separates with those
priors only, or with --model_sources=all (or a list) with more: the classes not in the mix ('spare') are not
scored, but the energy of each one's estimate relative to the mix (dB) is reported ('spare' in the JSON; it
should be low). --extra_priors=name=DIR adds a spectral prior trained on its own (model_dir.load_separator).

  python -m vsep_tf.evaluate --model_dir=pretrained/chorales --dataset=stems --data_root=../shared/data/chorales \
      --sources=violin,clarinet,tenor_sax --model_sources=all --output_json=trio_4priors.json

Separation runs in this process; the museval part (1 to 3 s per 4-source track here, mostly the fixed cost of
solving for the 512-tap distortion filters) runs in a pool of --num_workers spawned processes with one BLAS
thread each, overlapped with the separation of the next tracks. SI-SDR is computed here.

Output: --output_json (written atomically; nothing is written when the inputs are bad), one JSON per track in
--per_track_dir (default: <output_json without .json>.tracks/, with the framewise BSSEval values), and the
estimates as WAV files in --write_audio_dir if given. A table is printed at the end.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

from absl import app, flags, logging
import numpy as np

from vsep_tf import cli
from vsep_tf import config as config_lib
from vsep_tf import model_dir as model_dir_lib
from vsep_tf import run_flags
from vsep_tf.evaluation import bsseval

# TensorFlow and everything that imports it are imported inside functions: the spawned scoring workers
# import this module (as __mp_main__) and should not pay for TensorFlow.

BASELINES = ("oracle_irm", "mixture")
DATASETS = ("toy", "stems", "musdb")
DEFAULT_TOY_EXAMPLES = 40
TOY_ORACLE_FFT = 4096    # low toy fundamentals (26 Hz) need long windows (REFERENCES.md: +7 to +15 dB vs 1024)
ORACLE_WINDOW_SECONDS = 0.064  # other data: the power of two >= 64 ms (16 kHz: 1024, 22.05 kHz: 2048, 44.1: 4096)


@dataclasses.dataclass
class EvalOptions:
  """What to evaluate on and how (the data flags of the tool)."""
  dataset: str = "toy"
  split: str = "test"
  toy_seed: int = 1234
  data_root: Optional[str] = None
  valid_tracks: int = 0          # stems: train tracks held out as split 'valid' (0: the model's own setting)
  musdb_root: Optional[str] = None
  musdb_is_wav: bool = True
  sample_rate: int = 0           # 0: the data's own rate
  mix: str = ""                  # '': the dataset's default mixing function
  num_examples: int = 0          # 0: toy 40 items, otherwise every track of the split
  max_seconds: float = 0.0       # crop every track to its first max_seconds (0: whole)
  eq_tilt_db_per_octave: float = 0.0  # robustness check: the same spectral tilt on every source and the mix
  batch_size: int = 8
  num_workers: int = 2           # scoring processes (0: score in this process)
  oracle_fft: int = 0            # 0: 4096 for toy, else the power of two >= 64 ms
  oracle_hop: int = 0            # 0: oracle_fft // 4
  oracle_power: float = 2.0
  win_seconds: float = 1.0
  hop_seconds: float = 1.0
  stereo: bool = False           # score 2 channels as 2 channels (stems, musdb): museval on [N, T, 2]
  sources: Tuple[str, ...] = ()  # mix and score only these stems of every track (the data's mixing function
                                 # over them; the track's mixture file is not used); (): every stem, as is

  def validate(self):
    if self.dataset not in DATASETS:
      raise ValueError(f"unknown dataset {self.dataset!r}; choose from {DATASETS}")
    if self.dataset == "stems" and not self.data_root:
      raise ValueError("--dataset=stems needs --data_root (a folder {train,test}/<track>/<source>.wav|flac)")
    if self.dataset == "stems" and not os.path.isdir(self.data_root):
      raise FileNotFoundError(f"--data_root={self.data_root} is not a directory")
    if self.dataset == "musdb" and not self.musdb_root:
      raise ValueError("--dataset=musdb needs --musdb_root (MUSDB18 or MUSDB18-HQ; it cannot be downloaded here)")
    if self.dataset == "musdb" and not os.path.isdir(self.musdb_root):
      raise FileNotFoundError(f"--musdb_root={self.musdb_root} is not a directory")
    for name in ("num_examples", "batch_size", "num_workers", "oracle_fft", "oracle_hop", "sample_rate"):
      if getattr(self, name) < 0:
        raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
    if self.batch_size == 0:
      raise ValueError("--batch_size must be positive")
    if self.stereo and self.dataset == "toy":
      raise ValueError("--stereo: the toy data is mono")
    if self.stereo and self.eq_tilt_db_per_octave:
      raise ValueError("--eq_tilt_db_per_octave is a mono check; drop --stereo")
    if len(set(self.sources)) != len(tuple(self.sources)):
      raise ValueError(f"--sources={','.join(self.sources)} names a source twice")
    if self.max_seconds < 0 or self.win_seconds <= 0 or self.hop_seconds <= 0 or self.oracle_power <= 0:
      raise ValueError("--max_seconds must be >= 0; window, hop and oracle power must be positive")
    return self

  @property
  def limit(self) -> Optional[int]:
    if self.num_examples:
      return self.num_examples
    return DEFAULT_TOY_EXAMPLES if self.dataset == "toy" else None

  def resolved_oracle_fft(self, sample_rate: int) -> int:
    """--oracle_fft, or its default: 4096 for toy; else the power of two >= 64 ms at `sample_rate` (16 kHz:
    1024, the STFT of the chorales figures in REFERENCES.md, where the IRM reaches 9.1 dB mean SDR)."""
    if self.oracle_fft:
      return self.oracle_fft
    if self.dataset == "toy":
      return TOY_ORACLE_FFT
    return 2 ** int(math.ceil(math.log2(ORACLE_WINDOW_SECONDS * sample_rate - 1e-9)))


# ---------------------------------------------------------------------------------------------------------
# Data and separators
# ---------------------------------------------------------------------------------------------------------


def build_dataset(opts: EvalOptions):
  """The evaluation dataset (no augmentation, data at its own rate unless --sample_rate)."""
  from vsep_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  kwargs = {}
  if opts.dataset == "toy":
    kwargs = dict(seed=opts.toy_seed)
  elif opts.dataset == "stems":
    kwargs = dict(root=opts.data_root, channels=2 if opts.stereo else None)
    if opts.valid_tracks:
      kwargs["valid_tracks"] = opts.valid_tracks
  elif opts.dataset == "musdb":
    kwargs = dict(root=opts.musdb_root, is_wav=opts.musdb_is_wav, mono=not opts.stereo)
  if opts.sample_rate:
    kwargs["sample_rate"] = opts.sample_rate
  if opts.mix:
    kwargs["mix"] = opts.mix
  return data_lib.build_dataset(opts.dataset, **kwargs)


def num_tracks(dataset, opts: EvalOptions) -> Optional[int]:
  """How many tracks the evaluation will see (None if unknown)."""
  if opts.dataset == "toy":
    return min(opts.limit, dataset.num_items[opts.split])
  n = len(dataset.track_list(opts.split))  # raises a clear ValueError for a missing split
  return min(n, opts.limit) if opts.limit else n


def scored_sources(dataset, opts: EvalOptions) -> List[str]:
  """The stems mixed and scored: --sources (checked against the data's classes), else all of them."""
  names = list(dataset.source_names)
  if not opts.sources:
    return names
  unknown = [n for n in opts.sources if n not in names]
  if unknown:
    raise ValueError(f"--sources: unknown source(s) {unknown}; the data has {', '.join(names)}")
  return list(opts.sources)


def iter_tracks(dataset, opts: EvalOptions) -> Iterator[Tuple[str, np.ndarray, np.ndarray]]:
  """(name, mix [T(, C)], sources [N, T(, C)]) of the split, at most opts.limit, cropped to max_seconds
  (C = 2 with opts.stereo). With opts.sources: only those stems, in that order, and their mix by the data's
  mixing function (a sum of the chosen stems for 'sum' data, their mean for 'mean' data)."""
  from vsep_tf.data import base  # pylint: disable=import-outside-toplevel
  from vsep_tf.data import mixing  # pylint: disable=import-outside-toplevel
  base.check_split(opts.split)
  index = [list(dataset.source_names).index(n) for n in scored_sources(dataset, opts)]
  subset = index != list(range(dataset.num_sources))
  if opts.dataset == "toy":
    tracks = dataset.tracks(opts.split, limit=opts.limit)
  else:
    tracks = dataset.tracks(opts.split)
  crop = int(round(opts.max_seconds * dataset.sample_rate)) if opts.max_seconds else None
  for i, (name, mix, sources) in enumerate(tracks):
    if opts.limit and i >= opts.limit:
      return
    mix, sources = np.asarray(mix, np.float32), np.asarray(sources, np.float32)
    if subset:
      sources = sources[index]
      mix = mixing.mix_sources(sources, dataset.mix, axis=0)
    if mix.ndim != (2 if opts.stereo else 1):
      raise ValueError(f"track {name}: audio of shape {mix.shape}; expected {'[T, 2]' if opts.stereo else '[T]'}")
    if crop:
      mix, sources = mix[:crop], sources[:, :crop]
    if opts.eq_tilt_db_per_octave:
      mix = spectral_tilt(mix, dataset.sample_rate, opts.eq_tilt_db_per_octave)
      sources = spectral_tilt(sources, dataset.sample_rate, opts.eq_tilt_db_per_octave)
    yield name, mix, sources


def spectral_tilt(x, sample_rate: int, db_per_octave: float, reference_hz: float = 1000.0,
                  floor_hz: float = 50.0) -> np.ndarray:
  """x [..., T] through a zero-phase EQ of `db_per_octave` dB per octave around reference_hz (flat below
  floor_hz): a brighter (> 0) or darker (< 0) recording of the same notes. Linear, so applied to the sources and
  to their mix alike the mix stays their sum."""
  x = np.asarray(x, np.float32)
  freqs = np.fft.rfftfreq(x.shape[-1], 1.0 / sample_rate)
  gain_db = db_per_octave * np.log2(np.maximum(freqs, floor_hz) / reference_hz)
  spec = np.fft.rfft(x.astype(np.float64), axis=-1) * 10.0 ** (gain_db / 20.0)
  return np.fft.irfft(spec, n=x.shape[-1], axis=-1).astype(np.float32)


ALL_SOURCES = "all"  # --model_sources=all: every class of the model (and of --extra_priors)


def make_separator(method: Optional[str], model_dir: Optional[str], dataset, opts: EvalOptions,
                   model_flags=(), model_sources=None, extra_priors=None, quality: str = "best"):
  """The separator under test: load_separator(model_dir) (its quality preset `quality`, its saved flags
  overridden by `model_flags`, '--name=value' each; with the priors of `model_sources` only, default: opts.sources
  if any, ['all']: every class; plus `extra_priors` {name: prior model dir}), or a baseline built for `dataset`
  (and opts.sources)."""
  from vsep_tf.separators import oracle  # pylint: disable=import-outside-toplevel
  names = scored_sources(dataset, opts)
  if model_dir:
    from vsep_tf.model_dir import load_separator  # pylint: disable=import-outside-toplevel
    chosen = list(model_sources) if model_sources else (list(opts.sources) or None)
    if chosen == [ALL_SOURCES]:
      chosen = None
    return load_separator(model_dir, list(model_flags), sources=chosen, extra_priors=extra_priors, quality=quality)
  if model_sources or extra_priors:
    raise ValueError("--model_sources and --extra_priors apply to --model_dir")
  if method == "oracle_irm":
    return oracle.OracleIRM(names, dataset.sample_rate, dataset.mix,
                            n_fft=opts.resolved_oracle_fft(dataset.sample_rate), hop=opts.oracle_hop,
                            power=opts.oracle_power)
  if method == "mixture":
    return oracle.MixtureBaseline(names, dataset.sample_rate, dataset.mix)
  raise ValueError(f"unknown method {method!r}; pass --model_dir or --method from {BASELINES}")


def check_model_dir(model_dir: str):
  """Raises model_dir.ModelDirError (a ValueError) naming what is wrong with `model_dir`."""
  model_dir_lib.read_manifest(model_dir)


class _Adapter:
  """Runs a separator on data of possibly another rate / mixing convention. Estimates come back in the order
  `names` (the scored stems, default the data's), then the separator's `spare` classes (priors for classes
  not in the mix: e.g. 4 priors on a trio), whose estimates are not scored but their energy is reported."""

  def __init__(self, separator, dataset, batch_size: int, names=None):
    self.sep = separator
    self.data_rate = int(dataset.sample_rate)
    self.model_rate = int(separator.sample_rate)
    self.resampled = self.model_rate != self.data_rate
    self.batch_size = batch_size
    names = list(names or dataset.source_names)
    model_names = list(separator.source_names)
    missing = [n for n in names if n not in model_names]
    if missing:
      raise ValueError(f"the separator's sources {model_names} do not include the data's {missing} (scored: "
                       f"{names}; --sources picks the stems to mix, --model_sources / --extra_priors the priors)")
    self.names = names
    self.spare = [n for n in model_names if n not in names]
    self.order = [model_names.index(n) for n in names + self.spare]
    # Data mix -> the sum of its stems (a 'mean' of k stems times k) -> the model's convention (a 'mean' of its
    # N classes: / N). The same classes and mixing function: 1.
    self.gain = ((len(names) if dataset.mix == "mean" else 1.0)
                 / (len(model_names) if separator.mix == "mean" else 1.0))
    if self.gain != 1.0:
      logging.warning("the data mixes %d stems by %s, the model %d classes by %s: mixtures are scaled by %g "
                      "before separation", len(names), dataset.mix, len(model_names), separator.mix, self.gain)
    if self.resampled:
      logging.warning("the model runs at %d Hz, the data at %d Hz: mixtures are resampled to %d Hz and the "
                      "estimates back to %d Hz for scoring (vsep_tf.audio.resample)", self.model_rate,
                      self.data_rate, self.model_rate, self.data_rate)

  def _to_model(self, x):
    """A mix [T] or [T, C] (time first) at the model's rate and mixing convention."""
    from vsep_tf import audio  # pylint: disable=import-outside-toplevel
    x = np.asarray(x, np.float32) * np.float32(self.gain)
    if not self.resampled:
      return x
    return audio.resample(x, self.data_rate, self.model_rate)

  def _to_data(self, est, length):
    """Estimates [..., N, T] (model order and rate) -> data order and rate, T = length."""
    from vsep_tf import audio  # pylint: disable=import-outside-toplevel
    est = np.asarray(est, np.float32)[..., self.order, :]
    if not self.resampled:
      return est
    flat = est.reshape(-1, est.shape[-1])
    back = audio.resample(flat.T, self.model_rate, self.data_rate).T
    out = np.zeros(flat.shape[:-1] + (length,), np.float32)
    out[:, :min(length, back.shape[-1])] = back[:, :length]
    return out.reshape(est.shape[:-1] + (length,))

  def batch(self, mixes, sources):
    """mixes [B, T], sources [B, N, T] (data order) -> estimates [B, N, T] (data order, data rate)."""
    from vsep_tf.separators import oracle  # pylint: disable=import-outside-toplevel
    length = mixes.shape[-1]
    if isinstance(self.sep, oracle.OracleIRM):
      return self.sep.separate_oracle(mixes, sources)
    return self._to_data(self.sep.separate(self._to_model(mixes)), length)

  def long(self, mix, sources):
    """mix [T], sources [N, T] -> estimates [N, T]; stereo: mix [T, C], sources [N, T, C] -> [N, T, C] (the
    channels go to the separator together: Separator.separate_channels)."""
    from vsep_tf.separators import oracle  # pylint: disable=import-outside-toplevel
    mix = np.asarray(mix, np.float32)
    if mix.ndim == 2:
      if isinstance(self.sep, oracle.OracleIRM):  # the oracle masks each channel from its own true sources
        return np.stack([self.sep.separate_oracle_long(mix[:, c], sources[..., c]) for c in range(mix.shape[1])],
                        axis=-1)
      x = self._to_model(mix)
      est = np.concatenate(list(self.sep.separate_stream([x], x.shape[0], batch_size=self.batch_size)), axis=1)
      return np.moveaxis(self._to_data(np.moveaxis(est, -1, 0), mix.shape[0]), 0, -1)  # [N, T, C]
    if isinstance(self.sep, oracle.OracleIRM):
      return self.sep.separate_oracle_long(mix, sources)
    return self._to_data(self.sep.separate_long(self._to_model(mix), batch_size=self.batch_size), mix.shape[-1])


# ---------------------------------------------------------------------------------------------------------
# The evaluation loop
# ---------------------------------------------------------------------------------------------------------


# BLAS threads per scoring worker. museval's filter solves are small dense problems: one OpenBLAS thread per
# process runs them about 3x faster than OpenBLAS's default threading on this 2-core machine (measured: 1.0 s
# vs 3.0 s per toy item), and several workers then use the cores without oversubscribing them.
_WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _scoring_pool(num_workers: int):
  """A spawn-context Pool whose workers start with single-threaded BLAS (unless the user set these)."""
  saved = {k: os.environ.get(k) for k in _WORKER_ENV}
  try:
    for k, v in _WORKER_ENV.items():
      os.environ.setdefault(k, v)
    return multiprocessing.get_context("spawn").Pool(num_workers)
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


class _Inline:
  """A stand-in for multiprocessing's AsyncResult when scoring in this process."""

  def __init__(self, value):
    self.value = value

  def get(self):
    return self.value


def relative_energy_db(estimates, reference, names) -> Dict[str, float]:
  """{name: 10 log10(sum est_k^2 / sum reference^2)}: estimates [K, T(, C)], reference [T(, C)] (-inf for a
  silent estimate is reported as -200 dB, strict JSON)."""
  ref = float(np.sum(np.square(np.asarray(reference, np.float64))))
  out = {}
  for name, est in zip(names, estimates):
    energy = float(np.sum(np.square(np.asarray(est, np.float64))))
    out[name] = max(10.0 * math.log10(max(energy, 1e-30) / max(ref, 1e-30)), -200.0)
  return out


def _track_name_safe(name: str) -> str:
  return "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name) or "track"


def evaluate(opts: EvalOptions, method: Optional[str] = None, model_dir: Optional[str] = None, separator=None,
             per_track_dir: Optional[str] = None, write_audio_dir: Optional[str] = None,
             verbose: int = 1, model_flags=(), model_sources=None, extra_priors=None, quality: str = "best") -> Dict:
  """Scores one separator on the dataset of `opts`. Returns the result dict (the JSON of the tool).

  Exactly one of `model_dir` (a trained model), `method` (a baseline: 'oracle_irm', 'mixture') or
  `separator` (any vsep_tf.separators.Separator) says what to evaluate.

  Priors compose: opts.sources mixes and scores only those stems; the model separates with the priors of
  `model_sources` (default: opts.sources; ['all']: all of its classes) plus `extra_priors` {name: prior dir}.
  Classes the separator has beyond the mixed stems ('spare', e.g. 4 priors on a trio) are not scored; the
  energy of each one's estimate relative to the mix (the SUM of the mixed stems), in dB, is reported per
  track and over tracks (result['spare']): a spare class should come out near silent.
  """
  t_start = time.perf_counter()
  opts.validate()
  if sum(x is not None and x != "" for x in (method, model_dir, separator)) != 1:
    raise ValueError("evaluate exactly one of: --model_dir, --method (oracle_irm|mixture), a separator")
  if method is not None and method not in BASELINES:
    raise ValueError(f"unknown --method={method!r}; baselines are {BASELINES} (models: --model_dir)")
  if model_dir:
    check_model_dir(model_dir)
  dataset = build_dataset(opts)
  total = num_tracks(dataset, opts)
  if total == 0:
    raise ValueError(f"no tracks to evaluate in split {opts.split!r} of {dataset!r}")
  sep = separator if separator is not None else make_separator(method, model_dir, dataset, opts, model_flags,
                                                               model_sources, extra_priors, quality)
  adapter = _Adapter(sep, dataset, opts.batch_size, scored_sources(dataset, opts))
  names, spare = adapter.names, adapter.spare
  rate = int(dataset.sample_rate)
  logging.info("evaluating %s on %s/%s (%s tracks, sources %s, %d Hz, mix=%s)", sep.method, opts.dataset,
               opts.split, total, names, rate, dataset.mix)

  import keras  # pylint: disable=import-outside-toplevel
  progbar = keras.utils.Progbar(total, unit_name="track", verbose=verbose)
  pool = _scoring_pool(opts.num_workers) if opts.num_workers > 0 else None
  pending: List[Tuple[str, object, Dict, float, float]] = []
  per_track: List[Dict] = []
  t_sep = 0.0
  audio_seconds = 0.0
  done = 0

  spare_db: Dict[str, Dict[str, float]] = {}  # track -> spare class -> energy relative to the mix (dB)

  def submit(name, mix, sources, est, seconds):
    nonlocal audio_seconds
    audio_seconds += mix.shape[0] / rate
    if spare:
      spare_db[name] = relative_energy_db(est[len(names):], sources.sum(axis=0), spare)
      est = est[:len(names)]
    si = bsseval.si_sdr_scores(sources, est, mix)
    args = (sources.astype(np.float64), est.astype(np.float64), rate, opts.win_seconds, opts.hop_seconds)
    job = (pool.apply_async(bsseval.museval_worker, args) if pool is not None
           else _Inline(bsseval.museval_worker(*args)))
    pending.append((name, job, si, seconds, mix.shape[0] / rate))
    if write_audio_dir:
      _write_estimates(write_audio_dir, name, est, names, rate)

  def collect(block_until: int):
    """Takes finished scores in order until at most `block_until` are pending."""
    nonlocal done
    while len(pending) > block_until:
      name, job, si, seconds, duration = pending.pop(0)
      bss = job.get()
      scores = {m: np.asarray(bss[m]) for m in bsseval.BSS_METRICS}
      scores.update(si)
      record = {"track": name, "sources": bsseval.as_source_dict(scores, names), "separation_seconds": seconds,
                "duration_seconds": duration, **({"spare_energy_db": spare_db[name]} if spare else {}),
                "frames": {n: {m: bss[f"{m}_frames"][k] for m in bsseval.BSS_METRICS} for k, n in enumerate(names)}}
      per_track.append(record)
      if per_track_dir:
        config_lib.atomic_write_text(os.path.join(per_track_dir, _track_name_safe(name) + ".json"),
                                     json.dumps(bsseval.json_safe(record), indent=1) + "\n")
      done += 1
      sdr = np.nanmean([record["sources"][n]["sdr"] for n in names])
      si_sdr = np.nanmean([record["sources"][n]["si_sdr"] for n in names])
      progbar.update(done, [("sdr", sdr), ("si_sdr", si_sdr)])

  max_pending = max(2 * opts.num_workers, 1)
  try:
    tracks = iter_tracks(dataset, opts)
    if opts.dataset == "toy":  # equal-length excerpts: batches through separate()
      while True:
        group = [t for _, t in zip(range(opts.batch_size), tracks)]
        if not group:
          break
        mixes = np.stack([g[1] for g in group])
        sources = np.stack([g[2] for g in group])
        t0 = time.perf_counter()
        est = adapter.batch(mixes, sources)
        dt = time.perf_counter() - t0
        t_sep += dt
        for (name, mix, src), e in zip(group, est):
          submit(name, mix, src, np.asarray(e, np.float32), dt / len(group))
        collect(max_pending)
    else:  # whole tracks through separate_long()
      for name, mix, sources in tracks:
        t0 = time.perf_counter()
        est = adapter.long(mix, sources)
        dt = time.perf_counter() - t0
        t_sep += dt
        submit(name, mix, sources, np.asarray(est, np.float32), dt)
        collect(max_pending)
    collect(0)
  finally:
    if pool is not None:
      pool.terminate()
      pool.join()
  if not per_track:
    raise ValueError(f"no tracks to evaluate in split {opts.split!r} of {dataset!r}")

  agg = bsseval.aggregate([t["sources"] for t in per_track], names)
  seconds = time.perf_counter() - t_start
  result = {
      "sources": agg["sources"],
      "overall": agg["overall"],
      "overall_mean": agg["overall_mean"],
      "method": sep.method,
      "dataset": opts.dataset,
      "split": opts.split,
      "num_tracks": len(per_track),
      "model_dir": os.path.abspath(model_dir) if model_dir else None,
      "source_names": names,
      "sample_rate": rate,
      "mix": dataset.mix,
      "model_sample_rate": int(sep.sample_rate),
      "resampled": adapter.resampled,
      "mix_gain": adapter.gain,
      "separator": sep.describe(),
      "tracks": [t["track"] for t in per_track],
      "per_track": {t["track"]: t["sources"] for t in per_track},
      "separator_sources": list(sep.source_names),
      "spare": ({n: {"energy_db_median": float(np.median([spare_db[t][n] for t in spare_db])),
                     "energy_db_mean": float(np.mean([spare_db[t][n] for t in spare_db])),
                     "energy_db_max": float(np.max([spare_db[t][n] for t in spare_db])),
                     "per_track": {t: spare_db[t][n] for t in spare_db}} for n in spare} if spare else {}),
      "aggregation": ("bsseval: museval v4, win = hop = %g s, median over frames (NaN frames left out); "
                      "si_sdr over the whole track; median over tracks per source; overall = median over "
                      "sources, overall_mean = mean over sources" % opts.win_seconds),
      "audio_seconds": audio_seconds,
      "seconds": {"total": seconds, "separation": t_sep},
      "separation_realtime_factor": t_sep / audio_seconds if audio_seconds else None,
      "options": dataclasses.asdict(opts),
  }
  if opts.dataset == "toy":
    result["toy_seed"] = opts.toy_seed
  if opts.dataset == "stems":
    result["data_root"] = os.path.abspath(opts.data_root)
  if opts.dataset == "musdb":
    result["musdb_root"] = os.path.abspath(opts.musdb_root)
  return bsseval.json_safe(result)


def _write_estimates(directory, track, estimates, names, rate):
  from vsep_tf import audio  # pylint: disable=import-outside-toplevel
  out = os.path.join(directory, _track_name_safe(track))
  os.makedirs(out, exist_ok=True)
  for k, name in enumerate(names):
    audio.write_audio(os.path.join(out, f"{name}.wav"), np.asarray(estimates[k], np.float32), rate,
                      subtype="FLOAT", overwrite=True)


def write_results(result: Dict, path: str):
  """The result JSON, atomically (strict JSON: NaN written as null)."""
  config_lib.atomic_write_text(path, json.dumps(bsseval.json_safe(result), indent=1, allow_nan=False) + "\n")


def default_per_track_dir(output_json: str) -> str:
  base = output_json[:-5] if output_json.endswith(".json") else output_json
  return base + ".tracks"


def report(result: Dict, output_json: Optional[str] = None):
  """Writes `result` to output_json (if given) and prints its summary table and times (the tools' last step)."""
  if output_json:
    write_results(result, output_json)
  print(summary_table(result))
  print(f"{result['num_tracks']} tracks, {result['audio_seconds']:.1f} s of audio, separation "
        f"{result['seconds']['separation']:.1f} s, total {result['seconds']['total']:.1f} s"
        + (f"; results in {output_json}" if output_json else ""))


def summary_table(result: Dict) -> str:
  """The per-source table of a result, with the overall row, and a header line."""
  head = (f"{result['method']} on {result['dataset']}/{result.get('split', '?')}: {result['num_tracks']} tracks"
          + (f", model {result['model_dir']}" if result.get("model_dir") else ""))
  nan = math.nan
  sources = {n: {m: (nan if v is None else v) for m, v in d.items()} for n, d in result["sources"].items()}
  overall = {m: (nan if v is None else v) for m, v in result["overall"].items()}
  spare = "".join(f"\nspare {n} (not in the mix): estimate energy {d['energy_db_median']:+.1f} dB re the mix "
                  f"(median over tracks; max {d['energy_db_max']:+.1f} dB)" for n, d in result.get("spare", {}).items())
  return head + "\n" + bsseval.format_table(sources, overall) + spare


# ---------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------


def define_data_flags(fv: flags.FlagValues):
  """Flags shared with tools.compare_separators: the data and the scoring."""
  d = EvalOptions()
  flags.DEFINE_enum("dataset", None, list(DATASETS), "Dataset family (default: the model's).", flag_values=fv)
  flags.DEFINE_string("split", d.split, "Split to evaluate.", flag_values=fv)
  flags.DEFINE_integer("toy_seed", d.toy_seed, "Toy data seed of the evaluation items (not the training seed).",
                       flag_values=fv)
  flags.DEFINE_string("data_root", None, "Stem folder root for --dataset=stems.", flag_values=fv)
  flags.DEFINE_integer("valid_tracks", d.valid_tracks, "--dataset=stems: train tracks held out as split 'valid' "
                       "(0: the model's own --valid_tracks).", flag_values=fv)
  flags.DEFINE_string("musdb_root", None, "MUSDB18(-HQ) root for --dataset=musdb.", flag_values=fv)
  flags.DEFINE_boolean("musdb_is_wav", d.musdb_is_wav, "MUSDB18-HQ (wav) rather than .stem.mp4.", flag_values=fv)
  flags.DEFINE_integer("sample_rate", d.sample_rate, "Data rate to score at (0: the data's own).", flag_values=fv)
  flags.DEFINE_enum("mix", d.mix, ["", "sum", "mean"], "Mixing function of the data ('': the dataset's).",
                    flag_values=fv)
  flags.DEFINE_integer("num_examples", d.num_examples, "Tracks / toy items to evaluate (0: toy 40, else all).",
                       flag_values=fv)
  flags.DEFINE_float("eq_tilt_db_per_octave", d.eq_tilt_db_per_octave, "Robustness to timbre: pass every source "
                     "(and so the mix) through a spectral tilt of this many dB per octave around 1 kHz (0: off).",
                     flag_values=fv)
  flags.DEFINE_float("max_seconds", d.max_seconds, "Crop every track to its first seconds (0: whole).",
                     flag_values=fv)
  flags.DEFINE_integer("batch_size", d.batch_size, "Toy excerpts per separate() call; chunks per batch for long "
                       "tracks.", flag_values=fv)
  flags.DEFINE_integer("num_workers", d.num_workers, "Processes scoring BSSEval (0: in this process).",
                       flag_values=fv)
  flags.DEFINE_integer("oracle_fft", d.oracle_fft, "STFT size of --method=oracle_irm (0: 4096 toy, else the power "
                       "of two >= 64 ms: 1024 at 16 kHz).",
                       flag_values=fv)
  flags.DEFINE_integer("oracle_hop", d.oracle_hop, "STFT hop of oracle_irm (0: oracle_fft // 4).", flag_values=fv)
  flags.DEFINE_float("oracle_power", d.oracle_power, "Mask exponent of oracle_irm (1: magnitude, 2: Wiener).",
                     flag_values=fv)
  flags.DEFINE_float("win_seconds", d.win_seconds, "BSSEval window (SiSEC: 1 s).", flag_values=fv)
  flags.DEFINE_float("hop_seconds", d.hop_seconds, "BSSEval hop (SiSEC: 1 s).", flag_values=fv)
  flags.DEFINE_list("sources", list(d.sources), "Mix and score only these stems of every track (e.g. a trio: "
                    "--sources=violin,clarinet,tenor_sax; mixed by the data's mixing function, the mixture file "
                    "unused). With --model_dir the model separates with these priors only, unless "
                    "--model_sources. Empty: every stem.", flag_values=fv)
  flags.DEFINE_boolean("stereo", d.stereo, "Score 2 channels as 2 channels (stems, musdb): the separator gets both "
                       "channels together (Separator.separate_channels) and museval scores [N, T, 2].",
                       flag_values=fv)


def define_flags(fv: flags.FlagValues) -> flags.FlagValues:
  """Every flag of the tool on `fv`."""
  define_data_flags(fv)
  flags.DEFINE_string("model_dir", None, "A trained model directory (vsep_tf.train).", flag_values=fv)
  flags.DEFINE_enum("method", None, list(BASELINES), "A baseline instead of --model_dir.", flag_values=fv)
  flags.DEFINE_multi_string("model_override", [], "'--name=value' replacing a flag saved in the model directory "
                            "(as vsep_tf.separate; e.g. --model_override=--langevin_steps_per_level=20).",
                            flag_values=fv)
  flags.DEFINE_list("model_sources", [], "The priors the model separates with (default: --sources, or all): e.g. "
                    "--sources=violin,clarinet,tenor_sax --model_sources=all scores a trio separated by all four "
                    "priors and reports the spare class's estimate energy re the mix (dB).", flag_values=fv)
  cli.define_compose_flags(fv, sources=False)
  cli.define_quality_flag(fv)
  flags.DEFINE_string("output_json", None, "Write the results here.", flag_values=fv)
  flags.DEFINE_string("per_track_dir", None, "Per-track JSONs (default: <output_json>.tracks/).", flag_values=fv)
  flags.DEFINE_string("write_audio_dir", None, "Write the estimates as <dir>/<track>/<source>.wav.",
                      flag_values=fv)
  return fv


def options_from_flags(fv, model_dir: Optional[str] = None) -> EvalOptions:
  """EvalOptions from the data flags; with no --dataset, the model's own dataset (data_root, musdb_root)."""
  kwargs = {f.name: fv[f.name].value for f in dataclasses.fields(EvalOptions) if f.name in fv}
  kwargs["sources"] = tuple(kwargs.get("sources") or ())
  if kwargs.get("dataset") is None:
    if not model_dir:
      raise ValueError("--dataset is required with --method (toy, stems or musdb)")
    check_model_dir(model_dir)
    kwargs["dataset"] = model_dir_lib.load_config(model_dir).dataset
    run_dir = os.path.isfile(os.path.join(model_dir, run_flags.CONFIG_FILENAME))
    for name in ("data_root", "musdb_root"):
      if not kwargs.get(name) and run_dir:  # a training run names its data; a shipped model does not
        kwargs[name] = run_flags.load_run_config(model_dir)[name]
    logging.info("no --dataset: using the model's (%s)", kwargs["dataset"])
  for name in ("data_root", "musdb_root"):
    kwargs.setdefault(name, None)
  if not kwargs.get("valid_tracks") and model_dir and os.path.isdir(model_dir):
    with contextlib.suppress(model_dir_lib.ModelDirError):
      kwargs["valid_tracks"] = model_dir_lib.load_config(model_dir).valid_tracks  # its held-out tracks, not others
  return EvalOptions(**kwargs)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  fv = flags.FLAGS
  try:
    if bool(fv.model_dir) == bool(fv.method):
      raise ValueError("pass exactly one of --model_dir (a trained model) and --method (oracle_irm|mixture)")
    opts = options_from_flags(fv, fv.model_dir)
    if fv.output_json and os.path.isdir(fv.output_json):
      raise ValueError(f"--output_json={fv.output_json} is a directory")
    per_track_dir = fv.per_track_dir or (default_per_track_dir(fv.output_json) if fv.output_json else None)
    result = evaluate(opts, method=fv.method, model_dir=fv.model_dir, per_track_dir=per_track_dir,
                      write_audio_dir=fv.write_audio_dir, model_flags=fv.model_override,
                      model_sources=fv.model_sources or None, extra_priors=cli.parse_extra_priors(fv.extra_priors),
                      quality=fv.quality)
  except (ValueError, FileNotFoundError, NotADirectoryError, flags.Error) as e:
    print(f"vsep_tf.evaluate: error: {e}", file=sys.stderr)
    return 1
  result["flags"] = {name: fv[name].value for name in tool_flag_names()}
  report(result, fv.output_json)
  return 0


def tool_flag_names() -> List[str]:
  """The names of this tool's own flags (not absl's)."""
  return sorted(define_flags(flags.FlagValues()))


def run():
  define_flags(flags.FLAGS)
  app.run(main)


if __name__ == "__main__":
  run()
