r"""Golden outputs of the shipped models (tests/test_golden.py): a short fixed input per model in pretrained/ and the
separator's output on it, stored as tests/golden/<model>.npz (arrays 'input' [T] and 'output' [N, T], float32).

  python -m tools.make_golden                    # every model of GOLDEN
  python -m tools.make_golden --models=toy       # one
  python -m tools.make_golden --check            # compare instead of writing: the maximum deviations

Re-run it (and commit the .npz) only when a model's output is MEANT to change: a new shipped model, or a change
of the separation code whose effect has been checked. The inputs are generated here with a seeded numpy recipe
(no data set, no TensorFlow) and stored with the output, so the test does not depend on the data code:
  toy, toy_score  a toy-like mix (mean) of a sine, square, sawtooth and triangle at fixed pitches, 8,192 samples
            at 14.7 kHz
  chorales  a chorale-like mix (sum) of four harmonic voices whose notes change every quarter second, 16,000
            samples (1 s) at 16 kHz
  band      a band-like mono mix (sum) of a bass line, a harmonic voice with vibrato, two-note chords and decaying
            noise hits, 16,384 samples at 44.1 kHz
"""
from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN_DIR = os.path.join(REPO, "tests", "golden")
PRETRAINED = os.path.join(REPO, "pretrained")
# model -> (sample rate, samples): the shipped model directories that have a golden output.
GOLDEN = {"toy": (14700, 8192), "toy_score": (14700, 8192), "chorales": (16000, 16000), "band": (44100, 16384)}

FLAGS = flags.FLAGS
flags.DEFINE_list("models", sorted(GOLDEN), "Which models of GOLDEN.")
flags.DEFINE_boolean("check", False, "Compare with the stored files instead of writing them.")


def toy_like_mix(rate: int, length: int, seed: int = 0) -> np.ndarray:
  """The mean of the four toy waveforms (data/toy.py's shapes) at fixed pitches, random phases and amplitudes."""
  rng = np.random.default_rng(seed)
  t = np.arange(length) / rate
  sources = []
  for name, f in (("sine", 220.0), ("square", 311.1), ("sawtooth", 130.8), ("triangle", 493.9)):
    u = np.mod(rng.uniform() + f * t, 1.0)
    x = {"sine": np.sin(2 * np.pi * u), "square": np.where(u < 0.5, 1.0, -1.0), "sawtooth": 2 * u - 1,
         "triangle": 1 - 4 * np.abs(np.mod(u + 0.25, 1.0) - 0.5)}[name]
    sources.append(rng.uniform(0.8, 1.0) * x)
  return np.mean(sources, axis=0).astype(np.float32)


def chorale_like_mix(rate: int, length: int, seed: int = 0) -> np.ndarray:
  """The sum of four harmonic voices (bass to soprano ranges), a new note every quarter second, soft onsets."""
  rng = np.random.default_rng(seed)
  t = np.arange(length) / rate
  note = int(0.25 * rate)
  out = np.zeros(length)
  for low in (40, 52, 57, 64):  # MIDI note ranges of four voices
    voice = np.zeros(length)
    for start in range(0, length, note):
      seg = t[start:start + note] - t[start]
      f0 = 440.0 * 2 ** ((low + rng.integers(0, 12) - 69) / 12)
      partials = sum(rng.uniform(0.3, 1.0) / h * np.sin(2 * np.pi * h * f0 * seg + rng.uniform(0, 2 * np.pi))
                     for h in range(1, 8) if h * f0 < rate / 2)
      voice[start:start + note] = partials * np.minimum(1.0, seg / 0.02)
    out += 0.2 * voice / np.abs(voice).max()
  return out.astype(np.float32)


def band_like_mix(rate: int, length: int, seed: int = 0) -> np.ndarray:
  """Bass, a voice with vibrato, chords and noise hits (drums), summed; each part peaks near 0.2."""
  rng = np.random.default_rng(seed)
  t = np.arange(length) / rate

  def harmonic(f, partials=8, vibrato=0.0):
    phase = 2 * np.pi * np.cumsum(f * (1 + vibrato * np.sin(2 * np.pi * 5.5 * t))) / rate
    x = sum(rng.uniform(0.3, 1.0) / h * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
            for h in range(1, partials + 1) if h * f < rate / 2)
    return x / np.abs(x).max()

  bass = harmonic(55.0 * 2 ** (rng.integers(0, 12) / 12), partials=6)
  voice = harmonic(220.0 * 2 ** (rng.integers(0, 12) / 12), partials=12, vibrato=0.01)
  chords = harmonic(261.6, partials=6) + harmonic(329.6, partials=6)
  hits = np.zeros(length)
  for start in range(0, length, length // 4):
    n = length - start
    hits[start:] += rng.standard_normal(n) * np.exp(-np.arange(n) / (0.03 * rate))
  parts = [bass, voice, chords / np.abs(chords).max(), hits / np.abs(hits).max()]
  return (0.2 * np.sum(parts, axis=0)).astype(np.float32)


def golden_input(model: str) -> np.ndarray:
  rate, length = GOLDEN[model]
  recipe = {"toy": toy_like_mix, "toy_score": toy_like_mix, "chorales": chorale_like_mix,
            "band": band_like_mix}[model]
  return recipe(rate, length)


def separate(model: str, x: np.ndarray, model_dir: str | None = None) -> np.ndarray:
  """The output [N, T] of the shipped model (or the model directory `model_dir`) on the mono input `x` [T]."""
  from vsep_tf.model_dir import load_separator  # pylint: disable=import-outside-toplevel
  sep = load_separator(model_dir or os.path.join(PRETRAINED, model))
  return np.asarray(sep.separate(x[None]))[0].astype(np.float32)


def golden_path(model: str) -> str:
  return os.path.join(GOLDEN_DIR, f"{model}.npz")


def main(argv):
  del argv
  for model in FLAGS.models:
    if model not in GOLDEN:
      raise app.UsageError(f"--models: {model!r} is not one of {sorted(GOLDEN)}")
    x = golden_input(model)
    y = separate(model, x)
    if FLAGS.check:
      with np.load(golden_path(model)) as stored:
        print(f"{model}: input max |diff| {np.abs(stored['input'] - x).max():.3g}, output max |diff| "
              f"{np.abs(stored['output'] - y).max():.3g} (output peak {np.abs(stored['output']).max():.3g})")
      continue
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    np.savez_compressed(golden_path(model), input=x, output=y)
    print(f"{model}: {golden_path(model)} ({os.path.getsize(golden_path(model)) / 1024:.0f} KiB), output "
          f"{y.shape}, peak {np.abs(y).max():.3f}")
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(app.run(main))
