"""The shipped flagfiles parse, and the train entry point runs them end to end (toy, a stem folder, MUSDB layout)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsep_tf import audio
from vsep_tf import model_dir as model_dir_lib
from vsep_tf import priors as priors_lib
from vsep_tf import run_flags

REPO = Path(__file__).resolve().parents[1]
# Every run config: configs/*.flags (the recipes that work), configs/baselines/ and configs/research/; not the
# fragments they include (configs/data/, configs/priors/) nor the search configs configs/**/tune_*.flags
# (python -m vsep_tf.tune; parsed in tests/test_tune.py: train flags plus the search flags, which the train
# parser rejects).
RUN_CONFIGS = sorted(str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").glob("**/*.flags")
                     if p.parent.name not in ("data", "priors") and not p.name.startswith("tune_"))
# --job=priors (WaveNet) recipes, shrunk.
TINY = ["--wavenet.num_blocks=1", "--wavenet.num_layers=3", "--wavenet.residual_channels=4",
        "--wavenet.skip_channels=4", "--wavenet.cond_channels=4", "--wavenet.num_mixtures=2",
        "--crop_length=256", "--batch_size=2", "--train_steps=2", "--steps_per_loop=2", "--checkpoint_every=2",
        "--audio_summary_seconds=0"]
# --job=spectral_separator recipes (configs/{toy,chorales,musdb}.flags), shrunk: 2 steps per stage.
TINY_SPECTRAL = ["--spectral.n_fft=256", "--spectral.hop=64", "--spectral.hidden_units=16",
                 "--spectral_encoder.hidden_units=16", "--spectral_search.iterations=2", "--crop_length=4096",
                 "--batch_size=2", "--prior_batch_size=16", "--prior_steps=2", "--train_steps=2",
                 "--steps_per_loop=2", "--checkpoint_every=2", "--max_solo_seconds=5", "--audio_summary_seconds=0"]


def test_run_configs_are_found():
  assert {"toy.flags", "chorales.flags", "musdb.flags", "research/toy_wavenet.flags",
          "baselines/toy_nmf.flags"} <= set(RUN_CONFIGS), RUN_CONFIGS


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_config_parses(name, monkeypatch):
  monkeypatch.chdir(REPO)  # nested --flagfile paths are relative to the repo root, as in the README commands
  cfg = run_flags.parse_flags([f"--flagfile=configs/{name}"])
  assert cfg.model_dir and cfg.model_dir.startswith("runs/")
  assert cfg.dataset in ("toy", "stems", "musdb") and cfg.prior in priors_lib.PRIORS
  assert cfg.crop_length % 64 == 0


def _train(tmp_path, *args, extra=(), tiny=TINY):
  """Runs `python -m vsep_tf.train` on `args` (a --flagfile first), shrunk by `tiny`, then `extra`."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", "vsep_tf.train", *args, f"--model_dir={tmp_path / 'model'}", *tiny,
                         *extra],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  model_dir = tmp_path / "model"
  assert (model_dir / run_flags.CONFIG_FILENAME).exists()
  assert (model_dir / model_dir_lib.MANIFEST_FILENAME).exists()
  assert (model_dir / "checkpoints" / "checkpoint").exists()
  return proc, run_flags.load_run_config(str(model_dir))


def _write_stem_tree(root, subsets_tracks, sources, rate, seconds=1.0):
  rng = np.random.default_rng(0)
  for subset, track in subsets_tracks:
    d = root / subset / track
    d.mkdir(parents=True)
    stems = []
    for k, s in enumerate(sources):
      t = np.arange(int(seconds * rate)) / rate
      x = (0.3 * np.sin(2 * np.pi * (110 * (k + 1)) * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
      stems.append(x)
      audio.write_audio(str(d / f"{s}.wav"), x, rate)
    audio.write_audio(str(d / "mixture.wav"), np.sum(stems, axis=0), rate)


def test_train_toy_config_end_to_end(tmp_path):
  proc, fv = _train(tmp_path, "--flagfile=configs/research/toy_wavenet.flags", extra=["--audio_summary_seconds=0.01"])
  assert "final " in proc.stdout and fv.dataset == "toy" and fv.crop_length == 256
  # The listening checks in TensorBoard: training data at step 0, a sample of every prior at the checkpoint.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tags = {v.tag for f in (tmp_path / "model" / "train").glob("events.out.tfevents.*")
          for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value}
  assert {f"{kind}/{name}" for kind in ("data", "samples") for name in ("sine", "square", "sawtooth", "triangle")
          } <= tags, tags


def test_train_on_any_stem_folder(tmp_path):
  _write_stem_tree(tmp_path / "stems", [("train", "a"), ("train", "b"), ("test", "c")], ("flute", "organ"), 8000)
  _, fv = _train(tmp_path, "--flagfile=configs/chorales.flags", f"--data_root={tmp_path / 'stems'}",
                 "--min_rms=0", tiny=TINY_SPECTRAL)
  assert fv.data_root == str(tmp_path / "stems")
  assert (tmp_path / "model" / model_dir_lib.PRIORS_SUBDIR / model_dir_lib.MANIFEST_FILENAME).exists()


def test_supervised_on_a_stem_folder_without_valid_split_checkpoints(tmp_path):
  """Separator trainers validate on 'valid' mixes; a train/test-only stem folder has none: train on, no crash."""
  _write_stem_tree(tmp_path / "stems", [("train", "a"), ("train", "b"), ("test", "c")], ("flute", "organ"), 8000)
  proc, fv = _train(tmp_path, "--flagfile=configs/research/chorales_supervised.flags", f"--data_root={tmp_path / 'stems'}",
                    "--min_rms=0", "--encoder.num_blocks=1", "--encoder.num_layers=2",
                    "--encoder.residual_channels=4", "--encoder.skip_channels=4")
  assert fv.job == "supervised" and "no 'valid' split" in proc.stderr


def _wav_copy_of_band(root, tracks_per_split=(("train", 2), ("test", 1)), seconds=3.0):
  """A MUSDB18-HQ WAV copy of the first tracks of ../shared/data/band, cut to `seconds` (the musdb package reads
  only WAV or STEMS): stereo 44.1 kHz, mixture = the sum of the cut stems."""
  from conftest import BAND, require_chorales  # pylint: disable=import-outside-toplevel
  band = require_chorales(BAND)
  for split, count in tracks_per_split:
    for name in sorted(os.listdir(band / split))[:count]:
      out = root / split / name
      out.mkdir(parents=True)
      for stem in ("mixture", "vocals", "drums", "bass", "other"):
        x, rate = audio.read_audio(str(band / split / name / f"{stem}.flac"), mono=False)
        audio.write_audio(str(out / f"{stem}.wav"), x[:int(seconds * rate)], rate, subtype="FLOAT")
  return root


def test_train_musdb_config_on_a_wav_copy_of_band_through_musdb(tmp_path):
  """configs/musdb.flags end to end through the real musdb package (WAV copy of the band data), then the
  trained separator separates 44.1 kHz stereo into four stereo stems."""
  pytest.importorskip("musdb")
  root = _wav_copy_of_band(tmp_path / "musdb")
  proc, cfg = _train(tmp_path, "--flagfile=configs/musdb.flags", f"--musdb_root={root}", tiny=TINY_SPECTRAL)
  assert cfg.dataset == "musdb" and cfg.job == "spectral_separator"
  assert "separate a file with it" in proc.stdout
  manifest = model_dir_lib.read_manifest(str(tmp_path / "model"))
  assert manifest["sample_rate"] == 44100 and manifest["source_names"] == ["vocals", "drums", "bass", "other"]
  sep = model_dir_lib.load_separator(str(tmp_path / "model"))
  mix = np.random.default_rng(0).standard_normal([1, 2, 8192]).astype(np.float32) * 0.1
  est = sep.separate_channels(mix)
  assert est.shape == (1, 2, 4, 8192)
  np.testing.assert_allclose(est.sum(axis=2), mix, atol=1e-4)  # masks: each channel's stems add up to it


@pytest.mark.slow
def test_train_band_config_on_the_band_stems(tmp_path):
  """configs/band.flags (the stem loader on ../shared/data/band), a few steps per stage (~40 s: slow lane)."""
  from conftest import BAND, require_chorales  # pylint: disable=import-outside-toplevel
  require_chorales(BAND)
  _, cfg = _train(tmp_path, "--flagfile=configs/band.flags", tiny=TINY_SPECTRAL)
  assert cfg.dataset == "stems" and cfg.data_root.endswith("band")
  manifest = model_dir_lib.read_manifest(str(tmp_path / "model"))
  assert manifest["sample_rate"] == 44100 and manifest["mix"] == "sum"
  assert sorted(manifest["source_names"]) == ["bass", "drums", "other", "vocals"]


def test_train_rejects_missing_stem_root(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", "vsep_tf.train", "--flagfile=configs/chorales.flags",
                         f"--data_root={tmp_path / 'nope'}", f"--model_dir={tmp_path / 'm'}", *TINY_SPECTRAL],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "does not exist" in proc.stderr
  assert not (tmp_path / "m" / run_flags.CONFIG_FILENAME).exists()
