"""MusdbData on a tiny MUSDB18-HQ-layout folder written to tmp_path (is_wav=True), read through musdb.

musdb's 'valid' split is a fixed list of track names (musdb/configs/mus.yaml), so the folder names one train
track 'Actions - One Minute Smile' (on that list) to exercise train / valid / test as musdb defines them.
"""
import ast
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("musdb")

from vsep_tf import audio  # noqa: E402
from vsep_tf import data as data_lib  # noqa: E402
from vsep_tf.data.musdb import MusdbData  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SR = 8000
SOURCES = ("vocals", "drums", "bass", "other")
TRACKS = [("train", "A - One"), ("train", "B - Two"), ("train", "Actions - One Minute Smile"),
          ("test", "C - Three")]


def _level(k, t):
  return 0.05 * (k + 1) + 0.01 * t


def _track_of(x, k):
  return int(round((float(np.median(x)) - 0.05 * (k + 1)) / 0.01))


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory):
  """Stereo 16-bit WAV at 8 kHz, 1.5 s. Source k of track t is the constant _level(k, t), left +0.02 and
  right -0.02; vocals are silent in 'B - Two'. mixture.wav = the sum of the stems."""
  root = tmp_path_factory.mktemp("musdb")
  n = int(1.5 * SR)
  for t, (subset, name) in enumerate(TRACKS):
    d = root / subset / name
    d.mkdir(parents=True)
    stems = []
    for k, s in enumerate(SOURCES):
      level = 0.0 if (s == "vocals" and name == "B - Two") else _level(k, t)
      x = np.stack([np.full(n, level + 0.02), np.full(n, level - 0.02)], axis=1).astype(np.float32)
      if level == 0.0:
        x[:] = 0.0
      stems.append(x)
      audio.write_audio(str(d / f"{s}.wav"), x, SR, subtype="PCM_16")
    audio.write_audio(str(d / "mixture.wav"), np.sum(stems, axis=0), SR, subtype="PCM_16")
  return root


def test_registry_splits_and_mono_solo_crops(musdb_root):
  data = data_lib.build_dataset("musdb", root=str(musdb_root), is_wav=True, sample_rate=SR)
  assert isinstance(data, MusdbData) and data_lib.DATASETS["musdb"] is MusdbData
  assert data.source_names == SOURCES and data.sample_rate == SR and data.mix == "sum"
  assert [t.name for t in data.track_list("train")] == ["A - One", "B - Two"]
  assert [t.name for t in data.track_list("valid")] == ["Actions - One Minute Smile"]
  assert [t.name for t in data.track_list("test")] == ["C - Three"]
  batch = next(iter(data.solo("train", 2000, batch_size=12, seed=0)))
  for k, name in enumerate(SOURCES):
    x = batch[name].numpy()
    assert x.shape == (12, 2000)
    for crop in x:  # mono downmix of this class's stem, from a TRAIN track (never the valid one)
      t = _track_of(crop, k) if np.any(crop) else 1
      assert t in (0, 1)
      np.testing.assert_allclose(crop, 0.0 if (k == 0 and t == 1) else _level(k, t), atol=1e-4)
  valid = next(iter(data.solo("valid", 2000, batch_size=4, seed=0)))
  np.testing.assert_allclose(valid["bass"].numpy(), _level(2, 2), atol=1e-4)


def test_stereo_resampled_mixtures_and_tracks(musdb_root):
  data = MusdbData(musdb_root, sample_rate=16000, mono=False)
  assert data.channels == 2
  assert [t.length for t in data.track_list("test")] == [24000]
  batch = next(iter(data.mixtures("test", 4000, batch_size=3, seed=1)))
  s, m = batch["sources"].numpy(), batch["mix"].numpy()
  assert s.shape == (3, 4, 4000, 2) and m.shape == (3, 4000, 2)
  np.testing.assert_allclose(m, s.sum(axis=1), atol=1e-6)  # mix_fn sums the source axis, -3 in stereo
  levels = np.array([_level(k, 3) for k in range(4)])
  interior = s[:, :, 200:-200]
  np.testing.assert_allclose(interior[..., 0], np.broadcast_to(levels[:, None] + 0.02, interior.shape[:3]),
                             atol=1e-3)
  np.testing.assert_allclose(interior[..., 1], np.broadcast_to(levels[:, None] - 0.02, interior.shape[:3]),
                             atol=1e-3)
  (name, mix, sources), = list(data.tracks("test"))
  assert name == "C - Three" and mix.shape == (24000, 2) and sources.shape == (4, 24000, 2)
  # The mixture FILE, resampled: the sum of the stems up to 16-bit rounding.
  np.testing.assert_allclose(mix, sources.sum(axis=0), atol=3 * 2.0**-15)
  solo = next(iter(data.solo("train", 1000, batch_size=2, seed=0)))
  assert solo["drums"].shape == (2, 1000, 2)


def test_remix_gain_and_min_rms(musdb_root):
  data = MusdbData(musdb_root, sample_rate=SR, gain_db=6.0, min_rms=0.01)
  plain = next(iter(data.mixtures("train", 1000, batch_size=8, seed=2, augment=False)))["sources"].numpy()
  for example in plain:
    assert len({_track_of(example[k], k) for k in range(1, 4)}) == 1
  remixed = next(iter(data.mixtures("train", 1000, batch_size=16, seed=2, augment=False, remix=True)))
  combos = {tuple(_track_of(e[k], k) for k in range(1, 4)) for e in remixed["sources"].numpy()}
  assert any(len(set(c)) > 1 for c in combos)
  gained = next(iter(data.mixtures("test", 1000, batch_size=8, seed=3, augment=True)))
  s = gained["sources"].numpy()
  ratios_db = 20 * np.log10(s[:, :, 0] / np.array([_level(k, 3) for k in range(4)]))
  assert np.all(np.abs(ratios_db) <= 6.001) and np.std(ratios_db) > 1.0  # a gain per source
  np.testing.assert_allclose(s, np.broadcast_to(s[:, :, :1], s.shape), rtol=1e-5)  # one gain per excerpt
  np.testing.assert_allclose(gained["mix"].numpy(), s.sum(axis=1), atol=1e-6)
  clean = next(iter(data.mixtures("test", 1000, batch_size=2, seed=3)))["sources"].numpy()
  np.testing.assert_allclose(clean[:, :, 0], np.broadcast_to([_level(k, 3) for k in range(4)], (2, 4)),
                             atol=1e-4)  # augment defaults off outside 'train'
  # Vocals are silent in 'B - Two': with min_rms every vocals crop comes from 'A - One'.
  vocals = next(iter(data.solo("train", 1000, batch_size=16, seed=4, augment=False)))["vocals"].numpy()
  np.testing.assert_allclose(vocals, _level(0, 0), atol=1e-4)
  loose = MusdbData(musdb_root, sample_rate=SR)
  vocals = next(iter(loose.solo("train", 1000, batch_size=16, seed=4)))["vocals"].numpy()
  assert np.any(np.all(vocals == 0, axis=1))


def test_musdb_chunk_reads_match_direct_reads(musdb_root):
  direct = MusdbData(musdb_root, sample_rate=16000, streaming=True)
  chunks = MusdbData(musdb_root, sample_rate=16000, streaming=True, direct_wav_reads=False)
  assert direct.direct and not chunks.direct
  for index, source, start in [(0, 1, 0), (1, 3, 5000), (0, 2, 23000)]:
    a = direct.read_source("train", index, source, start, 3000)
    b = chunks.read_source("train", index, source, start, 3000)
    assert a.shape == (3000,)
    np.testing.assert_allclose(a, b, atol=1e-6)
  a = next(iter(direct.solo("valid", 1500, batch_size=1, seed=5)))
  b = next(iter(chunks.solo("valid", 1500, batch_size=1, seed=5)))
  for name in SOURCES:
    np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), atol=1e-6)
  memory = MusdbData(musdb_root, sample_rate=16000, streaming=False)
  c = next(iter(memory.solo("valid", 1500, batch_size=1, seed=5)))
  for name in SOURCES:
    np.testing.assert_allclose(a[name].numpy(), c[name].numpy(), atol=1e-5)


def test_errors(musdb_root, tmp_path):
  with pytest.raises(FileNotFoundError, match="offline"):
    MusdbData(tmp_path / "nowhere")
  only_train = tmp_path / "only"
  (only_train / "train").mkdir(parents=True)
  os.symlink(musdb_root / "train" / "A - One", only_train / "train" / "A - One")
  with pytest.raises(ValueError, match="mus.yaml"):
    MusdbData(only_train).track_list("valid")
  broken = tmp_path / "broken" / "train" / "Z - Gone"
  broken.mkdir(parents=True)
  for s in ("mixture", "vocals", "drums", "other"):
    os.symlink(musdb_root / "train" / "A - One" / f"{s}.wav", broken / f"{s}.wav")
  with pytest.raises(ValueError, match=r"Z - Gone lacks \['bass'\]"):
    MusdbData(tmp_path / "broken").track_list("train")


def test_musdb_is_imported_lazily():
  """No module of vsep_tf.data imports musdb (or stempeg / museval) at module level."""
  heavy = {"musdb", "stempeg", "museval"}
  for path in sorted((REPO / "vsep_tf" / "data").glob("*.py")):
    for node in ast.parse(path.read_text()).body:
      if isinstance(node, ast.Import):
        names = {a.name.split(".")[0] for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        names = {(node.module or "").split(".")[0]}
      else:
        continue
      assert not names & heavy, f"{path.name} imports {names & heavy} at module level"
