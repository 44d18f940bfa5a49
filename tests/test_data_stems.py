"""StemFolder on small real stem folders written to tmp_path, and on the chorales when present."""
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
import soundfile as sf

from vsep_tf import audio
from vsep_tf import data as data_lib
from vsep_tf.data.stems import StemFolder

SR = 8000


def _write(path, x, rate):
  subtype = "FLOAT" if str(path).endswith(".wav") else "PCM_24"
  audio.write_audio(str(path), x, rate, subtype=subtype)


def _level(k, t):
  """The constant value of source k in track t: every (source, track) pair is recognisable."""
  return 0.1 * (k + 1) + 0.01 * t


def _track_of(x, k):
  return int(round((float(np.median(x)) - 0.1 * (k + 1)) / 0.01))


@pytest.fixture
def const_folder(tmp_path):
  """train: t0, t1, t2; test: t3. Sources a, b, c hold constant levels; a mixture file = their sum.
  t1 is FLAC (the rest WAV); t2's 'b' is stereo (left / right +-0.05 around the level)."""
  root = tmp_path / "const"
  for t, (split, name) in enumerate([("train", "t0"), ("train", "t1"), ("train", "t2"), ("test", "t3")]):
    d = root / split / name
    d.mkdir(parents=True)
    ext = "flac" if name == "t1" else "wav"
    n = 4000 + 500 * t
    levels = [_level(k, t) for k in range(3)]
    for k, s in enumerate("abc"):
      x = np.full(n, levels[k], np.float32)
      if name == "t2" and s == "b":
        x = np.stack([x + 0.05, x - 0.05], axis=1)
      _write(d / f"{s}.{ext}", x, SR)
    _write(d / f"mixture.{ext}", np.full(n, sum(levels), np.float32), SR)
  return root


def test_registry_names_shapes_and_source_order(const_folder):
  data = data_lib.build_dataset("stems", root=str(const_folder))
  assert isinstance(data, StemFolder) and data_lib.DATASETS["stems"] is StemFolder
  assert data.source_names == ("a", "b", "c") and data.sample_rate == SR and data.mix == "sum"
  assert data.splits == ("train", "test")
  assert [t.length for t in data.track_list("train")] == [4000, 4500, 5000]
  batch = next(iter(data.solo("train", 1000, batch_size=16, seed=0)))
  assert set(batch) == {"a", "b", "c"}
  tracks_seen = set()
  for k, name in enumerate(data.source_names):
    x = batch[name].numpy()
    assert x.shape == (16, 1000) and x.dtype == np.float32
    for crop in x:  # a constant crop of THIS class's stem, from one of the train tracks
      t = _track_of(crop, k)
      assert t in (0, 1, 2)
      np.testing.assert_allclose(crop, _level(k, t), atol=1e-6)  # stereo t2/b is downmixed to the level
      tracks_seen.add((k, t))
  assert len(tracks_seen) >= 7  # classes drawn independently from all three tracks
  reordered = StemFolder(const_folder, sources=["c", "a", "b"])
  crop = next(iter(reordered.solo("test", 500, batch_size=1, seed=0)))
  np.testing.assert_allclose(crop["c"].numpy(), _level(2, 3), atol=1e-6)
  np.testing.assert_allclose(crop["a"].numpy(), _level(0, 3), atol=1e-6)


def test_mixtures_and_tracks_with_sum_and_mean(const_folder):
  for mix in ("sum", "mean"):
    data = StemFolder(const_folder, mix=mix)
    batch = next(iter(data.mixtures("train", 800, batch_size=8, seed=1)))
    s, m = batch["sources"].numpy(), batch["mix"].numpy()
    assert s.shape == (8, 3, 800) and m.shape == (8, 800)
    np.testing.assert_allclose(m, s.sum(axis=1) if mix == "sum" else s.mean(axis=1), atol=1e-6)
    for example in s:  # without remix all sources come from one track
      assert len({_track_of(example[k], k) for k in range(3)}) == 1
  data = StemFolder(const_folder)
  (name, mix, sources), = list(data.tracks("test"))
  assert name == "t3" and mix.shape == (5500,) and sources.shape == (3, 5500)
  np.testing.assert_allclose(mix, sum(_level(k, 3) for k in range(3)), atol=1e-6)  # the mixture FILE
  # Without a mixture file, tracks() mixes the stems with the dataset's mix function.
  (const_folder / "test" / "t3" / "mixture.wav").unlink()
  (_, mix, sources), = list(StemFolder(const_folder, mix="mean").tracks("test"))
  np.testing.assert_allclose(mix, sources.mean(axis=0), atol=1e-7)


def test_one_pass_remix_and_gain_augmentation(const_folder):
  data = StemFolder(const_folder, gain_db=6.0)
  # repeat=False: one example per track, in order.
  one_pass = list(data.mixtures("train", 1000, batch_size=2, seed=3, repeat=False, augment=False)
                  .as_numpy_iterator())
  assert [b["mix"].shape[0] for b in one_pass] == [2, 1]
  sources = np.concatenate([b["sources"] for b in one_pass])
  assert [_track_of(s[0], 0) for s in sources] == [0, 1, 2]
  solo_pass = list(data.solo("train", 1000, batch_size=3, seed=3, repeat=False, augment=False)
                   .as_numpy_iterator())
  assert len(solo_pass) == 1
  for k, name in enumerate(data.source_names):
    assert sorted(_track_of(c, k) for c in solo_pass[0][name]) == [0, 1, 2]
  # Remix: sources of one example come from different tracks.
  remixed = next(iter(data.mixtures("train", 500, batch_size=16, seed=4, remix=True, augment=False)))
  combos = {tuple(_track_of(s[k], k) for k in range(3)) for s in remixed["sources"].numpy()}
  assert any(len(set(c)) > 1 for c in combos)
  # Gain: one gain per crop, uniform in [-6, 6] dB; on by default for 'train' only.
  gained = next(iter(data.solo("test", 500, batch_size=64, seed=5, augment=True)))["a"].numpy()
  np.testing.assert_allclose(gained, np.broadcast_to(gained[:, :1], gained.shape), rtol=1e-6)
  gain_db = 20 * np.log10(gained[:, 0] / _level(0, 3))
  assert gain_db.min() >= -6.001 and gain_db.max() <= 6.001
  assert stats.kstest(gain_db, stats.uniform(-6, 12).cdf).pvalue > 1e-3
  clean = next(iter(data.solo("test", 500, batch_size=4, seed=5)))["a"].numpy()
  np.testing.assert_allclose(clean, _level(0, 3), atol=1e-6)
  train = next(iter(data.solo("train", 500, batch_size=8, seed=5)))["a"].numpy()
  levels = np.array([_level(0, t) for t in range(3)])
  assert np.abs(train[:, :1] - levels).min(axis=1).max() > 1e-3  # not the raw levels: gained
  mixed = next(iter(data.mixtures("test", 500, batch_size=4, seed=6, augment=True)))
  s = mixed["sources"].numpy()
  ratios_db = 20 * np.log10(s[:, :, 0] / np.array([_level(k, 3) for k in range(3)]))
  assert np.all(np.abs(ratios_db) <= 6.001) and np.std(ratios_db) > 1.0  # a gain per source
  np.testing.assert_allclose(mixed["mix"].numpy(), s.sum(axis=1), atol=1e-6)


def test_resampling_to_the_model_rate_and_streaming_parity(tmp_path):
  """Tones in files at 8 kHz and 11.025 kHz, one stereo, read at 16 kHz, in memory and streaming."""
  root = tmp_path / "tones"
  freqs = {"bass": 110.0, "lead": 660.0}
  rates = {"x0": 8000, "x1": 11025}
  for name, rate in rates.items():
    d = root / "train" / name
    d.mkdir(parents=True)
    t = np.arange(int(0.6 * rate)) / rate
    for s, f in freqs.items():
      x = (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)
      if name == "x1" and s == "lead":  # stereo: the downmix is the tone
        x = np.stack([x + 0.2, x - 0.2], axis=1)
      _write(d / f"{s}.{'flac' if name == 'x1' else 'wav'}", x, rate)
  with pytest.raises(ValueError, match="pass sample_rate"):
    StemFolder(root)
  data = StemFolder(root, sample_rate=16000, min_rms=0.1)
  assert data.sample_rate == 16000
  assert [t.length for t in data.track_list("train")] == [9600, 9600]
  for _, mix, sources in data.tracks("train"):
    assert sources.shape == (2, 9600)
    np.testing.assert_allclose(mix, sources.sum(axis=0), atol=1e-6)  # no mixture file: mix_fn
    n = np.arange(9600)
    for k, f in enumerate(freqs.values()):
      spectrum = np.abs(np.fft.rfft(sources[k]))
      assert abs(np.argmax(spectrum) * 16000 / 9600 - f) < 2.0
      ref = 0.5 * np.sin(2 * np.pi * f * n / 16000)
      np.testing.assert_allclose(sources[k, 500:-500], ref[500:-500], atol=5e-3)
  memory = StemFolder(root, sample_rate=16000, min_rms=0.1, streaming=False)
  stream = StemFolder(root, sample_rate=16000, min_rms=0.1, streaming=True)
  assert not memory.is_streaming("train") and stream.is_streaming("train")
  assert StemFolder(root, sample_rate=16000, max_memory_mb=0.01).is_streaming("train")
  a = next(iter(memory.solo("train", 3000, batch_size=6, seed=2)))
  b = next(iter(stream.solo("train", 3000, batch_size=6, seed=2)))
  for name in freqs:
    np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), atol=1e-5)
  a = next(iter(memory.mixtures("train", 4000, batch_size=3, seed=2, remix=True)))
  b = next(iter(stream.mixtures("train", 4000, batch_size=3, seed=2, remix=True)))
  np.testing.assert_allclose(a["sources"].numpy(), b["sources"].numpy(), atol=1e-5)
  # Crops longer than a track: zeros after its end, in both modes.
  a = next(iter(memory.solo("train", 12000, batch_size=2, seed=0)))["bass"].numpy()
  b = next(iter(stream.solo("train", 12000, batch_size=2, seed=0)))["bass"].numpy()
  np.testing.assert_allclose(a, b, atol=1e-5)
  assert np.all(a[:, 9600:] == 0) and np.all(np.abs(a[:, 100:9500]).max(axis=1) > 0.4)


def test_min_rms_skips_silent_crops(tmp_path):
  root = tmp_path / "silent"
  rng = np.random.default_rng(0)
  for i in range(3):
    d = root / "train" / f"s{i}"
    d.mkdir(parents=True)
    voice = np.zeros(4000, np.float32)
    voice[2000:] = 0.3 * rng.standard_normal(2000)  # silent first half
    _write(d / "voice.wav", voice, SR)
    _write(d / "rest.wav", np.zeros(4000, np.float32), SR)  # a class that is silence throughout
  rms = lambda x: np.sqrt(np.mean(np.square(x), axis=-1))  # noqa: E731
  plain = next(iter(StemFolder(root).solo("train", 1000, batch_size=32, seed=1)))
  assert np.mean(rms(plain["voice"].numpy()) < 0.05) > 0.2  # many silent crops without the option
  for streaming in (False, True):
    data = StemFolder(root, min_rms=0.2, min_rms_tries=30, streaming=streaming)
    batch = next(iter(data.solo("train", 1000, batch_size=32, seed=1)))
    assert rms(batch["voice"].numpy()).min() >= 0.2
    assert np.all(batch["rest"].numpy() == 0)  # an all-silent class falls back instead of stalling


def test_deterministic_streams(const_folder):
  data = StemFolder(const_folder, gain_db=3.0)
  a = next(iter(data.solo("train", 700, batch_size=8, seed=9)))
  b = next(iter(StemFolder(const_folder, gain_db=3.0).solo("train", 700, batch_size=8, seed=9)))
  c = next(iter(data.solo("train", 700, batch_size=8, seed=10)))
  for name in data.source_names:
    np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())
  assert not all(np.array_equal(a[n].numpy(), c[n].numpy()) for n in data.source_names)
  ds = data.mixtures("train", 700, batch_size=5, seed=0)
  assert ds.element_spec["sources"].shape.as_list() == [5, 3, 700]


def test_validation_hold_out(const_folder):
  names = ["t0", "t1", "t2"]
  expected = min(names, key=lambda s: zlib.crc32(s.encode()))
  data = StemFolder(const_folder, valid_tracks=1)
  assert [t.name for t in data.track_list("valid")] == [expected]
  assert [t.name for t in data.track_list("train")] == [n for n in names if n != expected]
  assert [t.name for t in StemFolder(const_folder, valid_tracks=1).track_list("valid")] == [expected]
  listed = StemFolder(const_folder, valid_tracks=["t0", "t2"])
  assert [t.name for t in listed.track_list("train")] == ["t1"]
  batch = next(iter(listed.solo("valid", 500, batch_size=4, seed=0)))
  assert {_track_of(c, 0) for c in batch["a"].numpy()} <= {0, 2}
  with pytest.raises(ValueError, match="valid_tracks"):
    StemFolder(const_folder).solo("valid", 500, batch_size=2, seed=0)
  with pytest.raises(ValueError, match="not train tracks"):
    StemFolder(const_folder, valid_tracks=["t9"])
  with pytest.raises(ValueError, match="valid_tracks=3"):
    StemFolder(const_folder, valid_tracks=3)


def test_inconsistent_folders_fail_clearly(const_folder, tmp_path):
  with pytest.raises(FileNotFoundError):
    StemFolder(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="neither train/ nor test/"):
    StemFolder(tmp_path / "empty")
  with pytest.raises(ValueError, match="must name each of the stems"):
    StemFolder(const_folder, sources=["a", "b"])
  (const_folder / "train" / "t1" / "c.flac").unlink()
  with pytest.raises(ValueError, match=r"track train/t1 .*missing: \['c'\]"):
    StemFolder(const_folder)
  _write(const_folder / "train" / "t1" / "c.flac", np.zeros(100, np.float32), SR)
  _write(const_folder / "train" / "t1" / "c.wav", np.zeros(100, np.float32), SR)
  with pytest.raises(ValueError, match="train/t1: two files for 'c'"):
    StemFolder(const_folder)
  (const_folder / "train" / "t1" / "c.wav").unlink()
  (const_folder / "test" / "t3" / "d.wav").write_bytes(b"not audio at all")
  with pytest.raises(audio.AudioError, match="d.wav"):
    StemFolder(const_folder)
  (const_folder / "test" / "t3" / "d.wav").unlink()
  (const_folder / "test" / "t4").mkdir()
  with pytest.raises(ValueError, match="test/t4 .*no source stems"):
    StemFolder(const_folder)


def test_missing_chorales_fail_under_ci_and_skip_elsewhere(tmp_path, monkeypatch):
  from conftest import require_chorales  # pylint: disable=import-outside-toplevel
  missing = tmp_path / "shared" / "data" / "chorales"
  monkeypatch.setenv("CI", "true")
  with pytest.raises(pytest.fail.Exception, match="CI is set but .*chorales is missing"):
    require_chorales(missing)
  monkeypatch.delenv("CI")
  with pytest.raises(pytest.skip.Exception, match="chorales is missing"):
    require_chorales(missing)
  assert require_chorales(tmp_path) == tmp_path


def test_chorales(chorales_root):
  CHORALES = chorales_root  # pylint: disable=invalid-name
  data = StemFolder(CHORALES, min_rms=0.01, streaming=True)
  assert data.source_names == ("bassoon", "clarinet", "tenor_sax", "violin")
  assert data.sample_rate == 16000
  assert len(data.track_list("train")) == 32 and len(data.track_list("test")) == 5
  assert not {t.name for t in data.track_list("train")} & {t.name for t in data.track_list("test")}
  for _, mix, sources in data.tracks("test"):
    assert sources.shape[0] == 4 and mix.shape == sources.shape[1:]
    # mixture = integer sum of the 16-bit stems: equal up to 16-bit rounding.
    np.testing.assert_allclose(mix, sources.sum(axis=0), atol=2.0**-15)
    assert 0.85 < np.abs(mix).max() <= 0.9 + 2.0**-15
  info = sf.info(str(CHORALES / "test" / data.track_list("test")[0].name / "violin.flac"))
  assert info.samplerate == 16000 and info.channels == 1
  batch = next(iter(data.solo("train", 16384, batch_size=4, seed=0)))
  for name in data.source_names:
    x = batch[name].numpy()
    assert x.shape == (4, 16384)
    assert np.sqrt(np.mean(x**2, axis=1)).min() >= 0.01  # silent stretches skipped


# --- corrupt / truncated files (--bad_audio) -------------------------------------------------------------------


def _truncate(path):
  data = Path(path).read_bytes()
  Path(path).write_bytes(data[:len(data) // 2])


@pytest.fixture
def folder_with_bad_files(tmp_path):
  """train: good0, good1, bad_wav (its 'b' WAV cut in half), bad_flac (its 'a' FLAC cut in half)."""
  root = tmp_path / "bad"
  rng = np.random.default_rng(0)
  for name in ("good0", "good1", "bad_wav", "bad_flac"):
    d = root / "train" / name
    d.mkdir(parents=True)
    for src in ("a", "b"):
      ext = "flac" if name == "bad_flac" else "wav"
      sf.write(str(d / f"{src}.{ext}"), (0.1 * rng.standard_normal(SR)).astype(np.float32), SR,
               subtype="PCM_16")
  _truncate(root / "train" / "bad_wav" / "b.wav")
  _truncate(root / "train" / "bad_flac" / "a.flac")
  return root


def test_bad_audio_error_names_the_file(folder_with_bad_files):
  with pytest.raises(audio.AudioError, match=r"bad_flac.*a\.flac.*truncated.*--bad_audio=skip"):
    StemFolder(folder_with_bad_files)


def test_bad_audio_skip_counts_and_trains_finite(folder_with_bad_files, tmp_path):
  folder = StemFolder(folder_with_bad_files, bad_audio="skip")
  assert [t.name for t in folder.track_list("train")] == ["good0", "good1"]
  assert folder.num_skipped == 2
  assert sorted(Path(p).name for p, _ in folder.skipped_files) == ["a.flac", "b.wav"]
  # End to end: the trainer on this folder with --bad_audio=skip runs with a finite loss.
  from vsep_tf import run_flags  # pylint: disable=import-outside-toplevel
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  cfg = run_flags.parse_flags([
      f"--model_dir={tmp_path / 'model'}", "--job=priors", "--dataset=stems", f"--data_root={folder_with_bad_files}",
      "--bad_audio=skip", "--crop_length=256", "--batch_size=2", "--train_steps=2", "--steps_per_loop=2",
      "--checkpoint_every=2", "--wavenet.num_blocks=1", "--wavenet.num_layers=2", "--wavenet.residual_channels=4",
      "--wavenet.skip_channels=4", "--wavenet.cond_channels=4", "--wavenet.num_mixtures=1",
      "--audio_summary_seconds=0"])
  metrics = trainer_lib.PriorTrainer(cfg).train()
  assert np.isfinite(metrics["total_loss"])
