"""Separation scores: BSSEval v4 (museval, as SiSEC / MUSDB18) and SI-SDR / SI-SDR improvement.

Per track and source k (references s_k, estimates s^_k, mixture m):

  sdr, sir, sar, isr  museval.evaluate(mode='v4') on windows of `win_seconds` every `hop_seconds` (1 s, as
                      SiSEC 2018), distortion filters fitted on the whole track; then the MEDIAN OVER FRAMES,
                      frames that are NaN left out (museval gives NaN to every source of a frame in which some
                      reference or estimate is all zero, e.g. an instrument that rests).
  si_sdr              vsep_tf.signal.si_sdr over the whole track (scale invariant, zero-mean).
  si_sdri             si_sdr(s_k, s^_k) - si_sdr(s_k, m): the improvement over handing back the mixture.

Aggregation over a set of tracks (`aggregate`): median over tracks per source and metric (NaN tracks left
out), then 'overall' = median over sources (the MUSDB18 convention); 'overall_mean' is the mean over sources,
the figure REFERENCES.md quotes for the chorales.

bss_eval_images (what SiSEC and museval use) scores est - s with no gain for SDR, so the scale of an estimate
matters there (not for SI-SDR). On perfectly periodic signals (the toy tones) its decomposition into
spatial / interference / artefact errors is ill-conditioned, and a frame's SDR can exceed its SIR and SAR:
report SI-SDR as the headline on toy data.

museval wants [N, T, channels]; mono [N, T] gets a channel axis. `museval_scores` imports only numpy and
museval (no TensorFlow), so it can run in a spawned worker process cheaply; `si_sdr_scores` imports
TensorFlow lazily for the same reason.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

BSS_METRICS = ("sdr", "sir", "sar", "isr")
SI_METRICS = ("si_sdr", "si_sdri")
METRICS = BSS_METRICS + SI_METRICS


def _as_nt_c(x, what: str) -> np.ndarray:
  """[N, T] or [N, T, C] -> float64 [N, T, C]."""
  x = np.asarray(x, np.float64)
  if x.ndim == 2:
    x = x[..., None]
  if x.ndim != 3:
    raise ValueError(f"{what} must be [N, T] or [N, T, channels], got shape {x.shape}")
  return x


def _check_pair(references, estimates):
  if references.shape != estimates.shape:
    raise ValueError(f"references {references.shape} and estimates {estimates.shape} must have the same shape")
  if references.shape[1] == 0:
    raise ValueError("cannot score empty signals (0 samples)")
  if not (np.isfinite(references).all() and np.isfinite(estimates).all()):
    raise ValueError("references and estimates must be finite (NaN/Inf found)")


def frame_median(values) -> np.ndarray:
  """Median over the last axis (frames), NaN frames left out; NaN where every frame is NaN. [..., F] -> [...]."""
  values = np.asarray(values, np.float64)
  out = np.full(values.shape[:-1], np.nan)
  valid = ~np.isnan(values)
  for idx in np.ndindex(values.shape[:-1]):
    v = values[idx][valid[idx]]
    if v.size:
      out[idx] = np.median(v)
  return out


def museval_frames(references, estimates, sample_rate: int, win_seconds: float = 1.0,
                   hop_seconds: float = 1.0) -> Dict[str, np.ndarray]:
  """Framewise BSSEval v4: {'sdr'|'sir'|'sar'|'isr': float64 [N, frames]} (NaN for silent frames).

  references, estimates: [N, T] or [N, T, C], same shape, at `sample_rate`.
  """
  import museval  # pylint: disable=import-outside-toplevel
  refs, ests = _as_nt_c(references, "references"), _as_nt_c(estimates, "estimates")
  _check_pair(refs, ests)
  win = max(int(round(win_seconds * sample_rate)), 1)
  hop = max(int(round(hop_seconds * sample_rate)), 1)
  sdr, isr, sir, sar = museval.evaluate(refs, ests, win=win, hop=hop, mode="v4", padding=True)
  return {"sdr": np.asarray(sdr), "sir": np.asarray(sir), "sar": np.asarray(sar), "isr": np.asarray(isr)}


def museval_scores(references, estimates, sample_rate: int, win_seconds: float = 1.0, hop_seconds: float = 1.0,
                   keep_frames: bool = False) -> Dict[str, np.ndarray]:
  """BSSEval v4 per source, median over frames: {'sdr'|'sir'|'sar'|'isr': float64 [N]}.

  keep_frames: also return the framewise values as '<metric>_frames' [N, frames].
  """
  frames = museval_frames(references, estimates, sample_rate, win_seconds, hop_seconds)
  out = {m: frame_median(frames[m]) for m in BSS_METRICS}
  if keep_frames:
    out.update({f"{m}_frames": frames[m] for m in BSS_METRICS})
  return out


def museval_worker(references, estimates, sample_rate: int, win_seconds: float = 1.0,
                   hop_seconds: float = 1.0) -> Dict[str, list]:
  """museval_scores with the frames, as plain lists: the task a scoring worker process runs."""
  scores = museval_scores(references, estimates, sample_rate, win_seconds, hop_seconds, keep_frames=True)
  return {k: np.asarray(v).tolist() for k, v in scores.items()}


def si_sdr_scores(references, estimates, mixture) -> Dict[str, np.ndarray]:
  """{'si_sdr': [N], 'si_sdri': [N]} in dB, over the whole signal (vsep_tf.signal.si_sdr: one definition).

  references, estimates: [N, T] or [N, T, C]; mixture [T] or [T, C]. Multichannel signals are scored per
  channel and averaged over channels.
  """
  from vsep_tf import signal as signal_lib  # pylint: disable=import-outside-toplevel
  refs, ests = _as_nt_c(references, "references"), _as_nt_c(estimates, "estimates")
  _check_pair(refs, ests)
  mix = np.asarray(mixture, np.float64)
  mix = mix[:, None] if mix.ndim == 1 else mix
  if mix.shape != refs.shape[1:]:
    raise ValueError(f"mixture {np.shape(mixture)} does not match the references {refs.shape[1:]} (T[, C])")
  # time last: [N, C, T]; the mixture broadcasts over sources
  refs_t, ests_t = np.swapaxes(refs, 1, 2), np.swapaxes(ests, 1, 2)
  mix_t = np.broadcast_to(mix.T[None], refs_t.shape)
  si = np.asarray(signal_lib.si_sdr(refs_t.astype(np.float32), ests_t.astype(np.float32)), np.float64)
  si_mix = np.asarray(signal_lib.si_sdr(refs_t.astype(np.float32), mix_t.astype(np.float32)), np.float64)
  return {"si_sdr": si.mean(axis=1), "si_sdri": (si - si_mix).mean(axis=1)}


def as_source_dict(scores: Dict[str, np.ndarray], source_names: Sequence[str]) -> Dict[str, Dict[str, float]]:
  """{'metric': [N]} -> {source: {metric: float}} (only the METRICS present)."""
  return {name: {m: float(scores[m][k]) for m in METRICS if m in scores} for k, name in enumerate(source_names)}


def score_track(references, estimates, mixture, sample_rate: int, source_names: Sequence[str],
                win_seconds: float = 1.0, hop_seconds: float = 1.0) -> Dict[str, Dict[str, float]]:
  """Every metric of one track: {source: {'sdr','sir','sar','isr','si_sdr','si_sdri': dB}}.

  references, estimates: [N, T] (or [N, T, C]) at `sample_rate`, in `source_names` order; mixture [T(, C)].
  """
  if len(source_names) != np.shape(references)[0]:
    raise ValueError(f"{len(source_names)} source names for {np.shape(references)[0]} references")
  scores = dict(museval_scores(references, estimates, sample_rate, win_seconds, hop_seconds))
  scores.update(si_sdr_scores(references, estimates, mixture))
  return as_source_dict(scores, source_names)


def _median(values: Iterable[Optional[float]]) -> float:
  v = np.array([np.nan if x is None else x for x in values], np.float64)
  v = v[~np.isnan(v)]
  return float(np.median(v)) if v.size else math.nan


def aggregate(per_track: List[Dict[str, Dict[str, float]]], source_names: Sequence[str],
              metrics: Sequence[str] = METRICS) -> Dict[str, Dict]:
  """Median over tracks per source, then over sources.

  per_track: one {source: {metric: value}} per track. Returns {'sources': {source: {metric: median over
  tracks}}, 'overall': {metric: median over sources}, 'overall_mean': {metric: mean over sources}}.
  NaN (or None) values are left out of every median; a metric with no value at all is NaN.
  """
  if not per_track:
    raise ValueError("no tracks to aggregate")
  sources = {name: {m: _median(t.get(name, {}).get(m, math.nan) for t in per_track) for m in metrics}
             for name in source_names}
  overall = {m: _median(sources[n][m] for n in source_names) for m in metrics}
  means = {}
  for m in metrics:
    v = np.array([sources[n][m] for n in source_names], np.float64)
    v = v[~np.isnan(v)]
    means[m] = float(v.mean()) if v.size else math.nan
  return {"sources": sources, "overall": overall, "overall_mean": means}


def json_safe(obj):
  """NaN/Inf -> None and numpy scalars/arrays -> Python, recursively (strict JSON has no NaN)."""
  if isinstance(obj, dict):
    return {str(k): json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return json_safe(obj.tolist())
  if isinstance(obj, (np.floating, float)):
    f = float(obj)
    return f if math.isfinite(f) else None
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


def format_table(sources: Dict[str, Dict[str, float]], overall: Optional[Dict[str, float]] = None,
                 metrics: Sequence[str] = METRICS) -> str:
  """A Markdown table: one row per source (and 'overall'), one column per metric, dB with 2 decimals."""
  def cell(v):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"
  lines = ["| source | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
  for name, values in sources.items():
    lines.append(f"| {name} | " + " | ".join(cell(values.get(m)) for m in metrics) + " |")
  if overall is not None:
    lines.append("| **overall** | " + " | ".join(cell(overall.get(m)) for m in metrics) + " |")
  return "\n".join(lines)
