"""The NMF baseline: KL-NMF updates, separation of two synthetic tone classes, training, saving, evaluation."""
import os

import numpy as np
import pytest

from vsep_tf import model_dir as model_dir_lib
from vsep_tf import run_flags
from vsep_tf.evaluation import bsseval
from vsep_tf.separators import nmf
from vsep_tf.training import nmf_trainer

RATE = 8000


def _tone(kind, f, seconds, rng):
  t = np.arange(int(seconds * RATE)) / RATE
  phase = 2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)
  x = np.sin(phase) if kind == "sine" else np.sign(np.sin(phase))
  return (rng.uniform(0.5, 1.0) * x).astype(np.float32)


PITCHES = 110.0 * 2.0 ** (np.arange(0, 24, 2) / 12)  # a whole-tone grid over two octaves, as notes of a score


def _notes(kind, n, rng, seconds=0.5):
  """n notes of `kind` at random pitches of the grid, concatenated: one solo signal."""
  return np.concatenate([_tone(kind, rng.choice(PITCHES), seconds, rng) for _ in range(n)])


def test_kl_nmf_fits_a_low_rank_spectrogram_and_refits_activations():
  rng = np.random.default_rng(0)
  w0 = rng.gamma(0.5, size=(40, 5)).astype(np.float32)
  h0 = rng.gamma(0.5, size=(5, 300)).astype(np.float32)
  v = w0 @ h0
  w, h, kl = nmf.kl_nmf(v, num_atoms=5, iterations=300, seed=1)
  assert w.shape == (40, 5) and h.shape == (5, 300)
  np.testing.assert_allclose(w.sum(axis=0), 1.0, rtol=1e-4)  # normalised atoms
  start = nmf.kl_divergence(v, np.full_like(v, v.mean()))
  assert kl < 0.02 * start, (kl, start)
  _, h2, kl2 = nmf.kl_nmf(v, w=w, iterations=300, seed=2)  # fixed dictionary: only H is fitted
  assert kl2 < 0.05 * start
  with pytest.raises(ValueError, match="non-negative"):
    nmf.kl_nmf(-v, num_atoms=2)
  with pytest.raises(ValueError, match="does not match"):
    nmf.kl_nmf(v, w=w[:10])


def _sine_square_separator(seed=0):
  rng = np.random.default_rng(seed)
  solo = {"sine": [_notes("sine", 40, rng)], "square": [_notes("square", 40, rng)]}
  dictionaries, info = nmf.learn_dictionaries(solo, num_atoms=24, n_fft=1024, hop=256, iterations=100,
                                              seed=seed)
  assert dictionaries.shape == (2, 513, 24) and info["sine"]["frames"] > 24
  return nmf.NMFSeparator(dictionaries, ["sine", "square"], RATE, mix="mean", n_fft=1024, hop=256, iterations=100)


def test_nmf_separates_sine_from_square_better_than_the_mixture(tmp_path):
  sep = _sine_square_separator()
  rng = np.random.default_rng(99)  # new notes (phases, amplitudes, pairs) never seen in training
  pairs = [rng.choice(PITCHES, size=2, replace=False) for _ in range(6)]
  sources = np.stack([np.stack([_tone("sine", f, 1.0, rng), _tone("square", g, 1.0, rng)]) for f, g in pairs])
  mixes = sources.mean(axis=1)
  est = np.asarray(sep.separate(mixes))
  assert est.shape == sources.shape
  gains = np.stack([bsseval.si_sdr_scores(sources[i], est[i], mixes[i])["si_sdri"] for i in range(len(mixes))])
  si = np.stack([bsseval.si_sdr_scores(sources[i], est[i], mixes[i])["si_sdr"] for i in range(len(mixes))])
  assert np.median(gains) > 15.0, gains  # far better than handing back the mix (measured: 22 to 25 dB)
  assert np.all(np.median(si, axis=0) > 12.0), si
  # masks of a sum: the estimates add up to the mixture as a sum (N * mean)
  np.testing.assert_allclose(est.sum(axis=1), 2 * mixes, atol=2e-3)
  # save / load round trip, and chunked separation of a longer signal
  sep.save(str(tmp_path / nmf.NMF_FILENAME), extra={"kl/sine": 0.1})
  again = nmf.NMFSeparator.load(str(tmp_path / nmf.NMF_FILENAME))
  assert again.describe() == sep.describe()
  np.testing.assert_allclose(np.asarray(again.separate(mixes[:1])), est[:1], atol=1e-5)
  long = again.separate_long(np.concatenate(list(mixes)), chunk_length=RATE * 2, overlap=1024)
  assert long.shape == (2, 6 * RATE) and np.isfinite(long).all()


def test_trainer_on_toy_data_and_load_separator(tmp_path):
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  model_dir = tmp_path / "nmf"
  cfg = run_flags.parse_flags([f"--model_dir={model_dir}", "--job=nmf", "--dataset=toy", "--toy_seed=0"])
  trainer_cls = trainer_lib.get_trainer("nmf")
  assert trainer_cls is nmf_trainer.NMFTrainer
  metrics = trainer_cls(cfg, None, num_atoms=8, n_fft=1024, hop=256, train_iterations=30,
                        separate_iterations=30, max_train_seconds=12.0).train()
  assert set(metrics) >= {"kl/sine", "kl/square", "kl/sawtooth", "kl/triangle", "seconds"}
  assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
  assert os.path.exists(model_dir / model_dir_lib.MANIFEST_FILENAME) and os.path.exists(model_dir / nmf.NMF_FILENAME)
  sep = model_dir_lib.load_separator(str(model_dir))
  assert isinstance(sep, nmf.NMFSeparator) and sep.method == "nmf"
  assert sep.source_names == ("sine", "square", "sawtooth", "triangle") and sep.sample_rate == 14700
  assert sep.mix == "mean" and sep.num_atoms == 8 and sep.iterations == 30
  with pytest.raises(ValueError, match="unknown NMF settings"):
    nmf_trainer.NMFTrainer(cfg, None, atoms=3)

  # the evaluation tool on this model directory (toy items of another seed), in process
  from vsep_tf import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  opts = evaluate_lib.EvalOptions(dataset="toy", toy_seed=1234, num_examples=2, max_seconds=1.0, num_workers=1)
  r = evaluate_lib.evaluate(opts, model_dir=str(model_dir), verbose=0)
  assert r["method"] == "nmf" and r["model_dir"] == str(model_dir) and not r["resampled"]
  assert np.isfinite(r["overall"]["si_sdr"]) and r["num_tracks"] == 2

  # a model at another rate and mixing convention: mixtures resampled and rescaled, scored at the data rate
  other = nmf.NMFSeparator(sep.dictionaries, sep.source_names, 16000, mix="sum", n_fft=1024, hop=256,
                           iterations=10)
  r2 = evaluate_lib.evaluate(opts, separator=other, verbose=0)
  assert r2["resampled"] and r2["sample_rate"] == 14700 and r2["model_sample_rate"] == 16000
  assert r2["mix_gain"] == 4.0 and np.isfinite(r2["overall"]["si_sdr"])
