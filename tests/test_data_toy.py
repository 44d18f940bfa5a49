"""ToyData against the thesis recipe (REFERENCES.md "ToyData"), and the make_toy_data round trip."""
import os
import subprocess
import sys
from pathlib import Path

from absl import flags
import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

from vsep_tf import data as data_lib
from vsep_tf.data import mixing, toy
from vsep_tf.data.stems import StemFolder
from tools import make_toy_data as tool

REPO = Path(__file__).resolve().parents[1]
SR = 14700


def _items(data, split, n):
  """(mix [n, T], sources [n, N, T]) of the first n items."""
  mixes, sources = [], []
  for _, m, s in data.tracks(split, limit=n):
    mixes.append(m)
    sources.append(s)
  return np.stack(mixes), np.stack(sources)


def _fundamental(x, sr=SR, nfft=2**17):
  """Frequency of the largest spectral peak (Hann window, zero-padded FFT, parabolic interpolation)."""
  spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), nfft))
  i = int(np.argmax(spec[1:])) + 1
  a, b, c = np.log(spec[i - 1:i + 2] + 1e-12)
  delta = 0.5 * (a - c) / (a - 2 * b + c)
  return (i + delta) * sr / nfft


@pytest.fixture(scope="module")
def toy_test_items():
  data = toy.ToyData(seed=7)
  mix, sources = _items(data, "test", 60)
  return data, mix, sources, data.parameters("test", range(60))


def test_registry_builds_toy_with_the_recipe_constants():
  data = data_lib.build_dataset("toy", seed=3)
  assert isinstance(data, toy.ToyData)
  assert data_lib.DATASETS["toy"] is toy.ToyData
  assert data.source_names == ("sine", "square", "sawtooth", "triangle")
  assert data.sample_rate == 14700 and data.mix == "mean"
  assert data.num_items["train"] == 5000 and data.num_items["test"] == 1500
  name, mix, sources = next(data.tracks("test"))
  assert name == "item_00000" and mix.shape == (48000,) and sources.shape == (4, 48000)
  assert mix.dtype == np.float32 and sources.dtype == np.float32
  with pytest.raises(ValueError, match="unknown dataset"):
    data_lib.build_dataset("nope")


def test_parameters_follow_the_recipe_distribution():
  p = toy.ToyData(seed=11).parameters("train", range(1500))
  keys, phase, amp = p["key"].ravel(), p["phase"].ravel(), p["amplitude"].ravel()
  assert keys.min() >= 0.1 and keys.max() <= 64.9
  assert phase.min() >= 0.0 and phase.max() < 1.0
  assert amp.min() >= 0.8 and amp.max() <= 1.0
  # Uniform in their ranges (Kolmogorov-Smirnov, 6000 draws each).
  assert stats.kstest(keys, stats.uniform(0.1, 64.8).cdf).pvalue > 1e-3
  assert stats.kstest(phase, stats.uniform(0.0, 1.0).cdf).pvalue > 1e-3
  assert stats.kstest(amp, stats.uniform(0.8, 0.2).cdf).pvalue > 1e-3
  np.testing.assert_allclose(p["frequency"], 440.0 * 2.0 ** ((p["key"] - 49.0) / 12.0), rtol=1e-5)
  # Independent across sources: no correlation between the keys of two sources of an item.
  assert abs(np.corrcoef(p["key"][:, 0], p["key"][:, 1])[0, 1]) < 0.1


def test_rendered_frequencies_match_and_keys_are_uniform(toy_test_items):
  data, _, sources, p = toy_test_items
  est = np.array([[_fundamental(sources[i, k]) for k in range(4)] for i in range(len(sources))])
  est_keys = toy.frequency_to_key(est)
  # Every waveform's fundamental (its largest peak, even for aliased square / sawtooth) is the item's f.
  np.testing.assert_allclose(est_keys, p["key"], atol=0.05)
  assert stats.kstest(est_keys.ravel(), stats.uniform(0.1, 64.8).cdf).pvalue > 1e-3
  assert est.min() > 25.0 and est.max() < 1110.0


def test_waveform_shapes_and_amplitudes(toy_test_items):
  _, _, sources, p = toy_test_items
  for i in range(len(sources)):
    f, amp = p["frequency"][i], p["amplitude"][i]
    sine, square, saw, tri = sources[i].astype(np.float64)
    # sine: x[t+1] + x[t-1] = 2 cos(w) x[t] holds only for a sinusoid of angular frequency w.
    w = 2 * np.pi * f[0] / SR
    np.testing.assert_allclose(sine[2:] + sine[:-2], 2 * np.cos(w) * sine[1:-1], atol=2e-5)
    assert amp[0] * 0.97 <= np.abs(sine).max() <= amp[0] + 1e-6
    # square: exactly two values, +-amplitude, never 0, half the time each.
    values = np.unique(sources[i, 1])
    np.testing.assert_allclose(values, [-amp[1], amp[1]], rtol=1e-6)
    assert abs(np.mean(square > 0) - 0.5) < 0.02
    # sawtooth: rising with slope 2 a f / sr between one downward jump per period, inside [-a, a).
    d = np.diff(saw)
    slope = 2 * amp[2] * f[2] / SR
    rising = d > 0
    np.testing.assert_allclose(d[rising], slope, rtol=1e-3, atol=1e-5)
    periods = f[2] * len(saw) / SR
    assert abs(np.sum(~rising) - periods) <= 1.5
    assert saw.min() >= -amp[2] - 1e-6 and saw.max() < amp[2]
    # triangle: |slope| 4 a f / sr except at the two turning points of each period, inside [-a, a].
    d = np.abs(np.diff(tri))
    kinks = ~np.isclose(d, 4 * amp[3] * f[3] / SR, rtol=1e-3, atol=1e-5)
    assert np.sum(kinks) <= 2 * f[3] * len(tri) / SR + 2
    assert tri.min() >= -amp[3] - 1e-6 and tri.max() <= amp[3] + 1e-6
    assert np.abs(tri).max() > amp[3] * (1 - 4 * f[3] / SR) - 1e-6
  # Amplitudes come out in [0.8, 1.0]: the square's level is the amplitude itself.
  levels = np.abs(sources[:, 1]).max(axis=-1)
  assert levels.min() >= 0.8 and levels.max() <= 1.0


def test_mix_is_the_mean_of_the_sources(toy_test_items):
  data, mix, sources, _ = toy_test_items
  np.testing.assert_array_equal(mix, tf.reduce_mean(sources, axis=1).numpy())
  np.testing.assert_allclose(mix, sources.mean(axis=1), atol=1e-7)
  batch = next(iter(data.mixtures("train", 4000, batch_size=6, seed=1)))
  assert batch["mix"].shape == (6, 4000) and batch["sources"].shape == (6, 4, 4000)
  np.testing.assert_array_equal(batch["mix"].numpy(), tf.reduce_mean(batch["sources"], axis=1).numpy())
  summed = toy.ToyData(seed=7, mix="sum")
  b = next(iter(summed.mixtures("train", 1000, batch_size=2, seed=1)))
  np.testing.assert_allclose(b["mix"].numpy(), b["sources"].numpy().sum(axis=1), atol=1e-6)
  np.testing.assert_allclose(data.mix_fn(sources), mix, atol=1e-7)
  # The separators' uninformed start: equal shares that mix back to the mix, for mean and for sum.
  for name, m in (("mean", mix), ("sum", b["mix"].numpy())):
    split = mixing.equal_split(m, name, 4).numpy()
    assert split.shape == (m.shape[0], 4, m.shape[-1]) and np.allclose(split, split[:, :1])
    np.testing.assert_allclose(mixing.mix_sources(split, name), m, atol=1e-6)


def test_determinism_seeds_splits_and_batching():
  a, b = toy.ToyData(seed=5), toy.ToyData(seed=5)
  first = next(iter(a.solo("train", 2048, batch_size=8, seed=3)))
  again = next(iter(b.solo("train", 2048, batch_size=8, seed=3)))
  halves = iter(b.solo("train", 2048, batch_size=4, seed=3))
  h1, h2 = next(halves), next(halves)
  for name in a.source_names:
    np.testing.assert_array_equal(first[name].numpy(), again[name].numpy())
    # Same examples whatever the batching: example j depends only on (seed, j).
    np.testing.assert_array_equal(first[name].numpy(), np.concatenate([h1[name], h2[name]]))
  other_crops = next(iter(a.solo("train", 2048, batch_size=8, seed=4)))
  assert not np.allclose(first["sine"], other_crops["sine"])
  _, _, s5 = next(a.tracks("test"))
  _, _, s6 = next(toy.ToyData(seed=6).tracks("test"))
  _, _, s5_train = next(a.tracks("train"))
  _, _, s5_again = next(b.tracks("test"))
  np.testing.assert_array_equal(s5, s5_again)
  assert not np.allclose(s5, s6) and not np.allclose(s5, s5_train)
  assert not np.allclose(a.parameters("train", [0])["key"], a.parameters("test", [0])["key"])


def test_solo_crops_are_exact_crops_of_the_split_items():
  data = toy.ToyData(seed=2, num_items={"train": 3}, item_length=3000)
  items = _items(data, "train", 3)[1]  # [3, N, 3000]
  batch = next(iter(data.solo("train", 1000, batch_size=12, seed=9)))
  used = set()
  for k, name in enumerate(data.source_names):
    assert batch[name].shape == (12, 1000)
    for crop in batch[name].numpy():
      hits = [(i, o) for i in range(3) for o in np.flatnonzero(np.abs(items[i, k, :2001] - crop[0]) < 1e-5)
              if np.allclose(items[i, k, o:o + 1000], crop, atol=1e-5)]
      assert hits, f"a {name} crop is no crop of any train item"
      used.add(hits[0][0])
  assert used == {0, 1, 2}
  # One pass (repeat=False) at full length: every item exactly once per class.
  passes = list(data.solo("train", 3000, batch_size=2, seed=1, repeat=False).as_numpy_iterator())
  assert [p["sine"].shape[0] for p in passes] == [2, 1]
  for k, name in enumerate(data.source_names):
    crops = np.concatenate([p[name] for p in passes])
    order = [int(np.argmin(np.abs(items[:, k] - c).max(axis=-1))) for c in crops]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(crops, items[order, k], atol=1e-6)


def test_sample_rate_and_dataset_options():
  slow = toy.ToyData(seed=1, sample_rate=8000, item_length=16000)
  _, _, sources = next(slow.tracks("test"))
  f = slow.parameters("test", [0])["frequency"][0, 0]
  assert abs(_fundamental(sources[0], sr=8000) - f) < 0.01 * f  # Hz are Hz at any rate
  ds = toy.ToyData().solo("train", 512, batch_size=4, seed=0)
  assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
  assert ds.element_spec["sine"].shape.as_list() == [4, 512]


@pytest.mark.parametrize("fmt, atol", [("wav", 0.0), ("flac", 2.0**-22)])
def test_make_toy_data_round_trips_through_stem_folder(tmp_path, fmt, atol):
  out = tmp_path / "toy"
  manifest = tool.make_toy_data(out, num_train=3, num_test=2, seed=4, length=2000, fmt=fmt)
  assert manifest["num_items"] == {"train": 3, "test": 2}
  assert sorted(os.listdir(out / "train" / "item_00000")) == sorted(
      f"{s}.{fmt}" for s in ("mixture", "sine", "square", "sawtooth", "triangle"))
  loaded = StemFolder(out, mix="mean", sources=toy.TOY_SOURCES)
  assert loaded.sample_rate == 14700 and loaded.source_names == toy.TOY_SOURCES
  reference = toy.ToyData(seed=4, item_length=2000, num_items={"train": 3, "test": 2})
  for split in ("train", "test"):
    got, want = list(loaded.tracks(split)), list(reference.tracks(split))
    assert [g[0] for g in got] == [w[0] for w in want]
    for (_, mix, sources), (_, mix_ref, sources_ref) in zip(got, want):
      np.testing.assert_allclose(sources, sources_ref, rtol=0, atol=atol)
      np.testing.assert_allclose(mix, mix_ref, rtol=0, atol=atol)  # the mixture FILE
      np.testing.assert_allclose(loaded.mix_fn(sources), mix, rtol=0, atol=2 * atol + 1e-7)
  # An existing folder is refused without --overwrite, replaced with it; foreign folders are never deleted.
  with pytest.raises(tool.OutputExistsError, match="--overwrite"):
    tool.make_toy_data(out, num_train=1, num_test=1, length=100, fmt=fmt)
  tool.make_toy_data(out, num_train=1, num_test=1, length=100, fmt=fmt, overwrite=True)
  assert sorted(os.listdir(out / "train")) == ["item_00000"]
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("keep me")
  with pytest.raises(tool.OutputExistsError, match="not written by make_toy_data"):
    tool.make_toy_data(foreign, num_train=1, num_test=1, length=100, overwrite=True)
  assert (foreign / "notes.txt").read_text() == "keep me"


def test_make_toy_data_cli(tmp_path, capsys):
  out = tmp_path / "cli"
  fv = flags.FlagValues()
  tool.define_flags(fv)
  fv(["make_toy_data", f"--output_dir={out}", "--num_train=2", "--num_test=1", "--length=500",
      "--format=flac"])
  tool.main(["make_toy_data"], fv)
  assert "wrote" in capsys.readouterr().out
  assert sorted(os.listdir(out / "train")) == ["item_00000", "item_00001"]
  assert (out / "test" / "item_00000" / "triangle.flac").is_file()
  # As a module, on an existing folder: a clear error and a non-zero exit (before TensorFlow is imported).
  again = subprocess.run([sys.executable, "-m", "tools.make_toy_data", f"--output_dir={out}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
  assert again.returncode != 0
  assert "exists and is not empty" in again.stderr and "--overwrite" in again.stderr
  assert sorted(os.listdir(out / "train")) == ["item_00000", "item_00001"]
