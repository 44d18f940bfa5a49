r"""Per-class NMF dictionaries: the classical baseline for separation with priors learned from solo audio.

Training (`NMFTrainer`, `python -m vsep_tf.train --job=nmf --flagfile=configs/chorales.flags --model_dir=DIR`):
for every source class k, the magnitude STFT V_k [bins, frames] of that class's SOLO train audio (the train
tracks' stems, never a mix: the same supervision as the deep priors) is factorised V_k ~ W_k H by KL-NMF with
multiplicative updates (Lee & Seung 2001):

  H <- H * (W^T (V / WH)) / (W^T 1),    W <- W * ((V / WH) H^T) / (1 H^T),    columns of W scaled to sum 1.

Frames more than SILENCE_DB below the loudest frame of the class are left out (rests), and at most
max_train_frames frames (a seeded random subset) are used, which bounds the cost.

Separation (`NMFSeparator`): the dictionaries are concatenated, W = [W_1 .. W_N], and only the activations are
fitted to the mixture's magnitude STFT |X| (same KL updates, W fixed). Source k's model is V_k = W_k H_k and
its estimate is a power-p Wiener mask on the mixture STFT, p = 2 by default:

  s^_k = ISTFT( V_k^p / sum_j V_j^p * X ),   X = STFT(m_sum)

with m_sum the mixture as a sum (a 'mean' mix times N), so estimates are on the sources' scale and add up to
m_sum. REFERENCES.md: 64 atoms per instrument, STFT 1024 / 256, power-2 masks reach about 7.7 dB SDR on the
chorales test set (violin 8.0, clarinet 11.0, tenor sax 7.0, bassoon 5.0).

Hyperparameters are the keyword arguments of `nmf_hyperparameters` (defaults below: the REFERENCES recipe for
16 kHz audio). The flags files have no NMF section yet, so the trainer uses these defaults unless
'nmf.<name>' flags exist (registering `nmf_hyperparameters` in config.factory_families() generates them)
or keyword overrides are passed to NMFTrainer. Everything needed to separate (dictionaries, source names,
rate, mix, STFT and fit settings) is saved in <model_dir>/nmf.npz, so a model directory is self-contained.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import time
from typing import Dict, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from vsep_tf import signal as signal_lib
from vsep_tf.data import mixing
from vsep_tf.separators.base import Separator
from vsep_tf.data.solo import solo_frames
from vsep_tf.separators.masks import to_sum_mix

NMF_FILENAME = "nmf.npz"
EPS = 1e-10
# Multiplicative updates drive unused entries of W and H towards 0 geometrically; in float32 they reach
# denormal numbers, whose arithmetic is 10-100x slower on x86. Entries are floored here (far above the
# denormal range, far below any value that matters).
FLOOR = 1e-15


def nmf_hyperparameters(num_atoms: int = 64, n_fft: int = 1024, hop: int = 256, train_iterations: int = 200,
                        separate_iterations: int = 100, mask_power: float = 2.0,
                        max_train_seconds: float = 1200.0, max_train_frames: int = 40000) -> Dict:
  """The NMF settings (and their defaults), as a factory whose keyword arguments can become 'nmf.*' flags.

  num_atoms: dictionary atoms per class. n_fft / hop: STFT (1024 / 256 suits 16 kHz; low-pitched data
  at this rate wants longer windows). train_iterations / separate_iterations: multiplicative-update
  iterations for the dictionaries / the activations on a mix. mask_power: p of the Wiener masks.
  max_train_seconds: solo audio read per class (the train tracks in order until this much). max_train_frames:
  STFT frames per class used to learn its dictionary (a seeded random subset beyond that).
  """
  return dict(num_atoms=int(num_atoms), n_fft=int(n_fft), hop=int(hop), train_iterations=int(train_iterations),
              separate_iterations=int(separate_iterations), mask_power=float(mask_power),
              max_train_seconds=float(max_train_seconds), max_train_frames=int(max_train_frames))


# ---------------------------------------------------------------------------------------------------------
# KL-NMF (numpy, float32)
# ---------------------------------------------------------------------------------------------------------


def kl_divergence(v, wh) -> float:
  """Generalised KL divergence D(V | WH) = sum V log(V / WH) - V + WH, per element (mean)."""
  v = np.asarray(v, np.float64)
  wh = np.asarray(wh, np.float64) + EPS
  return float(np.mean(v * np.log((v + EPS) / wh) - v + wh))


def _normalise(w, h):
  """Scales W's columns to sum 1 and H's rows by the inverse (WH unchanged)."""
  scale = w.sum(axis=0) + EPS
  return w / scale, h * scale[:, None]


_SPEC = tf.TensorSpec([None, None], tf.float32)


@tf.function(input_signature=[_SPEC, _SPEC, _SPEC, tf.TensorSpec([], tf.int32)])
def _update_h(v, w, h, iterations):
  """`iterations` KL multiplicative updates of H with W fixed."""
  w_colsum = tf.reduce_sum(w, axis=0)[:, None] + EPS
  for _ in tf.range(iterations):
    ratio = v / (tf.matmul(w, h) + EPS)
    h = tf.maximum(h * tf.matmul(w, ratio, transpose_a=True) / w_colsum, FLOOR)
  return h


@tf.function(input_signature=[_SPEC, _SPEC, _SPEC, tf.TensorSpec([], tf.int32)])
def _update_wh(v, w, h, iterations):
  """`iterations` KL multiplicative updates of H then W, W's columns renormalised to sum 1 each time."""
  for _ in tf.range(iterations):
    ratio = v / (tf.matmul(w, h) + EPS)
    h = tf.maximum(h * tf.matmul(w, ratio, transpose_a=True) / (tf.reduce_sum(w, axis=0)[:, None] + EPS), FLOOR)
    ratio = v / (tf.matmul(w, h) + EPS)
    w = tf.maximum(w * tf.matmul(ratio, h, transpose_b=True) / (tf.reduce_sum(h, axis=1)[None, :] + EPS), FLOOR)
    scale = tf.reduce_sum(w, axis=0)
    w, h = w / scale, h * scale[:, None]
  return w, h


def kl_nmf(v, num_atoms: Optional[int] = None, iterations: int = 200, w=None, seed: int = 0):
  """KL-NMF V ~ W H by multiplicative updates. v: [bins, frames] >= 0.

  w: a fixed dictionary [bins, K] (only H is fitted), or None to learn one of `num_atoms` atoms.
  Returns (W float32 [bins, K] with columns summing to 1 when learned, H float32 [K, frames], final KL per
  element). The loop runs in a tf.function (TF's matmuls and thread pool: about 3x faster than numpy with
  OpenBLAS on this 2-core machine); initialisation is numpy, seeded.
  """
  v = np.asarray(v, np.float32)
  if v.ndim != 2 or v.size == 0:
    raise ValueError(f"v must be a non-empty [bins, frames] array, got shape {v.shape}")
  if (v < 0).any() or not np.isfinite(v).all():
    raise ValueError("v must be finite and non-negative")
  rng = np.random.default_rng(seed)
  learn = w is None
  if learn:
    if not num_atoms or num_atoms <= 0:
      raise ValueError(f"num_atoms must be positive, got {num_atoms}")
    w = rng.uniform(0.1, 1.0, size=(v.shape[0], num_atoms)).astype(np.float32)
  else:
    w = np.maximum(np.asarray(w, np.float32), FLOOR)
    if w.ndim != 2 or w.shape[0] != v.shape[0]:
      raise ValueError(f"dictionary {w.shape} does not match spectrogram bins {v.shape[0]}")
  scale = float(v.mean()) + EPS
  h = rng.uniform(0.1, 1.0, size=(w.shape[1], v.shape[1])).astype(np.float32) * np.float32(scale)
  if learn:
    w, h = _normalise(w, h)
    w, h = _update_wh(v, w, h, tf.constant(int(iterations), tf.int32))
    w = w.numpy()
  else:
    h = _update_h(v, w, h, tf.constant(int(iterations), tf.int32))
  h = h.numpy()
  return w.astype(np.float32), h, kl_divergence(v, w @ h)


def learn_dictionaries(solo: Dict[str, Sequence[np.ndarray]], num_atoms: int = 64, n_fft: int = 1024,
                       hop: int = 256, iterations: int = 200, max_frames: int = 40000, seed: int = 0):
  """One KL-NMF dictionary per class from solo audio.

  solo: {class: [signal [T], ...]} (the order of the dict is the source order).
  Returns (dictionaries float32 [N, bins, num_atoms], {class: metrics dict}).
  """
  dictionaries, info = [], {}
  for k, (name, signals) in enumerate(solo.items()):
    t0 = time.perf_counter()
    v = solo_frames(signals, n_fft, hop)
    if v.shape[1] < num_atoms:
      raise ValueError(f"class {name!r}: only {v.shape[1]} non-silent STFT frames of solo audio, fewer than "
                       f"the {num_atoms} atoms to learn")
    total = v.shape[1]
    if total > max_frames:
      keep = np.sort(np.random.default_rng([seed, k]).choice(total, size=max_frames, replace=False))
      v = v[:, keep]
    w, _, kl = kl_nmf(v, num_atoms=num_atoms, iterations=iterations, seed=seed + 1000 * k)
    dictionaries.append(w)
    info[name] = {"frames": float(v.shape[1]), "frames_available": float(total), "kl": kl,
                  "seconds": time.perf_counter() - t0}
    logging.info("NMF %s: %d atoms from %d frames (of %d), KL %.4g per element, %.1f s", name, num_atoms,
                 v.shape[1], total, kl, info[name]["seconds"])
  return np.stack(dictionaries), info


# ---------------------------------------------------------------------------------------------------------
# The separator
# ---------------------------------------------------------------------------------------------------------


class NMFSeparator(Separator):
  """Separation with fixed per-class NMF dictionaries and power-p Wiener masks (module docstring).

  Args:
    dictionaries: float32 [N, bins, K], bins = n_fft // 2 + 1, in source_names order.
    source_names, sample_rate, mix: those of the training data.
    n_fft, hop: STFT; iterations: activation updates per mix; power: Wiener mask exponent.
  """

  method = "nmf"

  def __init__(self, dictionaries, source_names: Sequence[str], sample_rate: int, mix: str = "sum",
               n_fft: int = 1024, hop: int = 256, iterations: int = 100, power: float = 2.0, seed: int = 0):
    self.dictionaries = np.asarray(dictionaries, np.float32)
    self.source_names = tuple(source_names)
    self.sample_rate = int(sample_rate)
    self.mix = mixing.check_mix(mix)
    self.n_fft, self.hop = int(n_fft), int(hop)
    self.iterations = int(iterations)
    self.power = float(power)
    self.seed = int(seed)
    if self.dictionaries.ndim != 3 or self.dictionaries.shape[0] != len(self.source_names):
      raise ValueError(f"dictionaries must be [N={len(self.source_names)}, bins, atoms], got "
                       f"{self.dictionaries.shape}")
    if self.dictionaries.shape[1] != self.n_fft // 2 + 1:
      raise ValueError(f"dictionaries have {self.dictionaries.shape[1]} bins; n_fft={self.n_fft} needs "
                       f"{self.n_fft // 2 + 1}")
    if self.power <= 0:
      raise ValueError(f"power must be positive, got {power}")
    signal_lib.stft(tf.zeros([self.n_fft]), self.n_fft, self.hop)  # validates n_fft / hop
    self._w = np.concatenate(list(self.dictionaries), axis=1)  # [bins, N * K]

  @property
  def num_atoms(self) -> int:
    return int(self.dictionaries.shape[2])

  def source_models(self, magnitude) -> np.ndarray:
    """V_k = W_k H_k with H fitted to `magnitude` [bins, frames]: float32 [N, bins, frames]."""
    _, h, _ = kl_nmf(magnitude, w=self._w, iterations=self.iterations, seed=self.seed)
    k = self.num_atoms
    return np.stack([self.dictionaries[j] @ h[j * k:(j + 1) * k] for j in range(self.num_sources)])

  def separate(self, mix) -> tf.Tensor:
    """mix [batch, time] -> [batch, N, time] float32."""
    mix = tf.convert_to_tensor(mix, tf.float32)
    if mix.shape.rank != 2:
      raise ValueError(f"separate takes [batch, time], got shape {mix.shape}")
    length = tf.shape(mix)[-1]
    spec = signal_lib.stft(to_sum_mix(mix, self.mix, self.num_sources), self.n_fft, self.hop)  # [B, F, bins]
    mags = np.swapaxes(np.abs(spec.numpy()), -1, -2)  # [B, bins, frames]
    masks = []
    for b in range(mags.shape[0]):
      p = np.power(self.source_models(mags[b]).astype(np.float64), self.power)  # [N, bins, frames]
      total = p.sum(axis=0, keepdims=True)
      m = np.where(total > 0, p / np.maximum(total, 1e-30), 1.0 / self.num_sources)
      masks.append(np.swapaxes(m, -1, -2).astype(np.float32))  # [N, frames, bins]
    masked = tf.cast(np.stack(masks), tf.complex64) * spec[:, None]
    return signal_lib.istft(masked, self.n_fft, self.hop, length=length)

  def subset(self, names: Sequence[str]) -> "NMFSeparator":
    """The separator of only these classes' dictionaries, in this order (a mix of a subset of the classes)."""
    unknown = [n for n in names if n not in self.source_names]
    if unknown:
      raise ValueError(f"unknown source(s) {unknown}; available: {', '.join(self.source_names)}")
    index = [self.source_names.index(n) for n in names]
    return NMFSeparator(self.dictionaries[index], names, self.sample_rate, self.mix, n_fft=self.n_fft, hop=self.hop,
                        iterations=self.iterations, power=self.power, seed=self.seed)

  # --- persistence ---------------------------------------------------------------------------------------

  def save(self, path: str, extra: Optional[Dict[str, float]] = None):
    """Writes the separator to an .npz file atomically (temp file + os.replace)."""
    buf = io.BytesIO()
    np.savez(buf, dictionaries=self.dictionaries, source_names=np.array(self.source_names),
             sample_rate=self.sample_rate, mix=self.mix, n_fft=self.n_fft, hop=self.hop,
             iterations=self.iterations, power=self.power, seed=self.seed,
             metrics_json=np.array(json.dumps(extra or {}, sort_keys=True)))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-nmf-", suffix=".npz", dir=directory)
    try:
      with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
      os.replace(tmp, path)
    except BaseException:
      if os.path.exists(tmp):
        os.remove(tmp)
      raise

  @classmethod
  def load(cls, path: str) -> "NMFSeparator":
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} does not exist (train it: python -m vsep_tf.train --job=nmf ...)")
    with np.load(path, allow_pickle=False) as z:
      return cls(z["dictionaries"], [str(s) for s in z["source_names"]], int(z["sample_rate"]), str(z["mix"]),
                 n_fft=int(z["n_fft"]), hop=int(z["hop"]), iterations=int(z["iterations"]),
                 power=float(z["power"]), seed=int(z["seed"]))

  def describe(self) -> dict:
    return {**super().describe(), "n_fft": self.n_fft, "hop": self.hop, "num_atoms": self.num_atoms,
            "iterations": self.iterations, "power": self.power}
